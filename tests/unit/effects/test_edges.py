"""Edge attribution against brute force, written here with plain torch hooks.

Brute force for one edge src -> dst: run the clean prompts with ε·(src's corrupt output −
its clean output) added to the input of that one destination only (one head's q, one KV
head's k or v, one MLP, the logits), and take the central difference in ε. That is the
derivative the edge score is defined by, so the two agree to the finite-difference error
(float64, ε = 1e-3). Where the metric is linear in a destination's input (identity final
norm, logits destination), ε = 1 and the agreement is exact.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from compgraph.effects import edges
from compgraph.effects.edges import edge_attribution, edge_graph, edge_patched_metric
from compgraph.errors import ConfigError
from compgraph.models import params
from tests.helpers.effects import batch, effects_model, metric, one_thread, run, task  # noqa: F401 (one_thread: autouse)


def mod(model, adapter, layer, path):
    return model.get_submodule(f"{adapter.layers}.{layer}.{path}")


def source_output(model, adapter, src, ids, t):
    """What a source adds to the residual stream, from raw parameters: the embedding
    module's output, a head's z slice times its columns of the o projection, the MLP's output."""
    kind, layer, index = src
    got = {}
    if kind == "embed":
        hook = (model.get_submodule(adapter.embed), "post", lambda m, a, o: got.__setitem__("v", o.detach()))
    elif kind == "head":
        hook = (mod(model, adapter, layer, adapter.o), "pre", lambda m, a: got.__setitem__("v", a[0].detach()))
    else:
        path = "mlp" if adapter.is_moe else adapter.mlp_out
        hook = (mod(model, adapter, layer, path), "post", lambda m, a, o: got.__setitem__("v", o.detach()))
    with torch.no_grad():
        run(model, ids, t, [hook])
    if kind != "head":
        return got["v"]
    d_head = params.head_dims(model.config)[2]
    o = mod(model, adapter, layer, adapter.o).weight  # Linear [d_model, H*d]; Conv1D [H*d, d_model]
    cols = slice(index * d_head, (index + 1) * d_head)
    w = o[cols, :] if adapter.conv1d else o[:, cols].T  # [d_head, d_model]
    return got["v"][..., cols] @ w.detach()


def qkv_columns(adapter, n_heads, n_kv, d_head, kind, unit):
    """Output columns of the projection module that hold one head's q (or KV head's k / v)."""
    if adapter.qkv_layout == "separate":
        return slice(unit * d_head, (unit + 1) * d_head)
    if adapter.qkv_layout == "gpt2":
        base = {"q": 0, "k": 1, "v": 2}[kind] * n_heads * d_head
        return slice(base + unit * d_head, base + (unit + 1) * d_head)
    base = unit * 3 * d_head + {"q": 0, "k": 1, "v": 2}[kind] * d_head  # neox: per head [q | k | v]
    return slice(base, base + d_head)


def perturbed_metric(model, adapter, dst, kind, shift, t):
    """Mean metric of the clean run with ``shift`` added to the residual read by one destination only."""
    layer, unit = dst[1], dst[2]
    if kind in ("mlp", "logits"):
        norm = model.get_submodule(adapter.final_norm) if kind == "logits" else \
            mod(model, adapter, layer, adapter.mlp_norm)
        hooks = [(norm, "pre", lambda m, a: (a[0] + shift, *a[1:]))]
    else:
        n_heads, n_kv, d_head = params.head_dims(model.config)
        norm = mod(model, adapter, layer, adapter.attn_norm)
        proj_path = {"q": adapter.q, "k": adapter.k or adapter.q, "v": adapter.v or adapter.q}[kind]
        proj = mod(model, adapter, layer, proj_path)
        cols = qkv_columns(adapter, n_heads, n_kv, d_head, kind, unit)
        seen = {}

        def read(m, a):
            seen["x"] = a[0]

        def write(m, a, out):
            x = seen["x"]
            w = proj.weight if adapter.conv1d else proj.weight.T  # [d_model, out]
            moved = (norm.forward(x + shift) - norm.forward(x)) @ w[:, cols]
            out = out.clone()
            out[..., cols] = out[..., cols] + moved
            return out
        hooks = [(norm, "pre", read), (proj, "post", write)]
    with torch.no_grad():
        return float(run(model, t["clean_ids"], t, hooks).mean())


def float64_throughout(model, monkeypatch):
    """transformers computes attention softmax (Llama, NeoX, Mixtral) and RMSNorm in float32
    even in a float64 model, which drowns an ε = 1e-3 finite difference in rounding: keep
    them in float64 (same formulas) for the brute-force test."""
    softmax = torch.nn.functional.softmax

    def softmax64(x, dim=None, _stacklevel=3, dtype=None):
        return softmax(x, dim=dim, dtype=None if x.dtype == torch.float64 else dtype)
    monkeypatch.setattr(torch.nn.functional, "softmax", softmax64)
    for m in model.modules():
        if type(m).__name__.endswith("RMSNorm"):
            def forward(x, m=m):
                return m.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + m.variance_epsilon))
            m.forward = forward


def lookup(frame, src, dst, kind):
    rows = frame.filter((frame["input"] == kind))
    for s, d, e in zip(rows["src"].to_list(), rows["dst"].to_list(), rows["effect"].to_list()):
        if (s["kind"], s["layer"], s["index"]) == src and (d["kind"], d["layer"], d["index"]) == dst:
            return e
    raise KeyError((src, dst, kind))


EDGES = [
    (("embed", None, None), ("head", 1, 2), "q"),
    (("head", 0, 1), ("kv_head", 1, 1), "k"),
    (("head", 0, 3), ("kv_head", 1, 0), "v"),
    (("mlp", 0, None), ("head", 1, 0), "q"),
    (("embed", None, None), ("mlp", 0, None), "mlp"),
    (("mlp", 0, None), ("mlp", 1, None), "mlp"),
    (("head", 1, 2), ("mlp", 1, None), "mlp"),
    (("head", 0, 0), ("logits", None, None), "logits"),
    (("mlp", 1, None), ("logits", None, None), "logits"),
]


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_edge_scores_equal_brute_force_derivative(family, monkeypatch):
    model, adapter = effects_model(family)
    float64_throughout(model, monkeypatch)
    if family == "gpt2":  # GPT-2's 0.02-std init gives edge scores ~1e-10: make the model less flat
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim == 2:
                    p.mul_(4)
    t = task()
    frame = edge_attribution(model, adapter, batch(t), metric)
    parallel = adapter.is_parallel(model.config)
    n_kv = params.head_dims(model.config)[1]
    eps = 1e-3
    checked = 0
    for src, dst, kind in EDGES:
        if dst[0] == "kv_head" and dst[2] >= n_kv:
            continue
        if parallel and src[0] == "head" and dst[0] == "mlp" and src[1] == dst[1]:
            with pytest.raises(KeyError):  # attention and MLP read the same stream: no such edge
                lookup(frame, src, dst, kind)
            continue
        delta = source_output(model, adapter, src, t["corrupt_ids"], t) - source_output(model, adapter, src,
                                                                                    t["clean_ids"], t)
        want = (perturbed_metric(model, adapter, dst, kind, eps * delta, t)
                - perturbed_metric(model, adapter, dst, kind, -eps * delta, t)) / (2 * eps)
        got = lookup(frame, src, dst, kind)
        assert abs(want) > 1e-11, (src, dst, kind)
        assert got == pytest.approx(want, rel=1e-5, abs=1e-13), (src, dst, kind)
        checked += 1
    assert checked >= 7


def test_edge_scores_are_exact_where_the_metric_is_linear():
    """Identity final norm: the metric is linear in the logits' input, so the score of every
    edge into the logits is the brute-force effect of adding the whole source difference."""
    model, adapter = effects_model("llama")
    model.model.norm = torch.nn.Identity()
    t = task()
    frame = edge_attribution(model, adapter, batch(t), metric)
    with torch.no_grad():
        clean = float(run(model, t["clean_ids"], t).mean())
    for src in [("embed", None, None), ("head", 0, 2), ("head", 1, 3), ("mlp", 0, None), ("mlp", 1, None)]:
        delta = source_output(model, adapter, src, t["corrupt_ids"], t) - source_output(model, adapter, src,
                                                                                    t["clean_ids"], t)
        want = perturbed_metric(model, adapter, ("logits", None, None), "logits", delta, t) - clean
        assert lookup(frame, src, ("logits", None, None), "logits") == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_eap_ig_edges():
    """steps=1 is plain edge attribution; with 3 steps, an edge into the logits scores
    (corrupt − clean source output) · the logits-input gradient averaged over runs on
    embeddings (1 − k/3)·corrupt + (k/3)·clean, k = 1..3 (computed here by hand)."""
    model, adapter = effects_model("llama")
    t = task()
    plain = edge_attribution(model, adapter, batch(t), metric)
    one = edge_attribution(model, adapter, batch(t), metric, method="eap-ig", steps=1)
    assert plain["effect"].to_list() == one["effect"].to_list()
    three = edge_attribution(model, adapter, batch(t), metric, method="eap-ig", steps=3)
    assert set(three["method"]) == {"eap-ig"}
    embed = model.get_submodule(adapter.embed)
    emb = {}
    for side in ("clean_ids", "corrupt_ids"):
        with torch.no_grad():
            run(model, t[side], t, [(embed, "post", lambda m, a, o, s=side: emb.__setitem__(s, o.detach()))])
    grad = 0
    for k in (1, 2, 3):
        leaf = {}

        def add_leaf(m, a):
            leaf["x"] = torch.zeros_like(a[0], requires_grad=True)
            return (a[0] + leaf["x"],)
        hooks = [(embed, "post", lambda m, a, o, al=k / 3: (1 - al) * emb["corrupt_ids"] + al * emb["clean_ids"]),
                 (model.get_submodule(adapter.final_norm), "pre", add_leaf)]
        with torch.enable_grad():
            value = run(model, t["clean_ids"], t, hooks).mean()
            grad = grad + torch.autograd.grad(value, leaf["x"])[0] / 3
    for src in [("head", 0, 1), ("mlp", 1, None)]:
        delta = source_output(model, adapter, src, t["corrupt_ids"], t) - source_output(model, adapter, src,
                                                                                    t["clean_ids"], t)
        want = float((delta * grad).sum())
        assert lookup(three, src, ("logits", None, None), "logits") == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_graph_shape_and_gqa_destinations():
    model, adapter = effects_model("llama")  # 2 layers, 4 heads, 2 KV heads
    graph = edge_graph(model, adapter)
    assert len(graph.sources) == 1 + 2 * (4 + 1)
    assert len(graph.dests) == 2 * (4 + 2 + 2 + 1) + 1
    # per layer l: (4 q + 2 k + 2 v) dsts read 1 + 5l sources; the MLP also reads its own layer's heads
    assert int(graph.valid.sum()) == sum(8 * (1 + 5 * l) + (1 + 5 * l + 4) for l in (0, 1)) + 11
    frame = edge_attribution(model, adapter, batch(task()), metric)
    assert frame.height == int(graph.valid.sum())
    assert set(frame["input"]) == {"q", "k", "v", "mlp", "logits"}
    kv = frame.filter(frame["input"].is_in(["k", "v"]))
    assert {d["kind"] for d in kv["dst"].to_list()} == {"kv_head"} and max(d["index"] for d in kv["dst"]) == 1


@pytest.mark.parametrize("family", ["llama", "gpt_neox", "mixtral"])
def test_edge_interventions(family):
    """All edges in: the clean run exactly; none: the corrupt run; one edge out: brute force
    (the destination alone receives the source's corrupt output). Mixtral here stands for
    MoE (its router computes in float32, too coarse for the finite-difference test)."""
    model, adapter = effects_model(family)
    t = task()
    tk = batch({k: t[k] for k in ("clean_ids", "corrupt_ids", "answer_ids", "wrong_ids")})
    graph = edge_graph(model, adapter)
    with torch.no_grad():
        clean = float(run(model, t["clean_ids"], t).mean())
        corrupt = float(run(model, t["corrupt_ids"], t).mean())
    assert edge_patched_metric(model, adapter, tk, graph.valid.clone(), metric) == clean
    none = torch.zeros_like(graph.valid)
    assert edge_patched_metric(model, adapter, tk, none, metric) == corrupt  # the corrupt run itself
    patched = edges.edge_patched_metrics(model, adapter, tk, [none], metric, empty_is_corrupt=False)[0]
    assert patched == pytest.approx(corrupt, rel=1e-9, abs=1e-12)  # what the patched pass gives, run
    for src, dst, kind in [EDGES[0], EDGES[1], EDGES[2], EDGES[5], EDGES[8]]:
        if dst[0] == "kv_head" and dst[2] >= params.head_dims(model.config)[1]:
            continue
        i = graph.sources.index(src)
        j = [(tuple(n), k) for n, k in graph.dests].index((dst, kind))
        mask = graph.valid.clone()
        mask[i, j] = False
        delta = source_output(model, adapter, src, t["corrupt_ids"], t) - source_output(model, adapter, src,
                                                                                    t["clean_ids"], t)
        want = perturbed_metric(model, adapter, dst, kind, delta, t)
        assert edge_patched_metric(model, adapter, tk, mask, metric) == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_sandwich_norms_are_refused():
    model, adapter = effects_model("gemma3_text")
    with pytest.raises(ConfigError, match="sandwich norms"):
        edge_attribution(model, adapter, batch(task()), metric)
    # an adapter that wrongly claims additive blocks is caught by the runtime check
    with pytest.raises(ConfigError, match="not attn_out \\+ mlp_out"):
        edge_attribution(model, dataclasses.replace(adapter, additive_blocks=True), batch(task()), metric)



@pytest.mark.parametrize("family", ["llama", "gpt_neox"])
def test_edge_patching_by_complement_equals_the_direct_sum(family, monkeypatch):
    """A destination's shift computed as (every source it reads − the kept ones) equals the
    direct sum over the ablated ones (float64), for circuits from almost empty to almost full."""
    import functools


    model, adapter = effects_model(family)
    t = task()
    tk = batch({k: t[k] for k in ("clean_ids", "corrupt_ids", "answer_ids", "wrong_ids")})
    graph = edge_graph(model, adapter)
    generator = torch.Generator().manual_seed(0)
    masks = [graph.valid & (torch.rand(graph.valid.shape, generator=generator) < p) for p in (0.02, 0.2, 0.5, 0.9)]
    complement = edges.edge_patched_metrics(model, adapter, tk, masks, metric, graph=graph)
    init = edges._EdgePatch.__init__
    monkeypatch.setattr(edges._EdgePatch, "__init__", functools.partialmethod(init, complement=False))
    direct = edges.edge_patched_metrics(model, adapter, tk, masks, metric, graph=graph)
    assert complement == pytest.approx(direct, rel=1e-9, abs=1e-12)
    assert max(direct) - min(direct) > 1e-3  # the circuits differ, so the check is not vacuous


@pytest.mark.parametrize("family", ["llama", "gpt_neox", "mixtral"])
def test_edge_patched_shifts_equal_a_sum_over_sources(family, monkeypatch):
    """The shifts of edge-patched passes (matrix products over a buffer of source diffs, or
    their complement) equal, in float64, the sum written here: for each destination, over each
    source whose edge into it is ablated, (ablated − current output), a head's from its z slice
    and its columns of the raw o projection weight."""

    model, adapter = effects_model(family)
    t = task()
    tk = batch({k: t[k] for k in ("clean_ids", "corrupt_ids", "answer_ids", "wrong_ids")})
    graph = edge_graph(model, adapter)
    d_head = params.head_dims(model.config)[2]

    def output(patch, values, src):
        kind, layer, index = src
        if kind == "embed":
            return values[("embed", None)]
        if kind == "mlp":
            return values[("mlp_out", layer)]
        o = mod(model, adapter, layer, adapter.o).weight
        cols = slice(index * d_head, (index + 1) * d_head)
        w = o[cols, :] if adapter.conv1d else o[:, cols].T
        return values[("attn_head_z", layer)][..., index, :] @ w.detach()

    def summed(patch, cols):
        w = patch.outside[:, cols]
        if not bool(w.any()):
            return None
        out = []
        for j in range(w.shape[1]):
            total = torch.zeros_like(patch.current[("embed", None)])
            for i, src in enumerate(graph.sources):
                if w[i, j]:
                    total = total + output(patch, patch.target, src) - output(patch, patch.current, src)
            out.append(total)
        return torch.stack(out)

    generator = torch.Generator().manual_seed(1)
    masks = [graph.valid & (torch.rand(graph.valid.shape, generator=generator) < p) for p in (0.03, 0.3, 0.7, 0.97)]
    got = edges.edge_patched_metrics(model, adapter, tk, masks, metric, graph=graph)
    monkeypatch.setattr(edges._EdgePatch, "delta", summed)
    want = edges.edge_patched_metrics(model, adapter, tk, masks, metric, graph=graph)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert max(want) - min(want) > 1e-3
