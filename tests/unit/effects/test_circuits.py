"""Circuits: selection, pruning, faithfulness measured by running the model, CPR / CMD."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch

from compgraph.effects.activation import activation_patching
from compgraph.effects.circuits import (
    FRACTIONS, areas, edge_circuit, faithfulness_curve, node_circuit, prune_edges, select_edges, select_nodes,
)
from compgraph.effects.edges import EDGE_SCHEMA, edge_attribution
from compgraph.models import params
from tests.helpers.effects import (  # noqa: F401 (one_thread: autouse)
    batch, effects_model, layer_mod, metric, one_thread, run, task,
)


def patched_run(model, adapter, t, outside, ablation):
    """M with every (kind, layer, index) in ``outside`` (heads, mlp blocks) patched at once
    to its corrupt value or its mean over the clean run, with plain hooks."""
    d_head = params.head_dims(model.config)[2]
    values = {}
    for side in ("clean_ids", "corrupt_ids"):
        got = {}
        hooks = []
        for layer in range(2):
            o = layer_mod(model, adapter, layer, adapter.o)
            hooks.append((o, "pre", lambda m, a, k=("z", layer): got.__setitem__(k, a[0].detach())))
            down = layer_mod(model, adapter, layer, adapter.mlp_out)
            hooks.append((down, "post", lambda m, a, out, k=("mlp", layer): got.__setitem__(k, out.detach())))
        with torch.no_grad():
            run(model, t[side], t, hooks)
        values[side] = got
    source = values["corrupt_ids"] if ablation == "corrupt" else \
        {k: v.mean((0, 1), keepdim=True).expand_as(v) for k, v in values["clean_ids"].items()}

    def z_patch(layer):
        heads = [c[2] for c in outside if c[0] == "head" and c[1] == layer]

        def hook(m, a):
            z = a[0].clone()
            for h in heads:
                z[..., h * d_head:(h + 1) * d_head] = source[("z", layer)][..., h * d_head:(h + 1) * d_head]
            return (z,)
        return hook

    hooks = []
    for layer in range(2):
        hooks.append((layer_mod(model, adapter, layer, adapter.o), "pre", z_patch(layer)))
        if ("mlp", layer, None) in outside:
            hooks.append((layer_mod(model, adapter, layer, adapter.mlp_out), "post",
                          lambda m, a, out, k=("mlp", layer): source[k]))
    with torch.no_grad():
        return float(run(model, t["clean_ids"], t, hooks).mean())


@pytest.mark.parametrize("ablation", ["corrupt", "mean"])
def test_node_circuit_faithfulness_is_measured(ablation):
    model, adapter = effects_model("llama")
    t = task()
    scores = activation_patching(model, adapter, batch(t), metric, kinds=("head", "mlp"))
    universe = [(k, l, i) for k, l, i in scores.select("component", "layer", "index").iter_rows()]
    with torch.no_grad():
        clean = float(run(model, t["clean_ids"], t).mean())
    empty_want = patched_run(model, adapter, t, set(universe), ablation)

    full = node_circuit(model, adapter, batch(t), metric, scores, n=len(universe), ablation=ablation)
    assert full.faithfulness == 1.0 and full.metric_full == full.metric_circuit == clean
    assert full.metric_empty == pytest.approx(empty_want, rel=1e-9, abs=1e-12)
    empty = node_circuit(model, adapter, batch(t), metric, scores, n=0, ablation=ablation)
    assert empty.faithfulness == 0.0 and empty.size == 0

    top = node_circuit(model, adapter, batch(t), metric, scores, n=3, ablation=ablation)
    members = set(top.members.select("component", "layer", "index").iter_rows())
    assert top.members["rank"].to_list() == [0, 1, 2] and top.size == 3 and top.level == "node"
    ranked = sorted(scores.iter_rows(named=True), key=lambda r: -abs(r["effect"]))[:3]
    assert members == {(r["component"], r["layer"], r["index"]) for r in ranked}
    want = patched_run(model, adapter, t, set(universe) - members, ablation)
    assert top.metric_circuit == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert top.faithfulness == pytest.approx((want - empty_want) / (clean - empty_want), rel=1e-9)
    assert top.ablation == ablation and top.n == 3 and top.threshold is None


def test_edge_circuit_full_is_one_and_empty_is_zero():
    model, adapter = effects_model("llama")
    t = task()
    scores = edge_attribution(model, adapter, batch(t), metric)
    with torch.no_grad():
        clean = float(run(model, t["clean_ids"], t).mean())
        corrupt = float(run(model, t["corrupt_ids"], t).mean())
    full = edge_circuit(model, adapter, batch(t), metric, scores, n=scores.height)
    assert full.size == scores.height and full.faithfulness == 1.0 and full.metric_circuit == clean
    assert full.metric_empty == pytest.approx(corrupt, rel=1e-9, abs=1e-12)  # every edge from the corrupt run
    empty = edge_circuit(model, adapter, batch(t), metric, scores, n=0)
    assert empty.faithfulness == 0.0 and empty.level == "edge"
    some = edge_circuit(model, adapter, batch(t), metric, scores, threshold=0.01)
    assert some.threshold == 0.01 and some.size <= (scores["effect"].abs() >= 0.01).sum()
    assert not math.isnan(some.faithfulness)


def edge(src, dst, kind, score):
    s = dict(zip(("kind", "layer", "index"), src))
    d = dict(zip(("kind", "layer", "index"), dst))
    return {"src": s, "dst": d, "input": kind, "effect": score, "method": "attribution"}


def test_pruning_removes_dangling_edges():
    rows = [
        edge(("embed", None, None), ("head", 1, 0), "q", 5.0),
        edge(("head", 1, 0), ("logits", None, None), "logits", 4.0),
        edge(("embed", None, None), ("mlp", 0, None), "mlp", 3.0),         # mlp 0 writes nowhere
        edge(("head", 0, 1), ("logits", None, None), "logits", -2.5),      # head 0.1 reads nothing
        edge(("head", 0, 2), ("kv_head", 1, 1), "k", 2.0),                 # KV head 1.1 feeds heads 1.2, 1.3: unused
        edge(("embed", None, None), ("head", 0, 2), "q", 1.8),             # so head 0.2 leads nowhere
        edge(("embed", None, None), ("kv_head", 1, 0), "v", 1.6),          # KV head 1.0 feeds head 1.0: kept
        edge(("mlp", 1, None), ("logits", None, None), "logits", 0.5),     # below the threshold
    ]
    frame = pl.DataFrame(rows, schema=EDGE_SCHEMA)
    chosen = select_edges(frame, threshold=1.5, prune=False, group=2)
    assert chosen.height == 7 and chosen["rank"].to_list() == list(range(7))
    kept = prune_edges(chosen, group=2)
    assert [(r["src"]["kind"], r["dst"]["kind"], r["input"]) for r in kept.iter_rows(named=True)] == [
        ("embed", "head", "q"), ("head", "logits", "logits"), ("embed", "kv_head", "v")]
    assert kept["rank"].to_list() == [0, 1, 6]  # ranks are the selection's, before pruning
    assert select_edges(frame, threshold=1.5, group=2).equals(kept)


def test_node_selection_by_n_and_threshold():
    scores = pl.DataFrame({"component": ["head", "head", "mlp", "head"], "layer": [0, 0, 0, 1],
                           "index": [0, 1, None, 2], "effect": [0.1, -0.5, 0.3, 0.3]})
    top = select_nodes(scores, n=2)
    assert top.select("component", "index", "score", "rank").rows() == [("head", 1, -0.5, 0), ("mlp", None, 0.3, 1)]
    assert select_nodes(scores, threshold=0.3).height == 3
    with pytest.raises(ValueError):
        select_nodes(scores)


def test_areas_by_the_trapezoid_rule():
    cpr, cmd = areas((0.1, 0.5, 1.0), (0.0, 0.5, 1.0))
    assert cpr == pytest.approx(0.4 * 0.25 + 0.5 * 0.75) and cmd == pytest.approx(0.4 * 0.75 + 0.5 * 0.25)
    cpr, cmd = areas((0.1, 0.5, 1.0), (0.0, 0.5, 1.0), log_x=True)
    assert cpr == pytest.approx(math.log(5) * 0.25 + math.log(2) * 0.75)
    assert FRACTIONS[0] == 0.001 and FRACTIONS[-1] == 1.0


@pytest.mark.parametrize("level", ["node", "edge"])
def test_faithfulness_curve(level):
    model, adapter = effects_model("llama")
    t = task()
    if level == "node":
        scores = activation_patching(model, adapter, batch(t), metric, kinds=("head", "mlp"))
    else:
        scores = edge_attribution(model, adapter, batch(t), metric)
    curve = faithfulness_curve(model, adapter, batch(t), metric, scores, level=level)
    total = scores.height
    assert curve.n == [int(x * total) for x in FRACTIONS]
    assert curve.faithfulness[-1] == 1.0 and curve.faithfulness[0] == 0.0  # 0.1 % of a tiny graph: empty
    assert (curve.cpr, curve.cmd) == areas(FRACTIONS, curve.faithfulness)
    assert all(s <= k for s, k in zip(curve.sizes, curve.n))



@pytest.mark.parametrize("level", ["node", "edge"])
def test_a_shared_cache_runs_each_distinct_circuit_once_with_the_same_results(level, monkeypatch):
    import compgraph.effects.circuits as C

    model, adapter = effects_model("llama")
    t = task()
    if level == "node":
        scores = activation_patching(model, adapter, batch(t), metric, kinds=("head", "mlp"))
        circuit_of = lambda **kw: node_circuit(model, adapter, batch(t), metric, scores, n=2, **kw)  # noqa: E731
        name = "patched_metrics"
    else:
        scores = edge_attribution(model, adapter, batch(t), metric)
        circuit_of = lambda **kw: edge_circuit(model, adapter, batch(t), metric, scores, n=5, **kw)  # noqa: E731
        name = "edge_patched_metrics"
    alone = (circuit_of(), faithfulness_curve(model, adapter, batch(t), metric, scores, level=level))
    runs = []
    real = getattr(C, name)

    def counted(*args, **kwargs):
        got = real(*args, **kwargs)
        runs.append(len(args[3]))  # the plans / masks measured
        return got
    monkeypatch.setattr(C, name, counted)
    cache: dict = {}
    shared = (circuit_of(cache=cache), faithfulness_curve(model, adapter, batch(t), metric, scores, level=level,
                                                          cache=cache))
    assert shared[0].members.equals(alone[0].members)
    assert shared[0]._replace(members=None) == alone[0]._replace(members=None) and shared[1] == alone[1]
    # 3 circuits, then the curve's 2 + 10 fractions: what is distinct among all of them, run once
    assert sum(runs) == len(cache) < 3 + 12
    assert runs[1] < 12  # the curve reused full and empty at least
