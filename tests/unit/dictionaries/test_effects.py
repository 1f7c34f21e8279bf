"""Feature effects against the definitions, recomputed with plain torch hooks on the block /
MLP modules (nothing from compgraph's hooks or patching computes an expected value)."""

from __future__ import annotations

import pytest
import torch

from compgraph.dictionaries.base import Dictionary
from compgraph.dictionaries.effects import feature_attribution, feature_patching
from tests.helpers.effects import batch, effects_model, metric, one_thread, task  # noqa: F401 (one_thread: autouse)

WIDTH, K = 16, 4


def coder(kind: str, d: int, seed: int = 0) -> Dictionary:
    g = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    site, out = ("resid_post", "resid_post") if kind == "sae" else ("mlp_in", "mlp_out")
    return Dictionary(kind=kind, site=site, layer=0, activation="topk", k=K, W_enc=rand(d, WIDTH),
                      b_enc=rand(WIDTH).abs() * 0.1, W_dec=rand(WIDTH, d) * 0.3, b_dec=rand(d) * 0.1,
                      subtract_b_dec=kind == "sae", output_site=out, output_layer=0)


def by_hand(dic: Dictionary, x: torch.Tensor) -> torch.Tensor:
    pre = (x - dic.b_dec if dic.subtract_b_dec else x) @ dic.W_enc + dic.b_enc
    top = torch.relu(pre).topk(dic.k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, top.indices, top.values)


@pytest.fixture(scope="module")
def llama():
    return effects_model("llama")


def modules(model, kind: str):
    """(module whose output the dictionary writes, module whose input (or output) it reads, read side)."""
    block = model.model.layers[0]
    return (block, block, "out") if kind == "sae" else (block.mlp, block.mlp, "in")


def plain_run(model, ids, t, kind: str, shift=None, grad: bool = False):
    """Per-example metric; the written value (+ ``shift``) and the read value; with ``grad`` the
    written value keeps its gradient."""
    writer, reader, side = modules(model, kind)
    seen = {}

    def read_in(mod, args):
        seen["x"] = args[0].detach()

    def write(mod, args, out):
        if side == "out":
            seen["x"] = out.detach()
        if shift is not None:
            out = out + shift
        if grad:
            out.retain_grad()
        seen["v"] = out
        return out

    handles = [writer.register_forward_hook(write)]
    if side == "in":
        handles.append(reader.register_forward_pre_hook(read_in))
    try:
        with torch.set_grad_enabled(grad):
            logits = model(input_ids=ids, attention_mask=t["attention_mask"], position_ids=t["position_ids"]).logits
    finally:
        for h in handles:
            h.remove()
    return metric(logits, t["answer_ids"], t["wrong_ids"]), seen


@pytest.mark.parametrize("kind", ["sae", "transcoder"])
@pytest.mark.parametrize("ablation", ["corrupt", "zero"])
def test_attribution_is_delta_f_times_decoder_row_dot_gradient(llama, kind, ablation):
    model, adapter = llama
    t = task()
    dic = coder(kind, model.config.hidden_size)
    m, seen = plain_run(model, t["clean_ids"], t, kind, grad=True)
    m.sum().backward()
    grad = seen["v"].grad
    model.zero_grad(set_to_none=True)
    f = by_hand(dic, seen["x"])
    target = by_hand(dic, plain_run(model, t["corrupt_ids"], t, kind)[1]["x"]) if ablation == "corrupt" \
        else torch.zeros_like(f)
    want = ((target - f) * (grad @ dic.W_dec.T)).sum((0, 1)) / t["clean_ids"].shape[0]
    got = feature_attribution(model, adapter, dic, batch(t), metric, ablation=ablation)
    assert got["component"].to_list() == ["feature"] * WIDTH and got["index"].to_list() == list(range(WIDTH))
    torch.testing.assert_close(torch.tensor(got["effect"].to_list(), dtype=torch.float64), want, rtol=1e-9, atol=1e-10)
    clean = m.mean()
    corrupt = plain_run(model, t["corrupt_ids"], t, kind)[0].mean()
    torch.testing.assert_close(torch.tensor(got["effect_norm"].to_list(), dtype=torch.float64),
                               want / (corrupt - clean).detach(), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("kind", ["sae", "transcoder"])
def test_activation_patching_swaps_one_feature_and_keeps_the_error(llama, kind):
    model, adapter = llama
    t = task()
    dic = coder(kind, model.config.hidden_size, seed=1)
    clean, seen = plain_run(model, t["clean_ids"], t, kind)
    f = by_hand(dic, seen["x"])
    f_corrupt = by_hand(dic, plain_run(model, t["corrupt_ids"], t, kind)[1]["x"])
    features = [0, 5, 11]
    want = []
    for j in features:
        shift = (f_corrupt - f)[..., j, None] * dic.W_dec[j]
        want.append(float(plain_run(model, t["clean_ids"], t, kind, shift=shift)[0].mean() - clean.mean()))
    got = feature_patching(model, adapter, dic, features, batch(t), metric)
    assert got["index"].to_list() == features
    assert got["effect"].to_list() == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_an_unchanged_feature_leaves_the_run_exactly_as_it_was(llama):
    model, adapter = llama
    t = task()
    t["corrupt_ids"] = t["clean_ids"]
    got = feature_patching(model, adapter, coder("sae", model.config.hidden_size), list(range(WIDTH)), batch(t),
                           metric)
    assert got["effect"].to_list() == [0.0] * WIDTH
