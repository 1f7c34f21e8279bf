"""Node and edge frames of the effects stage: what :mod:`compgraph.effects` computes, keyed
by the graph's uids.

Components measured by node effects map to ``:Head``, ``:Neuron``, ``:Expert`` or a
``:Site`` of kind ``mlp`` / ``attn`` (a whole block). The causal edge graph
(:mod:`compgraph.effects.edges`) adds three kinds of ``:Site``: the token embeddings
(``embed``, every path's start), the logits (``logits``, every path's end), and, under
grouped-query attention, the key/value heads (``kv_head``; without grouping a k or v edge
ends at the :Head it feeds).

An edge circuit ``INCLUDES`` every component one of its edges touches, with
``score`` = Σ |edge effect| over the circuit's edges at that component (in or out) and
``rank`` by that score (0 = largest; ties by uid).
"""

from __future__ import annotations

import polars as pl

from compgraph import schema

P = schema.Prop
S = schema.SiteKind

_NODE_KINDS = {"head": (schema.HEAD, P.HEAD), "neuron": (schema.NEURON, P.INDEX), "expert": (schema.EXPERT, P.INDEX)}


def component_uid(model: str, kind: str, layer: int | None, index: int | None, *, group: int = 1) -> str:
    """The uid of a measured component or of a node of the causal edge graph."""
    if kind == "head":
        return schema.head_uid(model, layer, index)
    if kind == "neuron":
        return schema.neuron_uid(model, layer, index)
    if kind == "expert":
        return schema.expert_uid(model, layer, index)
    if kind == S.KV_HEAD:
        return schema.head_uid(model, layer, index) if group == 1 else schema.kv_head_uid(model, layer, index)
    return schema.site_uid(model, kind, layer)


def _identity(model: str, kind: str, layers: list, indices: list, group: int) -> tuple[schema.NodeKind, pl.DataFrame]:
    frame = pl.DataFrame({"uid": [component_uid(model, kind, l, i, group=group) for l, i in zip(layers, indices)],
                          P.MODEL: model, P.LAYER: pl.Series(layers, dtype=pl.Int64)})
    if kind in _NODE_KINDS:
        node_kind, index_prop = _NODE_KINDS[kind]
        return node_kind, frame.with_columns(pl.Series(index_prop, indices, dtype=pl.Int64))
    if kind == S.KV_HEAD and group == 1:
        return schema.HEAD, frame.with_columns(pl.Series(P.HEAD, indices, dtype=pl.Int64))
    if kind == S.KV_HEAD:
        frame = frame.with_columns(pl.Series(P.KV_HEAD, indices, dtype=pl.Int64))
    return schema.SITE, frame.with_columns(pl.lit(str(kind)).alias("site"))


def identity_nodes(model: str, rows: pl.DataFrame, *, group: int = 1) -> list[tuple[schema.NodeKind, pl.DataFrame]]:
    """Identity rows (uid, model, layer, index or site) for the components of a frame with
    columns kind, layer, index, so that edges find their endpoints."""
    out = []
    rows = rows.unique(["kind", "layer", "index"], maintain_order=True)
    for (kind,), part in rows.group_by("kind", maintain_order=True):
        out.append(_identity(model, kind, part["layer"].to_list(), part["index"].to_list(), group))
    return out


def component_nodes(model: str, effects: pl.DataFrame) -> list[tuple[schema.NodeKind, pl.DataFrame]]:
    """Identity rows for every component a node-effect frame names."""
    return identity_nodes(model, effects.select(pl.col("component").alias("kind"), "layer", "index"))


def affects_rows(model: str, task: str, metric: str, n_examples: int, effects: pl.DataFrame) -> pl.DataFrame:
    return pl.DataFrame({
        "src": [component_uid(model, k, layer, i) for k, layer, i in effects.select("component", "layer", "index").rows()],
        "dst": schema.task_uid(task), "effect": effects["effect"], "effect_norm": effects["effect_norm"],
        "method": effects["method"], "ablation": effects["ablation"], "direction": effects["direction"],
        "metric": metric, "n_examples": n_examples,
    })


def _ends(edges: pl.DataFrame, end: str) -> pl.DataFrame:
    return edges.select(pl.col(end).struct.field("kind"), pl.col(end).struct.field("layer"),
                        pl.col(end).struct.field("index"))


def edge_nodes(model: str, edges: pl.DataFrame, *, group: int) -> list[tuple[schema.NodeKind, pl.DataFrame]]:
    """Identity rows for both ends of every edge of an edge-effect frame."""
    return identity_nodes(model, pl.concat([_ends(edges, "src"), _ends(edges, "dst")]), group=group)


def _uids(model: str, edges: pl.DataFrame, end: str, group: int) -> list[str]:
    return [component_uid(model, d["kind"], d["layer"], d["index"], group=group) for d in edges[end].to_list()]


def causes_rows(model: str, task: str, edges: pl.DataFrame, members: pl.DataFrame, *, group: int) -> pl.DataFrame:
    """``CAUSES`` rows: every scored edge with its ``effect``, ``rank`` by |effect| among the
    task's edges (0 = largest) and ``in_circuit`` (a member of the task's edge circuit)."""
    ranked = edges.with_row_index("_order").with_columns(pl.col("effect").abs().alias("_abs")) \
        .sort(["_abs", "_order"], descending=[True, False]).with_columns(pl.int_range(pl.len()).alias("rank"))
    key = ["src", "dst", "input"]
    inside = members.select(*key).with_columns(pl.lit(True).alias("in_circuit"))
    ranked = ranked.join(inside, on=key, how="left", nulls_equal=True).with_columns(pl.col("in_circuit").fill_null(False))
    return pl.DataFrame({
        "src": _uids(model, ranked, "src", group), "dst": _uids(model, ranked, "dst", group),
        "effect": ranked["effect"], "method": ranked["method"], "task": task, "input": ranked["input"],
        "rank": ranked["rank"].cast(pl.Int64), "in_circuit": ranked["in_circuit"],
    })


def edge_circuit_members(model: str, members: pl.DataFrame, *, group: int) -> pl.DataFrame:
    """The components an edge circuit touches (uid, score, rank; module doc)."""
    if members.height == 0:
        return pl.DataFrame(schema={"uid": pl.String, "score": pl.Float64, "rank": pl.Int64})
    touched = pl.DataFrame({
        "uid": _uids(model, members, "src", group) + _uids(model, members, "dst", group),
        "score": members["score"].abs().to_list() * 2,
    })
    totals = touched.group_by("uid").agg(pl.col("score").sum()).sort(["score", "uid"], descending=[True, False])
    return totals.with_columns(pl.int_range(pl.len()).cast(pl.Int64).alias("rank"))


def node_circuit_members(model: str, members: pl.DataFrame) -> pl.DataFrame:
    """A node circuit's members (uid, score, rank)."""
    return pl.DataFrame({
        "uid": [component_uid(model, k, layer, i) for k, layer, i in members.select("component", "layer", "index").rows()],
        "score": members["score"], "rank": members["rank"],
    })


def circuit_frames(model: str, task: str, method: str, circuit, curve, members: pl.DataFrame) -> tuple:
    """(:Circuit node, INCLUDES rows, FOR_TASK row) of one circuit with its faithfulness
    curve (CPR, CMD, and the faithfulness at each size of the curve)."""
    uid = schema.circuit_uid(model, task, circuit.level, method)
    node = pl.DataFrame([{
        "uid": uid, P.MODEL: model, "task": task, "method": method, "level": circuit.level,
        "ablation": circuit.ablation, "size": circuit.size, "n": circuit.n, "threshold": circuit.threshold,
        "metric_full": circuit.metric_full, "metric_empty": circuit.metric_empty,
        "metric_circuit": circuit.metric_circuit, "faithfulness": circuit.faithfulness,
        "cpr": curve.cpr, "cmd": curve.cmd, "curve_fractions": list(curve.fractions),
        "curve_sizes": curve.sizes, "curve_faithfulness": curve.faithfulness,
    }])
    includes = members.select(pl.lit(uid).alias("src"), pl.col("uid").alias("dst"), "score", "rank")
    for_task = pl.DataFrame([{"src": uid, "dst": schema.task_uid(task)}])
    return node, includes, for_task
