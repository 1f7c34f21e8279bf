"""Node effects against the definitions, recomputed here with plain torch hooks.

The oracles hook the modules named by the adapter's fields (o projection, MLP out
projection, experts module, embedding) with ``register_forward_(pre_)hook`` and compute
every patch and gradient themselves; nothing from compgraph.models.hooks or
compgraph.effects is used to compute an expected value.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import transformers as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_adapters import CONFIGS, D, F, H, V  # noqa: E402

from compgraph.errors import ConfigError  # noqa: E402
from compgraph.effects import patching  # noqa: E402
from compgraph.effects.patching import activation_patching, attribution_patching, derangement  # noqa: E402
from compgraph.models import weights  # noqa: E402
from compgraph.models.adapters import registry  # noqa: E402

FAMILIES = ["llama", "gpt2", "gpt_neox", "gemma3_text", "mixtral", "olmoe"]
N, T_ = 4, 7


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one torch thread, and several times faster when other jobs
    share the cores (two threads wait on each other at every op)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build(name: str, config=None):
    torch.manual_seed(0)
    config = config or CONFIGS[name]()
    config._attn_implementation = "eager"
    if hasattr(config, "_experts_implementation"):
        config._experts_implementation = "eager"  # the grouped-mm path has no float64 kernel
    adapter = registry.adapter_for(config.model_type)
    model = T.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.3)
    for mod in model.modules():  # experts read their own config reference
        if hasattr(mod, "gate_up_proj") and hasattr(mod, "config"):
            mod.config._experts_implementation = "eager"
    return model.double(), adapter


def metric(logits, answer, wrong):
    last = logits[:, -1]
    return last.gather(1, answer[:, None])[:, 0] - last.gather(1, wrong[:, None])[:, 0]


def task(pad: bool = False, seed: int = 3):
    """Random prompts; with ``pad`` the first two examples are left-padded (mask 0). (Llama
    in float64 turns fully masked pad rows into NaN in transformers' eager attention, so
    padding is tested in float32.)"""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, V, (N, T_), generator=g)
    corrupt = torch.randint(1, V, (N, T_), generator=g)
    answer, wrong = torch.randint(1, V, (N,), generator=g), torch.randint(1, V, (N,), generator=g)
    mask = torch.ones(N, T_, dtype=torch.long)
    if pad:
        mask[0, :2] = 0
        mask[1, :1] = 0
        corrupt[mask == 0] = clean[mask == 0] = 0
    position = (mask.cumsum(1) - 1).clamp(min=0)
    return dict(clean_ids=clean, corrupt_ids=corrupt, answer_ids=answer, wrong_ids=wrong,
                attention_mask=mask, position_ids=position)


def vec(values) -> torch.Tensor:
    return torch.tensor(list(values), dtype=torch.float64)


def vec_rows(rows) -> torch.Tensor:
    """The mean over examples of per-example effect lists."""
    return torch.tensor(rows, dtype=torch.float64).mean(0)


# --- plain-torch oracles ------------------------------------------------------------------------

def run(model, ids, t, hooks=()):
    """M per example of a run with plain hooks [(module, kind, fn)] attached."""
    handles = []
    for mod, kind, fn in hooks:
        handles.append(mod.register_forward_pre_hook(fn) if kind == "pre" else mod.register_forward_hook(fn))
    try:
        out = model(input_ids=ids, attention_mask=t["attention_mask"], position_ids=t["position_ids"])
    finally:
        for h in handles:
            h.remove()
    return metric(out.logits, t["answer_ids"], t["wrong_ids"])


def layer_mod(model, adapter, layer, path):
    return model.get_submodule(f"{adapter.layers}.{layer}.{path}")


def where(model, adapter, kind, layer):
    """(module, side) holding a component kind's activation, from the adapter's fields."""
    if kind in ("head", "attn"):
        return layer_mod(model, adapter, layer, adapter.o), "in" if kind == "head" else "out"
    if kind == "neuron":
        return layer_mod(model, adapter, layer, adapter.mlp_out), "in"
    return layer_mod(model, adapter, layer, "mlp" if adapter.is_moe else adapter.mlp_out), "out"


def cut(kind, index, value, d_head):
    """The component's activation from its module's tensor (flat per-head layout)."""
    if kind == "head":
        return value[..., index * d_head:(index + 1) * d_head]
    if kind == "neuron":
        return value[..., index:index + 1]
    return value


def paste(kind, index, value, new, d_head):
    value = value.clone()
    if kind == "head":
        value[..., index * d_head:(index + 1) * d_head] = new
    elif kind == "neuron":
        value[..., index:index + 1] = new
    else:
        value = new.expand_as(value).clone()
    return value


def record(model, adapter, kind, layer, ids, t):
    """The full tensor at a component's module in a run."""
    mod, side = where(model, adapter, kind, layer)
    got = {}
    if side == "in":
        hook = (mod, "pre", lambda m, a: got.__setitem__("v", a[0].detach().clone()))
    else:
        hook = (mod, "post", lambda m, a, o: got.__setitem__("v", o.detach().clone()))
    with torch.no_grad():
        run(model, ids, t, [hook])
    return got["v"]


def expert_output(experts, tokens, ids, w, e):
    """The expert's contribution through the experts module itself, other weights zeroed."""
    return experts(tokens, ids, w * (ids == e).to(w.dtype))


def oracle_effect(model, adapter, comp, ablation, direction, t, seed=0):
    kind, layer, index = comp
    d_head = weights.head_dims(model.config)[2]
    base = t["corrupt_ids"] if direction == "denoising" else t["clean_ids"]
    with torch.no_grad():
        m_base = run(model, base, t).mean()
    if kind == "expert":
        return _oracle_expert(model, adapter, comp, ablation, t, seed, m_base)
    mod, side = where(model, adapter, kind, layer)
    clean_full = record(model, adapter, kind, layer, t["clean_ids"], t)
    clean = cut(kind, index, clean_full, d_head)
    corrupt = lambda: cut(kind, index, record(model, adapter, kind, layer, t["corrupt_ids"], t), d_head)  # noqa: E731
    target = clean if direction == "denoising" else _oracle_target(ablation, clean, corrupt, t, seed)
    if side == "in":
        hook = (mod, "pre", lambda m_, a: (paste(kind, index, a[0], target, d_head), *a[1:]))
    else:
        hook = (mod, "post", lambda m_, a, o: paste(kind, index, o, target, d_head))
    with torch.no_grad():
        return float(run(model, base, t, [hook]).mean() - m_base)


def _oracle_target(ablation, clean, corrupt, t, seed):
    """What the oracle patches in: the corrupt run's value (``corrupt()``), zero, the mean
    over the clean run's prompt positions and examples, or another example's value."""
    if ablation == "corrupt":
        return corrupt()
    if ablation == "zero":
        return torch.zeros_like(clean)
    if ablation == "mean":
        m = t["attention_mask"].to(clean.dtype)[..., None]
        return ((clean * m).sum((0, 1)) / m.sum()).expand_as(clean)
    return clean[derangement(N, seed)]


def _oracle_expert(model, adapter, comp, ablation, t, seed, m_clean):
    _, layer, e = comp
    experts = layer_mod(model, adapter, layer, adapter.experts)
    block = layer_mod(model, adapter, layer, "mlp")

    def contribution(ids):
        got = {}
        hook = (experts, "pre", lambda m, a: got.__setitem__("a", tuple(x.detach() for x in a)))
        with torch.no_grad():
            run(model, ids, t, [hook])
            return expert_output(experts, *got["a"], e).view(N, T_, -1)

    clean = contribution(t["clean_ids"])
    target = _oracle_target(ablation, clean, lambda: contribution(t["corrupt_ids"]), t, seed)
    live = {}
    hooks = [(experts, "pre", lambda m, a: live.__setitem__("a", a)),
             (block, "post", lambda m, a, o: o - expert_output(experts, *live["a"], e).view_as(o) + target)]
    with torch.no_grad():
        return float(run(model, t["clean_ids"], t, hooks).mean() - m_clean)


def sample_components(model, adapter):
    comps = [("head", 0, 1), ("head", 1, H - 1), ("attn", 0, None), ("mlp", 1, None), ("mlp", 0, None)]
    if adapter.is_moe:
        comps += [("expert", 0, 0), ("expert", 1, 3)]
    else:
        comps += [("neuron", 0, 5), ("neuron", 1, F - 1)]
    return comps


# --- activation patching vs the definitions ------------------------------------------------------

PATCHINGS = [("corrupt", "noising"), ("corrupt", "denoising"), ("zero", "noising"), ("mean", "noising"),
             ("resample", "noising")]
# olmoe runs the corrupt/noising case only (its other ablations are the mixtral ones);
# gemma3_text has no denoising case (covered on four other families)
CASES = [(family, ablation, direction) for family in FAMILIES for ablation, direction in PATCHINGS
         if not (family == "olmoe" and (ablation, direction) != ("corrupt", "noising"))
         and not (family == "gemma3_text" and direction == "denoising")]


@pytest.mark.parametrize("family,ablation,direction", CASES)
def test_activation_patching_equals_definition(family, ablation, direction):
    model, adapter = build(family)
    t = task()
    comps = sample_components(model, adapter)
    if direction == "denoising":
        comps = [c for c in comps if c[0] != "expert"]
    got = activation_patching(model, adapter, **t, metric=metric, components=comps, ablation=ablation,
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
    model, adapter = build("gpt2", config)
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
    got = activation_patching(model, adapter, **t, metric=metric, components=[("head", 0, 1)])
    assert got["effect"][0] == pytest.approx(float(head), rel=1e-9)
    got = activation_patching(model, adapter, **t, metric=metric, components=[("neuron", 0, 3)], ablation="zero")
    assert got["effect"][0] == pytest.approx(float(neuron), rel=1e-9)
    got = activation_patching(model, adapter, **t, metric=metric, components=[("head", 0, 1)], direction="denoising")
    assert got["effect"][0] == pytest.approx(float(denoise_head), rel=1e-9)


@pytest.mark.parametrize("family", ["llama", "mixtral"])
def test_batched_activation_patching_equals_one_at_a_time(family):
    model, adapter = build(family)
    t = task()
    kinds = ("head", "attn", "mlp", "expert") if adapter.is_moe else ("head", "attn", "mlp")
    comps = patching.list_components(model, adapter, kinds)
    if not adapter.is_moe:
        comps += [("neuron", layer, i) for layer in (0, 1) for i in (0, 17, F - 1)]
    batched = activation_patching(model, adapter, **t, metric=metric, components=comps, batch_tokens=10_000)
    single = activation_patching(model, adapter, **t, metric=metric, components=comps, batch_tokens=N * T_)
    chunked = activation_patching(model, adapter, **t, metric=metric, components=comps, batch_tokens=T_)  # 1 example
    assert batched.height == single.height == len(comps)
    assert batched["effect"].to_list() == single["effect"].to_list()  # bit for bit (float64 on the CPU)
    a, c = vec(batched["effect"].to_list()), vec(chunked["effect"].to_list())
    torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-13)  # sums over example chunks: another order


# --- attribution and EAP-IG vs the definitions ---------------------------------------------------

def oracle_attribution(model, adapter, comps, t, steps=None):
    """Σ_positions (corrupt − clean)·∂M/∂activation, M the mean over examples; with ``steps``
    the gradient averaged over runs on embeddings (1-k/m)·corrupt + (k/m)·clean, k=1..m."""
    d_head = weights.head_dims(model.config)[2]
    embed_mod = model.get_submodule(adapter.embed)
    diffs = {c: None for c in comps}
    for c in comps:
        if c[0] == "expert":
            continue
        a = record(model, adapter, c[0], c[1], t["corrupt_ids"], t)
        b = record(model, adapter, c[0], c[1], t["clean_ids"], t)
        diffs[c] = cut(c[0], c[2], a - b, d_head)
    emb = {}
    for side in ("clean_ids", "corrupt_ids"):
        got = {}
        with torch.no_grad():
            run(model, t[side], t, [(embed_mod, "post", lambda m, a, o: got.__setitem__("e", o.detach()))])
        emb[side] = got["e"]
    alphas = [1.0] if steps is None else [k / steps for k in range(1, steps + 1)]
    grads = {c: 0 for c in comps}
    for alpha in alphas:
        live = {}
        hooks = [(embed_mod, "post", lambda m, a, o, al=alpha: (1 - al) * emb["corrupt_ids"] + al * emb["clean_ids"])]
        for c in comps:
            if c[0] == "expert":
                continue
            mod, side = where(model, adapter, c[0], c[1])

            def keep(x, key=(id(mod), side)):
                live[key] = x  # in the graph already (the parameters require grad)
                return x
            if side == "in":
                hooks.append((mod, "pre", lambda m, a, keep=keep: (keep(a[0]), *a[1:])))
            else:
                hooks.append((mod, "post", lambda m, a, o, keep=keep: keep(o)))
        with torch.enable_grad():
            value = run(model, t["clean_ids"], t, hooks).mean()
            keys = list(live)
            got = dict(zip(keys, torch.autograd.grad(value, [live[k] for k in keys])))
        for c in comps:
            if c[0] == "expert":
                continue
            mod, side = where(model, adapter, c[0], c[1])
            grads[c] = grads[c] + cut(c[0], c[2], got[(id(mod), side)], d_head) / len(alphas)
    return [float((diffs[c] * grads[c]).sum()) for c in comps]


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "gemma3_text", "mixtral"])
@pytest.mark.parametrize("method", ["attribution", "eap-ig"])
def test_attribution_equals_definition(family, method):
    model, adapter = build(family)
    t = task()
    comps = [c for c in sample_components(model, adapter) if c[0] != "expert"]
    got = attribution_patching(model, adapter, **t, metric=metric, components=comps, method=method, steps=3)
    want = oracle_attribution(model, adapter, comps, t, steps=3 if method == "eap-ig" else None)
    assert max(abs(w) for w in want) > 1e-6
    torch.testing.assert_close(vec(got["effect"].to_list()), vec(want),
                               rtol=1e-5, atol=1e-10)
    assert set(got["method"]) == {method} and set(got["ablation"]) == {"corrupt"}


def test_eap_ig_with_one_step_is_attribution_and_chunks_add_up():
    model, adapter = build("llama")
    t = task()
    kinds = ("head", "neuron", "mlp", "attn")
    a = attribution_patching(model, adapter, **t, metric=metric, kinds=kinds)
    b = attribution_patching(model, adapter, **t, metric=metric, kinds=kinds, method="eap-ig", steps=1)
    c = attribution_patching(model, adapter, **t, metric=metric, kinds=kinds, batch_tokens=4)  # 1 example a chunk
    assert a["effect"].to_list() == b["effect"].to_list()
    torch.testing.assert_close(vec(a["effect"].to_list()), vec(c["effect"].to_list()),
                               rtol=1e-10, atol=1e-13)


def test_expert_attribution_is_first_order_of_expert_patching():
    """Expert attribution = Σ (corrupt − clean contribution)·∂M/∂mlp_out, checked on a model
    whose metric is linear in the MoE block's output (last layer, identity final norm)."""
    model, adapter = build("mixtral")
    model.model.norm = torch.nn.Identity()
    t = task()
    comps = [("expert", 1, e) for e in range(4)]
    act = activation_patching(model, adapter, **t, metric=metric, components=comps)
    att = attribution_patching(model, adapter, **t, metric=metric, components=comps)
    want = [oracle_effect(model, adapter, c, "corrupt", "noising", t) for c in comps]
    torch.testing.assert_close(vec(att["effect"].to_list()), vec(want),
                               rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(vec(act["effect"].to_list()), vec(want),
                               rtol=1e-9, atol=1e-12)


# --- a metric linear in the component: attribution = noising exactly -----------------------------

def test_attribution_equals_noising_when_the_metric_is_linear_in_the_component():
    """Identity final norm: the logits are linear in the last MLP's output and neurons; with the
    last MLP's out projection zeroed, linear in the last layer's head outputs too."""
    model, adapter = build("llama")
    model.model.norm = torch.nn.Identity()
    t = task()
    comps = [("neuron", 1, i) for i in range(F)] + [("mlp", 1, None)]
    for ablation in ("corrupt", "zero", "mean"):
        act = activation_patching(model, adapter, **t, metric=metric, components=comps, ablation=ablation)
        att = attribution_patching(model, adapter, **t, metric=metric, components=comps, ablation=ablation)
        assert max(abs(x) for x in act["effect"]) > 1e-6
        torch.testing.assert_close(vec(att["effect"].to_list()), vec(act["effect"].to_list()),
                                   rtol=1e-9, atol=1e-12)
    with torch.no_grad():
        layer_mod(model, adapter, 1, adapter.mlp_out).weight.zero_()
    heads = [("head", 1, h) for h in range(H)] + [("attn", 1, None)]
    act = activation_patching(model, adapter, **t, metric=metric, components=heads)
    att = attribution_patching(model, adapter, **t, metric=metric, components=heads)
    assert max(abs(x) for x in act["effect"]) > 1e-6
    torch.testing.assert_close(vec(att["effect"].to_list()), vec(act["effect"].to_list()),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_left_padding_gives_each_example_its_unpadded_effect(family):
    """Float32. Noising and attribution on a left-padded batch = the mean over examples of
    each example's effect computed alone without padding; mean ablation averages prompt
    positions only (pad positions masked out)."""
    model, adapter = build(family)
    model = model.float()
    t = task(pad=True)
    comps = [("head", 0, 1), ("head", 1, 2), ("mlp", 0, None), ("attn", 1, None), ("neuron", 1, 3)]
    batch = activation_patching(model, adapter, **t, metric=metric, components=comps)
    batch_att = attribution_patching(model, adapter, **t, metric=metric, components=comps)
    alone, alone_att = [], []
    for i in range(N):
        keep = t["attention_mask"][i].bool()
        one = dict(clean_ids=t["clean_ids"][i, keep][None], corrupt_ids=t["corrupt_ids"][i, keep][None],
                   answer_ids=t["answer_ids"][i:i + 1], wrong_ids=t["wrong_ids"][i:i + 1])
        alone.append(activation_patching(model, adapter, **one, metric=metric, components=comps)["effect"].to_list())
        alone_att.append(attribution_patching(model, adapter, **one, metric=metric,
                                              components=comps)["effect"].to_list())
    torch.testing.assert_close(vec(batch["effect"].to_list()), vec_rows(alone),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(vec(batch_att["effect"].to_list()), vec_rows(alone_att),
                               rtol=1e-4, atol=1e-5)
    got = activation_patching(model, adapter, **t, metric=metric, components=comps, ablation="mean")
    want = [oracle_effect(model, adapter, c, "mean", "noising", t) for c in comps]
    torch.testing.assert_close(vec(got["effect"].to_list()), vec(want),
                               rtol=1e-4, atol=1e-5)


# --- inputs refused -----------------------------------------------------------------------------

def test_bad_requests_are_refused():
    model, adapter = build("llama")
    t = task()
    with pytest.raises(ConfigError, match="denoising"):
        activation_patching(model, adapter, **t, metric=metric, ablation="zero", direction="denoising")
    with pytest.raises(ConfigError, match="dictionary features"):
        activation_patching(model, adapter, **t, metric=metric, kinds=("feature",))
    with pytest.raises(ConfigError, match="no experts"):
        activation_patching(model, adapter, **t, metric=metric, kinds=("expert",))
    with pytest.raises(ConfigError, match="eap-ig"):
        attribution_patching(model, adapter, **t, metric=metric, method="eap-ig", ablation="mean")
    moe, moe_adapter = build("mixtral")
    with pytest.raises(ConfigError, match="no dense MLP neurons"):
        activation_patching(moe, moe_adapter, **t, metric=metric, kinds=("neuron",))
    perm = derangement(5, 0)
    assert sorted(perm.tolist()) == list(range(5)) and not (perm == torch.arange(5)).any()
    assert torch.equal(perm, derangement(5, 0))
