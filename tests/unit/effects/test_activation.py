"""Activation patching against the definitions, recomputed here with plain torch hooks.

The oracles (:mod:`tests.helpers.effects`) hook the modules named by the adapter's fields
(o projection, MLP out projection, experts module, embedding) with
``register_forward_(pre_)hook`` and compute every patch themselves; nothing from
compgraph.models.hooks or compgraph.effects is used to compute an expected value.
"""

from __future__ import annotations

import pytest
import torch
import transformers as T

from compgraph.effects.activation import activation_patching, prepare
from compgraph.effects.attribution import attribution_patching
from compgraph.effects.components import list_components
from compgraph.effects.runs import derangement
from compgraph.errors import ConfigError
from tests.helpers.effects import (  # noqa: F401 (one_thread: autouse)
    N, T_, batch, effects_model, metric, one_thread, oracle_effect, run, sample_components, task, vec, vec_rows,
)
from tests.helpers.models import D, F, H, V

FAMILIES = ["llama", "gpt2", "gpt_neox", "gemma3_text", "mixtral", "olmoe"]


PATCHINGS = [("corrupt", "noising"), ("corrupt", "denoising"), ("zero", "noising"), ("mean", "noising"),
             ("resample", "noising")]
# olmoe runs the corrupt/noising case only (its other ablations are the mixtral ones);
# gemma3_text has no denoising case (covered on four other families)
CASES = [(family, ablation, direction) for family in FAMILIES for ablation, direction in PATCHINGS
         if not (family == "olmoe" and (ablation, direction) != ("corrupt", "noising"))
         and not (family == "gemma3_text" and direction == "denoising")]


@pytest.mark.parametrize("family,ablation,direction", CASES)
def test_activation_patching_equals_definition(family, ablation, direction):
    model, adapter = effects_model(family)
    t = task()
    comps = sample_components(model, adapter)
    if direction == "denoising":
        comps = [c for c in comps if c[0] != "expert"]
    got = activation_patching(model, adapter, batch(t), metric, components=comps, ablation=ablation,
                              direction=direction, seed=7)
    want = [oracle_effect(model, adapter, c, ablation, direction, t, seed=7) for c in comps]
    assert got["component"].to_list() == [c[0] for c in comps]
    assert max(abs(w) for w in want) > 1e-6  # the patches do something
    torch.testing.assert_close(vec(got["effect"].to_list()), vec(want),
                               rtol=1e-5, atol=1e-10)
    with torch.no_grad():
        m_clean = run(model, t["clean_ids"], t).mean()
        m_corrupt = run(model, t["corrupt_ids"], t).mean()
    torch.testing.assert_close(vec(got["effect_norm"].to_list()),
                               vec(want) / float(m_corrupt - m_clean),
                               rtol=1e-5, atol=1e-10)
    assert set(got["method"]) == {"activation"} and set(got["ablation"]) == {ablation}
    assert set(got["direction"]) == {direction}


def test_hand_computed_patching_on_a_one_layer_gpt2():
    """The whole forward written out here: embeddings, LayerNorm, causal attention, GELU MLP,
    tied unembedding; head 1's z and neuron 3 patched by hand."""
    config = T.GPT2Config(vocab_size=V, n_embd=D, n_layer=1, n_head=H, n_inner=F, bos_token_id=0, eos_token_id=0)
    model, adapter = effects_model("gpt2", config)
    t = task()
    t["attention_mask"] = t["position_ids"] = None
    p = dict(model.named_parameters())
    dh = D // H

    def ln(x, name):
        mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5) * p[name + ".weight"] + p[name + ".bias"]

    def forward(ids, z_patch=None, hidden_patch=None):
        pos = torch.arange(T_)
        h0 = p["transformer.wte.weight"][ids] + p["transformer.wpe.weight"][pos]
        qkv = ln(h0, "transformer.h.0.ln_1") @ p["transformer.h.0.attn.c_attn.weight"] + \
            p["transformer.h.0.attn.c_attn.bias"]
        q, k, v = (x.view(N, T_, H, dh).transpose(1, 2) for x in qkv.split(D, -1))
        scores = q @ k.transpose(-1, -2) / dh ** 0.5
        scores = scores.masked_fill(~torch.ones(T_, T_, dtype=torch.bool).tril(), float("-inf"))
        z = (scores.softmax(-1) @ v).transpose(1, 2)  # [N, T, H, dh]
        if z_patch is not None:
            z = z.clone()
            z[:, :, 1] = z_patch
        h1 = h0 + z.reshape(N, T_, D) @ p["transformer.h.0.attn.c_proj.weight"] + p["transformer.h.0.attn.c_proj.bias"]
        pre = ln(h1, "transformer.h.0.ln_2") @ p["transformer.h.0.mlp.c_fc.weight"] + p["transformer.h.0.mlp.c_fc.bias"]
        hidden = 0.5 * pre * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (pre + 0.044715 * pre ** 3)))
        if hidden_patch is not None:
            hidden = hidden.clone()
            hidden[..., 3] = hidden_patch
        h2 = h1 + hidden @ p["transformer.h.0.mlp.c_proj.weight"] + p["transformer.h.0.mlp.c_proj.bias"]
        logits = ln(h2, "transformer.ln_f") @ p["transformer.wte.weight"].T
        return metric(logits, t["answer_ids"], t["wrong_ids"]), z, hidden

    with torch.no_grad():
        m_clean, _, _ = forward(t["clean_ids"])
        _, z_corrupt, h_corrupt = forward(t["corrupt_ids"])
        head = forward(t["clean_ids"], z_patch=z_corrupt[:, :, 1])[0].mean() - m_clean.mean()
        neuron = forward(t["clean_ids"], hidden_patch=0.0)[0].mean() - m_clean.mean()
        denoise_head = forward(t["corrupt_ids"], z_patch=forward(t["clean_ids"])[1][:, :, 1])[0].mean() - \
            forward(t["corrupt_ids"])[0].mean()
    with torch.no_grad():
        assert float(m_clean.mean()) == pytest.approx(float(run(model, t["clean_ids"], t).mean()), rel=1e-9)
    got = activation_patching(model, adapter, batch(t), metric, components=[("head", 0, 1)])
    assert got["effect"][0] == pytest.approx(float(head), rel=1e-9)
    got = activation_patching(model, adapter, batch(t), metric, components=[("neuron", 0, 3)], ablation="zero")
    assert got["effect"][0] == pytest.approx(float(neuron), rel=1e-9)
    got = activation_patching(model, adapter, batch(t), metric, components=[("head", 0, 1)], direction="denoising")
    assert got["effect"][0] == pytest.approx(float(denoise_head), rel=1e-9)


@pytest.mark.parametrize("family", ["llama", "mixtral"])
def test_batched_activation_patching_equals_one_at_a_time(family):
    model, adapter = effects_model(family)
    t = task()
    kinds = ("head", "attn", "mlp", "expert") if adapter.is_moe else ("head", "attn", "mlp")
    comps = list_components(model, adapter, kinds)
    if not adapter.is_moe:
        comps += [("neuron", layer, i) for layer in (0, 1) for i in (0, 17, F - 1)]
    batched = activation_patching(model, adapter, batch(t), metric, components=comps, batch_tokens=10_000)
    single = activation_patching(model, adapter, batch(t), metric, components=comps, batch_tokens=N * T_)
    chunked = activation_patching(model, adapter, batch(t), metric, components=comps, batch_tokens=T_)  # 1 example
    assert batched.height == single.height == len(comps)
    assert batched["effect"].to_list() == single["effect"].to_list()  # bit for bit (float64 on the CPU)
    a, c = vec(batched["effect"].to_list()), vec(chunked["effect"].to_list())
    torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-13)  # sums over example chunks: another order


@pytest.mark.parametrize("family", FAMILIES)
def test_passes_that_start_at_a_later_layer_equal_the_definition(family):
    """One component per pass (batch_tokens = n·T): the passes of layer-1 components skip
    layer 0 and start from the base run's saved layer-1 input; components given out of layer
    order each get their own effect; layer 0 runs only in the base and target runs."""
    model, adapter = effects_model(family)
    t = task()
    comps = sample_components(model, adapter)[::-1]
    calls = []
    first_block = model.get_submodule(f"{adapter.layers}.0")
    first_inner = next(m for name, m in first_block.named_children())  # a submodule: runs only if layer 0 computes
    handle = first_inner.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        got = activation_patching(model, adapter, batch(t), metric, components=comps, batch_tokens=N * T_, seed=7)
        runs = len(calls)
        with torch.no_grad():
            run(model, t["clean_ids"], t)
        per_run = len(calls) - runs
    finally:
        handle.remove()
    want = [oracle_effect(model, adapter, c, "corrupt", "noising", t, seed=7) for c in comps]
    torch.testing.assert_close(vec(got["effect"].to_list()), vec(want), rtol=1e-5, atol=1e-10)
    assert per_run >= 1
    assert runs == per_run * (2 + sum(c[1] == 0 for c in comps))  # base and corrupt runs + the layer-0 passes


@pytest.mark.parametrize("family,ablation,direction", [(f, a, d) for f in ("llama", "mixtral") for a, d in PATCHINGS])
def test_tiled_passes_from_a_saved_input_equal_the_definition(family, ablation, direction):
    """Layer-1 components only, all in one pass (the default budget): the pass skips layer 0
    and tiles the base run's saved layer-1 input (the corrupt run's when denoising)."""
    model, adapter = effects_model(family)
    t = task()
    comps = [c for c in sample_components(model, adapter) if c[1] == 1
             and not (direction == "denoising" and c[0] == "expert")]
    assert len(comps) >= 2
    got = activation_patching(model, adapter, batch(t), metric, components=comps, ablation=ablation,
                              direction=direction, seed=7)
    want = [oracle_effect(model, adapter, c, ablation, direction, t, seed=7) for c in comps]
    torch.testing.assert_close(vec(got["effect"].to_list()), vec(want), rtol=1e-5, atol=1e-10)


def _count_calls(module, calls: list):
    return module.register_forward_pre_hook(lambda m, a: calls.append(1))


def test_prepared_runs_give_the_same_effects_and_must_match():
    """Rounds that share one :func:`prepare` (as the verified method's do) give the oracle's
    effects without running layer 0 again (corrupt ablation: its runs give both
    baselines); runs made for another task, other settings or other sites are refused."""
    model, adapter = effects_model("llama")
    t = task()
    b = batch(t)
    comps = sample_components(model, adapter)
    prepared = prepare(model, adapter, b, comps, metric)
    assert prepared.layers == (1,)
    upper = [c for c in comps if c[1] == 1]
    calls: list = []
    handle = _count_calls(model.get_submodule(f"{adapter.layers}.0.mlp"), calls)
    try:
        rounds = [activation_patching(model, adapter, b, metric, components=part, prepared=prepared)
                  for part in (upper[:1], upper[1:])]
    finally:
        handle.remove()
    assert calls == []  # base, target and baseline runs all came from prepare
    got = [e for frame in rounds for e in frame["effect"].to_list()]
    want = [oracle_effect(model, adapter, c, "corrupt", "noising", t) for c in upper]
    torch.testing.assert_close(vec(got), vec(want), rtol=1e-5, atol=1e-10)
    with pytest.raises(ConfigError, match="prepared runs were made for another task"):
        activation_patching(model, adapter, b, metric, components=comps, ablation="zero", prepared=prepared)
    with pytest.raises(ConfigError, match="prepared runs were made for another task"):
        activation_patching(model, adapter, batch(t), metric, components=comps,
                            prepared=prepared)  # an equal task, not the one prepared
    heads_only = prepare(model, adapter, b, [("head", 0, 1)], metric)
    with pytest.raises(ConfigError, match="prepared runs were made for another task"):
        activation_patching(model, adapter, b, metric, components=[("mlp", 1, None)], prepared=heads_only)


def test_unkept_runs_are_made_chunk_by_chunk():
    """patched_metrics' own runs (keep=False) are made per chunk when used: every chunk's
    effects equal the kept runs' exactly."""
    model, adapter = effects_model("llama")
    b = batch(task())
    comps = sample_components(model, adapter)
    lazy = prepare(model, adapter, b, comps, metric, batch_tokens=T_, keep=False)
    kept = prepare(model, adapter, b, comps, metric, batch_tokens=T_)
    assert lazy.runs is None and len(kept.runs) == len(kept.chunks) == N
    for (chunk_a, a), (chunk_b, k) in zip(lazy.each(), kept.each()):
        assert torch.equal(chunk_a, chunk_b)
        assert a.base_values.keys() == k.base_values.keys() == {("resid_pre", 1)}
        assert all(torch.equal(a.target[site], k.target[site]) for site in k.target)
    one = activation_patching(model, adapter, b, metric, components=comps, batch_tokens=T_, prepared=kept)
    two = activation_patching(model, adapter, b, metric, components=comps, batch_tokens=T_)
    assert one["effect"].to_list() == two["effect"].to_list()


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_left_padding_gives_each_example_its_unpadded_effect(family):
    """Float32. Noising and attribution on a left-padded batch = the mean over examples of
    each example's effect computed alone without padding; mean ablation averages prompt
    positions only (pad positions masked out)."""
    model, adapter = effects_model(family)
    model = model.float()
    t = task(pad=True)
    comps = [("head", 0, 1), ("head", 1, 2), ("mlp", 0, None), ("attn", 1, None), ("neuron", 1, 3)]
    padded = activation_patching(model, adapter, batch(t), metric, components=comps)
    padded_att = attribution_patching(model, adapter, batch(t), metric, components=comps)
    alone, alone_att = [], []
    for i in range(N):
        keep = t["attention_mask"][i].bool()
        one = dict(clean_ids=t["clean_ids"][i, keep][None], corrupt_ids=t["corrupt_ids"][i, keep][None],
                   answer_ids=t["answer_ids"][i:i + 1], wrong_ids=t["wrong_ids"][i:i + 1])
        alone.append(activation_patching(model, adapter, batch(one), metric, components=comps)["effect"].to_list())
        alone_att.append(attribution_patching(model, adapter, batch(one), metric,
                                              components=comps)["effect"].to_list())
    torch.testing.assert_close(vec(padded["effect"].to_list()), vec_rows(alone),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(vec(padded_att["effect"].to_list()), vec_rows(alone_att),
                               rtol=1e-4, atol=1e-5)
    got = activation_patching(model, adapter, batch(t), metric, components=comps, ablation="mean")
    want = [oracle_effect(model, adapter, c, "mean", "noising", t) for c in comps]
    torch.testing.assert_close(vec(got["effect"].to_list()), vec(want),
                               rtol=1e-4, atol=1e-5)


# --- inputs refused -----------------------------------------------------------------------------

def test_bad_requests_are_refused():
    model, adapter = effects_model("llama")
    t = task()
    with pytest.raises(ConfigError, match="denoising"):
        activation_patching(model, adapter, batch(t), metric, ablation="zero", direction="denoising")
    with pytest.raises(ConfigError, match="dictionary features"):
        activation_patching(model, adapter, batch(t), metric, kinds=("feature",))
    with pytest.raises(ConfigError, match="no experts"):
        activation_patching(model, adapter, batch(t), metric, kinds=("expert",))
    with pytest.raises(ConfigError, match="eap-ig"):
        attribution_patching(model, adapter, batch(t), metric, method="eap-ig", ablation="mean")
    moe, moe_adapter = effects_model("mixtral")
    with pytest.raises(ConfigError, match="no dense MLP neurons"):
        activation_patching(moe, moe_adapter, batch(t), metric, kinds=("neuron",))
    perm = derangement(5, 0)
    assert sorted(perm.tolist()) == list(range(5)) and not (perm == torch.arange(5)).any()
    assert torch.equal(perm, derangement(5, 0))


@pytest.mark.gpu
@pytest.mark.parametrize("family", ["llama", "mixtral"])
def test_activation_and_attribution_on_cuda_equal_cpu(family):
    """The same patching run on a CUDA copy of the model: equal effects (float64)."""
    model, adapter = effects_model(family)
    t = task()
    comps = sample_components(model, adapter)
    cpu = activation_patching(model, adapter, batch(t), metric, components=comps, ablation="mean", seed=7)
    cpu_attr = attribution_patching(model, adapter, batch(t), metric, components=comps)
    model = model.cuda()
    gpu = activation_patching(model, adapter, batch(t), metric, components=comps, ablation="mean", seed=7)
    gpu_attr = attribution_patching(model, adapter, batch(t), metric, components=comps)
    torch.testing.assert_close(vec(gpu["effect"].to_list()), vec(cpu["effect"].to_list()), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(vec(gpu_attr["effect"].to_list()), vec(cpu_attr["effect"].to_list()),
                               rtol=1e-6, atol=1e-9)
