"""Circuits: selection from node or edge scores, pruning, and faithfulness measured by running the model.

**Selection.** The ``n`` components (or edges) with the largest ``|score|`` (``n=``), or every
one with ``|score| >= threshold`` (``threshold=``); ties keep the order of the score
frame. Members carry their ``score`` and ``rank`` (0 = largest |score|).

**Pruning.** Edge level: an edge stays only when it lies on a path embeddings → … → logits
made of selected edges (its source is reached from the embeddings and its destination
reaches the logits). A q edge ends at its query head; a k or v edge ends at a KV head,
which feeds every query head of its group. Node level: every component reads the
residual stream, which carries the embeddings, and writes into the one the logits read,
so every node connects input to logits and pruning removes nothing.

**Faithfulness** = (M(circuit) − M(empty)) ÷ (M(full) − M(empty)), each M measured by a
forward pass on the clean prompts:

- node level: M(full) = the clean run; M(circuit) = the clean run with every component of
  the *universe* (the components that were scored, e.g. all heads and MLP blocks) that is
  outside the circuit patched towards its ablation value at once (``corrupt``: its value
  in the corrupt run; ``mean``, ``zero``, ``resample`` as in :mod:`~compgraph.effects.measure`);
  M(empty) = the same with the whole universe patched. The embeddings are always in.
- edge level: M(circuit) = the clean run where each destination receives, for every edge
  into it that is not in the circuit, the source's ablated output instead of its output
  in this run (:func:`compgraph.effects.edges.edge_patched_metric`); full = every edge in
  (the clean run), empty = no edge in (with ``corrupt`` ablation that is the corrupt run,
  whose M is taken instead of running the same pass again).

So the full circuit has faithfulness 1 and the empty circuit 0, exactly (the same forward
pass, deterministic); NaN when M(full) = M(empty).

Each distinct circuit is run once: circuits with the same members (the curve's 100 % and
the full circuit; its smallest sizes and the empty one) share one measurement, and a
``cache`` dict passed to :func:`node_circuit` / :func:`edge_circuit` and then to
:func:`faithfulness_curve` on the same scores shares them between the circuit and its curve.
A cache belongs to one model, task batch and metric: its keys name the circuit, the
ablation and the seed only.

**CPR and CMD** (MIB, Mueller et al. 2025): faithfulness f(x) of the top-⌊x·N⌋ circuit
(pruned, edge level) for x on the grid :data:`FRACTIONS` = 0.001, 0.002, 0.005, 0.01, 0.02,
0.05, 0.1, 0.2, 0.5, 1 (log-spaced 1-2-5 steps from 0.1 % to 100 % of the N scored
components or edges); CPR = the trapezoid-rule area under f over x (x on a linear axis,
as MIB does by default: the area spans 0.999 units of x), CMD = the same area of |1 − f|.
``log_x=True`` integrates over ln x instead.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import polars as pl
import torch

from compgraph.data.tasks import TaskBatch
from compgraph.effects.activation import patched_metrics
from compgraph.effects.components import Component, check_kinds
from compgraph.effects.edges import DEFAULT_MEMORY, Node, edge_graph, edge_mask, edge_patched_metrics
from compgraph.effects.measure import DEFAULT_BATCH_TOKENS, Metric
from compgraph.errors import ConfigError

FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class Circuit(NamedTuple):
    level: str
    """node | edge."""
    members: pl.DataFrame
    """node: component, layer, index, score, rank; edge: src, dst, input, score, rank."""
    size: int
    """Members after pruning."""
    n: int | None
    """Top-n asked for (None with a threshold)."""
    threshold: float | None
    metric_full: float
    metric_empty: float
    metric_circuit: float
    faithfulness: float
    ablation: str


class Curve(NamedTuple):
    level: str
    fractions: tuple[float, ...]
    n: list[int]
    """⌊fraction · N⌋ asked for at each fraction."""
    sizes: list[int]
    """Members after pruning."""
    faithfulness: list[float]
    cpr: float
    cmd: float
    metric_full: float
    metric_empty: float
    ablation: str


# --- selection --------------------------------------------------------------------------------

def _rank(scores: pl.DataFrame, column: str, n: int | None, threshold: float | None) -> pl.DataFrame:
    if (n is None) == (threshold is None):
        raise ConfigError("give exactly one of n (top-n) or threshold")
    ranked = scores.with_row_index("_order").with_columns(pl.col(column).abs().alias("_abs")) \
        .sort(["_abs", "_order"], descending=[True, False])
    if n is not None:
        if n < 0:
            raise ConfigError("n must be >= 0")
        ranked = ranked.head(n)
    else:
        ranked = ranked.filter(pl.col("_abs") >= threshold)
    return ranked.with_columns(pl.int_range(pl.len()).cast(pl.Int64).alias("rank")).drop("_order", "_abs")


def select_nodes(scores: pl.DataFrame, *, n: int | None = None, threshold: float | None = None) -> pl.DataFrame:
    """Members (component, layer, index, score, rank) from a node-effect frame (column ``effect``)."""
    ranked = _rank(scores, "effect", n, threshold)
    return ranked.select("component", "layer", "index", pl.col("effect").alias("score"), "rank")


def select_edges(scores: pl.DataFrame, *, n: int | None = None, threshold: float | None = None,
                 prune: bool = True, group: int | None = None) -> pl.DataFrame:
    """Members (src, dst, input, score, rank) from an edge-effect frame, pruned (module doc).
    ``group`` is the number of query heads per KV head (default: read from the frame's
    largest head and KV-head indices)."""
    ranked = _rank(scores, "effect", n, threshold)
    members = ranked.select("src", "dst", "input", pl.col("effect").alias("score"), "rank")
    if prune:
        members = prune_edges(members, group=group if group is not None else _group(scores))
    return members


def _group(scores: pl.DataFrame) -> int:
    heads = [d["index"] for d in scores["dst"].to_list() if d["kind"] == "head"]
    kv = [d["index"] for d in scores["dst"].to_list() if d["kind"] == "kv_head"]
    if not heads or not kv:
        return 1
    return (max(heads) + 1) // (max(kv) + 1)


def _dst_nodes(dst: dict, group: int) -> list[Node]:
    """The graph nodes an edge's destination feeds: a KV head feeds its query heads."""
    if dst["kind"] == "kv_head":
        return [Node("head", dst["layer"], dst["index"] * group + i) for i in range(group)]
    return [Node(dst["kind"], dst["layer"], dst["index"])]


def prune_edges(members: pl.DataFrame, *, group: int = 1) -> pl.DataFrame:
    """Keep the edges on a path from the embeddings to the logits (module doc)."""
    import networkx as nx

    edges = [(Node(**s), _dst_nodes(d, group)) for s, d in zip(members["src"].to_list(), members["dst"].to_list())]
    start, end = Node("embed", None, None), Node("logits", None, None)
    graph = nx.DiGraph([(src, dst) for src, dsts in edges for dst in dsts])
    graph.add_nodes_from((start, end))
    reached = nx.descendants(graph, start) | {start}
    useful = nx.ancestors(graph, end) | {end}
    keep = [src in reached and bool(useful.intersection(dsts)) for src, dsts in edges]
    return members.filter(pl.Series(keep, dtype=pl.Boolean))


# --- faithfulness -----------------------------------------------------------------------------

def _faith(full: float, empty: float, circuit: float) -> float:
    return (circuit - empty) / (full - empty) if full != empty else math.nan


def _universe(scores: pl.DataFrame) -> list[Component]:
    return [Component(k, l, i) for k, l, i in zip(scores["component"].to_list(), scores["layer"].to_list(),
                                                   scores["index"].to_list())]


def _once(keys: list, measure, cache: dict | None) -> list[float]:
    """``measure(distinct keys)`` for the keys not in ``cache``, each distinct key once;
    the values of ``keys`` in order (``cache`` updated)."""
    cache = {} if cache is None else cache
    todo = [k for k in dict.fromkeys(keys) if k not in cache]
    if todo:
        cache.update(zip(todo, measure(todo)))
    return [cache[k] for k in keys]


def _node_metrics(model, adapter, task, metric, universe, insides: list[set], ablation, seed,
                  batch_tokens, cache: dict | None = None) -> list[float]:
    """M with every universe component outside each circuit patched; one forward pass per
    distinct circuit (targets computed once)."""
    check_kinds({c.kind for c in universe}, model, adapter)

    def measure(keys):
        plans = [[c for c in universe if c not in inside] for inside in keys]
        values, _ = patched_metrics(model, adapter, task, plans, metric, ablation=ablation, seed=seed,
                                    batch_tokens=batch_tokens, per_pass=1)
        return [float(v) for v in values]
    whole = frozenset(universe)
    return _once([("node", ablation, seed, whole, frozenset(inside)) for inside in insides],
                 lambda keys: measure([set(k[4]) for k in keys]), cache)


def node_circuit(model, adapter, task: TaskBatch, metric: Metric, scores: pl.DataFrame, *, n: int | None = None,
                 threshold: float | None = None, ablation: str = "corrupt", seed: int = 0,
                 batch_tokens: int = DEFAULT_BATCH_TOKENS, cache: dict | None = None) -> Circuit:
    """The node circuit chosen from ``scores`` (a node-effect frame: its rows are the
    universe), with measured faithfulness."""
    universe = _universe(scores)
    members = select_nodes(scores, n=n, threshold=threshold)
    inside = set(_universe(members.rename({"score": "effect"})))
    full, empty, circuit = _node_metrics(model, adapter, task, metric, universe, [set(universe), set(), inside],
                                         ablation, seed, batch_tokens, cache)
    return Circuit("node", members, members.height, n, threshold, full, empty, circuit,
                   _faith(full, empty, circuit), ablation)


def _edge_metrics(model, adapter, task, metric, graph, members: list, ablation, seed, memory,
                  cache: dict | None = None) -> list[float]:
    """M of each edge circuit (a member frame; None: every edge), each distinct one run once."""
    masks = [graph.valid.clone() if m is None else edge_mask(graph, m) for m in members]
    keys = [("edge", ablation, seed, tuple(torch.nonzero(m).flatten().tolist())) for m in masks]
    by_key = dict(zip(keys, masks))
    return _once(keys, lambda todo: edge_patched_metrics(model, adapter, task, [by_key[k] for k in todo], metric,
                                                         ablation=ablation, graph=graph, seed=seed, memory=memory),
                 cache)


def edge_circuit(model, adapter, task: TaskBatch, metric: Metric, scores: pl.DataFrame, *, n: int | None = None,
                 threshold: float | None = None, ablation: str = "corrupt", prune: bool = True, seed: int = 0,
                 memory: int = DEFAULT_MEMORY, cache: dict | None = None) -> Circuit:
    """The edge circuit chosen from ``scores`` (an edge-effect frame), pruned, with
    measured faithfulness."""
    graph = edge_graph(model, adapter)
    members = select_edges(scores, n=n, threshold=threshold, prune=prune, group=graph.dims.group)
    full, empty, circuit = _edge_metrics(model, adapter, task, metric, graph, [None, members.head(0), members],
                                         ablation, seed, memory, cache)
    return Circuit("edge", members, members.height, n, threshold, full, empty, circuit,
                   _faith(full, empty, circuit), ablation)


# --- CPR / CMD --------------------------------------------------------------------------------

def areas(fractions: Sequence[float], faithfulness: Sequence[float], *, log_x: bool = False) -> tuple[float, float]:
    """(CPR, CMD): trapezoid-rule areas under f and under |1 − f| over x (ln x with ``log_x``)."""
    xs = [math.log(x) for x in fractions] if log_x else list(fractions)
    cpr = cmd = 0.0
    for i in range(len(xs) - 1):
        width = xs[i + 1] - xs[i]
        cpr += width * (faithfulness[i] + faithfulness[i + 1]) / 2
        cmd += width * (abs(1 - faithfulness[i]) + abs(1 - faithfulness[i + 1])) / 2
    return cpr, cmd


def faithfulness_curve(model, adapter, task: TaskBatch, metric: Metric, scores: pl.DataFrame, *, level: str = "node",
                       fractions: Sequence[float] = FRACTIONS, ablation: str = "corrupt", log_x: bool = False,
                       seed: int = 0, batch_tokens: int = DEFAULT_BATCH_TOKENS,
                       memory: int = DEFAULT_MEMORY, cache: dict | None = None) -> Curve:
    """Faithfulness of the top-⌊x·N⌋ circuit for each x in ``fractions``, and CPR / CMD."""
    total = scores.height
    ns = [int(x * total) for x in fractions]
    if level == "node":
        universe = _universe(scores)
        picks = [select_nodes(scores, n=k) for k in ns]
        insides = [set(universe), set()] + [set(_universe(p.rename({"score": "effect"}))) for p in picks]
        full, empty, *values = _node_metrics(model, adapter, task, metric, universe, insides, ablation, seed,
                                             batch_tokens, cache)
    elif level == "edge":
        graph = edge_graph(model, adapter)
        picks = [select_edges(scores, n=k, group=graph.dims.group) for k in ns]
        full, empty, *values = _edge_metrics(model, adapter, task, metric, graph, [None, picks[0].head(0)] + picks,
                                             ablation, seed, memory, cache)
    faith = [_faith(full, empty, v) for v in values]
    cpr, cmd = areas(fractions, faith, log_x=log_x)
    return Curve(level, tuple(fractions), ns, [p.height for p in picks], faith, cpr, cmd, full, empty, ablation)
