"""Every node and edge row the stages write: the one place besides :mod:`compgraph.schema`
that names properties.

Algorithms (:mod:`compgraph.extract`, :mod:`compgraph.effects`, :mod:`compgraph.weights`,
:mod:`compgraph.dictionaries`) return tensors and plain frames about layers and indices;
the functions here key them by the graph's uids and name their columns by
:class:`compgraph.schema.Prop`. Node frames have a ``uid`` column; edge frames ``src`` and
``dst`` plus the relationship's properties.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from compgraph import schema
from compgraph.dictionaries.base import Dictionary
from compgraph.extract.decode import Decoded
from compgraph.extract.experts import Routed
from compgraph.extract.stats import TopTokens, UnitStats
from compgraph.models.info import ModelInfo
from compgraph.schema import ComponentKind as K
from compgraph.weights.frames import ENDPOINTS

P = schema.Prop
S = schema.SiteKind


def _token_uids(tokenizer_id: str, ids: pl.Expr) -> pl.Expr:
    """:func:`compgraph.schema.token_uid` of a column of token ids, vectorised."""
    return pl.format("{}:{}", pl.lit(tokenizer_id), ids)


# ---- tokens, neurons, heads, experts ------------------------------------------------------------

def token_rows(tokenizer, tokenizer_id: str, n_tokens: int) -> pl.DataFrame:
    """One :Token per id below ``n_tokens``: id, its decoded text, its vocabulary piece."""
    ids = list(range(n_tokens))
    return pl.DataFrame({
        P.UID: [schema.token_uid(tokenizer_id, i) for i in ids], P.ID: ids,
        P.TEXT: tokenizer.batch_decode([[i] for i in ids]),
        P.PIECE: [str(p) for p in tokenizer.convert_ids_to_tokens(ids)],
        P.TOKENIZER: tokenizer_id,
    })


def neuron_uids(model: str, layer: int, d_mlp: int) -> list[str]:
    return [schema.neuron_uid(model, layer, i) for i in range(d_mlp)]


def neuron_identity(model: str, layer: int, d_mlp: int) -> pl.DataFrame:
    """The neurons of one layer, identity only (uid, model, layer, index)."""
    return pl.DataFrame({
        P.UID: neuron_uids(model, layer, d_mlp), P.MODEL: model, P.LAYER: layer, P.INDEX: list(range(d_mlp)),
    })


def head_identity(info: ModelInfo) -> pl.DataFrame:
    """Every query head of a model, identity only (uid, model, layer, head)."""
    return pl.DataFrame({
        P.UID: [schema.head_uid(info.name, layer, h) for layer in range(info.n_layers) for h in range(info.n_heads)],
        P.MODEL: info.name,
        P.LAYER: [layer for layer in range(info.n_layers) for _ in range(info.n_heads)],
        P.HEAD: [h for _ in range(info.n_layers) for h in range(info.n_heads)],
    })


def stat_columns(stats: UnitStats) -> list[pl.Series]:
    """``act_mean``, ``act_max``, ``act_freq`` columns (:mod:`compgraph.extract.stats`)."""
    return [pl.Series(P.ACT_MEAN, stats.act_mean.numpy()), pl.Series(P.ACT_MAX, stats.act_max.numpy()),
            pl.Series(P.ACT_FREQ, stats.act_freq.numpy())]


def decodes_rows(src_uids: list[str], decoded: Decoded, tokenizer_id: str, via: str) -> pl.DataFrame:
    """DECODES_TO rows: rank 0.. for the top-k, -1.. for the bottom-k (see schema)."""
    n, k = decoded.top_ids.shape
    parts = []
    for ids, logits, sign in ((decoded.top_ids, decoded.top_logits, 1), (decoded.bottom_ids, decoded.bottom_logits, -1)):
        ranks = torch.arange(k).repeat(n) if sign > 0 else -(torch.arange(k) + 1).repeat(n)
        parts.append(pl.DataFrame({
            "src": pl.Series(src_uids).gather(np.repeat(np.arange(n), k)),
            "token": ids.reshape(-1).cpu().numpy(),
            P.LOGIT: logits.reshape(-1).float().cpu().numpy(),
            P.RANK: ranks.numpy(),
            P.SIGN: sign,
        }))
    frame = pl.concat(parts)
    return frame.select(
        "src", _token_uids(tokenizer_id, pl.col("token")).alias("dst"),
        pl.lit(via).alias(P.VIA), pl.col(P.LOGIT).cast(pl.Float64), pl.col(P.RANK).cast(pl.Int64),
        pl.col(P.SIGN).cast(pl.Int64),
    )


def activates_rows(src_uids: list[str], top: TopTokens, tokenizer_id: str) -> pl.DataFrame:
    """ACTIVATES_ON rows from each unit's top tokens (``src_uids[unit]`` the unit's uid)."""
    if not len(top.unit):
        return pl.DataFrame(schema={"src": pl.String, "dst": pl.String, P.MEAN_ACT: pl.Float64,
                                    P.MAX_ACT: pl.Float64, P.COUNT: pl.Int64})
    return pl.DataFrame({
        "src": pl.Series(src_uids).gather(top.unit.numpy()),
        "dst": [schema.token_uid(tokenizer_id, t) for t in top.token.tolist()],
        P.MEAN_ACT: top.mean_act.numpy(), P.MAX_ACT: top.max_act.numpy(), P.COUNT: top.count.numpy(),
    })


HEAD_SCORE_PROPS: dict[str, P] = {
    "sink": P.SINK, "prev_token": P.PREV_TOKEN, "entropy": P.ENTROPY, "induction": P.INDUCTION,
    "duplicate": P.DUPLICATE, "copy": P.COPY, "retrieval": P.RETRIEVAL_SCORE,
}
"""The property of each score of :func:`compgraph.extract.heads.head_scores`."""


def head_rows(model: str, scores: dict[str, torch.Tensor], n_heads: int, n_kv_heads: int) -> pl.DataFrame:
    """One row per query head with every score, its KV head and whether it retrieves."""
    n_layers = scores["copy"].shape[0]
    layer = torch.arange(n_layers).repeat_interleave(n_heads)
    head = torch.arange(n_heads).repeat(n_layers)
    flat = {name: scores[name].reshape(-1).double().numpy() for name in HEAD_SCORE_PROPS}
    return pl.DataFrame({
        P.UID: [schema.head_uid(model, int(l_), int(h)) for l_, h in zip(layer, head)],
        P.MODEL: model, P.LAYER: layer.numpy(), P.HEAD: head.numpy(),
        P.KV_HEAD: (head // (n_heads // n_kv_heads)).numpy(),
        P.SINK: flat["sink"], P.PREV_TOKEN: flat["prev_token"], P.ENTROPY: flat["entropy"],
        P.INDUCTION: flat["induction"], P.DUPLICATE: flat["duplicate"],
        P.COPY: flat["copy"], P.RETRIEVAL_SCORE: flat["retrieval"],
        P.RETRIEVAL: (scores["retrieval"].reshape(-1) > schema.RETRIEVAL_THRESHOLD).numpy(),
    })


def expert_uids(model: str, layer: int, n_experts: int) -> list[str]:
    return [schema.expert_uid(model, layer, e) for e in range(n_experts)]


def expert_rows(model: str, layer: int, load: torch.Tensor) -> pl.DataFrame:
    """The experts of one layer with their routing load."""
    n = len(load)
    return pl.DataFrame({
        P.UID: expert_uids(model, layer, n), P.MODEL: model, P.LAYER: layer, P.EXPERT: list(range(n)),
        P.ROUTING_LOAD: load.numpy(),
    })


def routed_rows(uids: list[str], routed: list[Routed], tokenizer_id: str) -> pl.DataFrame:
    """ACTIVATES_ON rows of experts: the tokens routed to each most often (``count``) with
    the mean router weight they got (``mean_act``)."""
    parts = [pl.DataFrame({
        "src": uids[r.expert], "dst": [schema.token_uid(tokenizer_id, int(t)) for t in r.token],
        P.COUNT: r.count.numpy(), P.MEAN_ACT: r.mean_weight.numpy(),
    }) for r in routed]
    if not parts:
        return pl.DataFrame(schema={"src": pl.String, "dst": pl.String, P.COUNT: pl.Int64, P.MEAN_ACT: pl.Float64})
    return pl.concat(parts)


# ---- weights-based connections --------------------------------------------------------------------

_UID_OF_KIND = {K.NEURON: schema.neuron_uid, K.HEAD: schema.head_uid}


def _connection_uids(frame: pl.DataFrame, side: str, model: str) -> pl.Series:
    component = frame["kind"].replace_strict({str(k): str(ends[0 if side == "src" else 1])
                                              for k, ends in ENDPOINTS.items()})
    keys = pl.DataFrame({"c": component, "l": frame[f"{side}_layer"], "i": frame[f"{side}_index"]})
    distinct = keys.unique()
    distinct = distinct.with_columns(uid=pl.Series([_UID_OF_KIND[c](model, l, i) for c, l, i in distinct.iter_rows()],
                                                   dtype=pl.String))
    return keys.join(distinct, on=["c", "l", "i"], how="left", maintain_order="left")["uid"]


def connects_rows(frame: pl.DataFrame, model: str) -> pl.DataFrame:
    """``CONNECTS`` rows (src, dst, kind, weight, baseline) of a connection frame
    (:mod:`compgraph.weights.frames`)."""
    if frame.is_empty():
        return pl.DataFrame(schema={"src": pl.String, "dst": pl.String, P.KIND: pl.String,
                                    P.WEIGHT: pl.Float64, P.BASELINE: pl.Float64})
    return pl.DataFrame({
        "src": _connection_uids(frame, "src", model), "dst": _connection_uids(frame, "dst", model),
        P.KIND: frame["kind"], P.WEIGHT: frame["weight"], P.BASELINE: frame["baseline"],
    })


# ---- dictionaries and features -------------------------------------------------------------------

def dictionary_rows(model: str, name: str, dicts: list[Dictionary], uids: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(:Dictionary rows, HAS_DICTIONARY rows) of the dictionaries of one path."""
    rows = pl.DataFrame([{
        P.UID: uid, P.MODEL: model, P.NAME: name, P.KIND: d.kind, P.SITE: d.site, P.LAYER: d.layer,
        P.WIDTH: d.width, P.SOURCE: d.source, P.ACTIVATION: d.activation, P.K: d.k, P.FORMAT: d.format,
        P.D_IN: d.d_in, P.D_OUT: d.d_out, P.OUTPUT_SITE: d.output_site or d.site,
        P.OUTPUT_LAYER: d.output_layer if d.output_site else d.layer, P.HOOK: d.hook,
    } for d, uid in zip(dicts, uids)], schema_overrides={P.LAYER: pl.Int64, P.K: pl.Int64, P.OUTPUT_LAYER: pl.Int64})
    return rows, pl.DataFrame({"src": schema.model_uid(model), "dst": uids})


def feature_uids(dictionary_uid: str, width: int) -> list[str]:
    return [schema.feature_uid(dictionary_uid, j) for j in range(width)]


def feature_identity(model: str, dictionary_uid: str, d: Dictionary) -> pl.DataFrame:
    """The features of one dictionary, identity only (uid, model, dictionary, layer, index)."""
    return pl.DataFrame({
        P.UID: feature_uids(dictionary_uid, d.width), P.MODEL: model, P.DICTIONARY: dictionary_uid,
        P.LAYER: pl.Series([d.layer] * d.width, dtype=pl.Int64), P.INDEX: list(range(d.width)),
    })


def transcoder_rows(src_uid: str, src: Dictionary, top,
                    targets: list[tuple[str, Dictionary]]) -> tuple[pl.DataFrame, set[str]]:
    """``CONNECTS {kind: transcoder}`` rows from a source transcoder's running top-k over the
    target transcoders (``top.layer`` holds the target's position in ``targets``;
    :func:`compgraph.dictionaries.connections.connection_topk`; None: it reaches none), and
    the uids of the target dictionaries they reach."""
    columns = {"src": pl.String, "dst": pl.String, P.KIND: pl.String, P.WEIGHT: pl.Float64}
    if top is None:
        return pl.DataFrame(schema=columns), set()
    frame = top.frame(schema.ConnectKind.TRANSCODER, src.layer or 0)
    dst_dicts = [targets[i][0] for i in frame["dst_layer"].to_list()]
    edges = pl.DataFrame({
        "src": [schema.feature_uid(src_uid, i) for i in frame["src_index"].to_list()],
        "dst": [schema.feature_uid(uid, j) for uid, j in zip(dst_dicts, frame["dst_index"].to_list())],
        P.KIND: str(schema.ConnectKind.TRANSCODER), P.WEIGHT: frame["weight"],
    }, schema=columns)
    return edges, set(dst_dicts)


# ---- effects: components, tasks, circuits -----------------------------------------------------------

_NODE_KINDS = {K.HEAD: (schema.HEAD, P.HEAD), K.NEURON: (schema.NEURON, P.INDEX), K.EXPERT: (schema.EXPERT, P.INDEX)}


def component_uid(model: str, kind: str, layer: int | None, index: int | None, *, group: int = 1) -> str:
    """The uid of a measured component or of a node of the causal edge graph (a whole block,
    the embeddings, the logits: ``:Site`` components; a KV head: a ``:Site`` under grouped
    attention, else the :Head it is)."""
    if kind == K.HEAD:
        return schema.head_uid(model, layer, index)
    if kind == K.NEURON:
        return schema.neuron_uid(model, layer, index)
    if kind == K.EXPERT:
        return schema.expert_uid(model, layer, index)
    if kind == S.KV_HEAD:
        return schema.head_uid(model, layer, index) if group == 1 else schema.kv_head_uid(model, layer, index)
    return schema.site_uid(model, kind, layer)


def _identity(model: str, kind: str, layers: list, indices: list, group: int) -> tuple[schema.NodeKind, pl.DataFrame]:
    frame = pl.DataFrame({P.UID: [component_uid(model, kind, l_, i, group=group) for l_, i in zip(layers, indices)],
                          P.MODEL: model, P.LAYER: pl.Series(layers, dtype=pl.Int64)})
    if kind in _NODE_KINDS:
        node_kind, index_prop = _NODE_KINDS[kind]
        return node_kind, frame.with_columns(pl.Series(index_prop, indices, dtype=pl.Int64))
    if kind == S.KV_HEAD and group == 1:
        return schema.HEAD, frame.with_columns(pl.Series(P.HEAD, indices, dtype=pl.Int64))
    if kind == S.KV_HEAD:
        frame = frame.with_columns(pl.Series(P.KV_HEAD, indices, dtype=pl.Int64))
    return schema.SITE, frame.with_columns(pl.lit(str(kind)).alias(P.SITE))


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


def affects_rows(model: str, task: str, metric: str, n_examples: int, effects: pl.DataFrame, via: str,
                 src: list[str] | None = None) -> pl.DataFrame:
    """``AFFECTS`` rows of a node-effect frame (:data:`compgraph.effects.measure.NODE_SCHEMA`)
    written by the effects run of method ``via``; ``src`` overrides the components' uids
    (features: their dictionary's uids)."""
    if src is None:
        src = [component_uid(model, k, layer, i) for k, layer, i in effects.select("component", "layer", "index").rows()]
    return pl.DataFrame({
        "src": src, "dst": schema.task_uid(task), P.EFFECT: effects["effect"], P.EFFECT_NORM: effects["effect_norm"],
        P.METHOD: effects["method"], P.VIA: via, P.ABLATION: effects["ablation"], P.DIRECTION: effects["direction"],
        P.METRIC: metric, P.N_EXAMPLES: n_examples,
    })


def task_rows(task, n_prompts: int) -> pl.DataFrame:
    """The :Task node of a :class:`compgraph.data.tasks.Task`: ``n_prompts`` counts the
    examples of its file (what one model's run read is ``EVALUATED_ON.n_examples``)."""
    return pl.DataFrame([{P.UID: schema.task_uid(task.name), P.NAME: task.name, P.DESCRIPTION: task.description,
                          P.SOURCE: task.source, P.METRIC: task.metric, P.N_PROMPTS: n_prompts}])


def task_identity(name: str) -> pl.DataFrame:
    return pl.DataFrame([{P.UID: schema.task_uid(name), P.NAME: name}])


def model_identity(model: str) -> pl.DataFrame:
    return pl.DataFrame([{P.UID: schema.model_uid(model)}])


def evaluated_rows(model: str, task: str, metric: str, summary: dict, n_examples: int) -> pl.DataFrame:
    """``EVALUATED_ON``: a model's accuracy and mean clean / corrupt metric on a task
    (:func:`compgraph.effects.runs.task_summary`) over the ``n_examples`` examples it read."""
    return pl.DataFrame([{"src": schema.model_uid(model), "dst": schema.task_uid(task), P.METRIC: metric,
                          P.ACCURACY: summary["accuracy"], P.METRIC_CLEAN: summary["metric_clean"],
                          P.METRIC_CORRUPT: summary["metric_corrupt"], P.N_EXAMPLES: n_examples}])


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
        P.EFFECT: ranked["effect"], P.METHOD: ranked["method"], P.TASK: task, P.INPUT: ranked["input"],
        P.RANK: ranked["rank"].cast(pl.Int64), P.IN_CIRCUIT: ranked["in_circuit"],
    })


def edge_circuit_members(model: str, members: pl.DataFrame, *, group: int) -> pl.DataFrame:
    """The components an edge circuit touches (uid, score, rank): ``score`` = Σ |edge effect|
    over the circuit's edges at that component (in or out), ``rank`` by it (0 = largest;
    ties by uid)."""
    if members.height == 0:
        return pl.DataFrame(schema={P.UID: pl.String, P.SCORE: pl.Float64, P.RANK: pl.Int64})
    touched = pl.DataFrame({
        P.UID: _uids(model, members, "src", group) + _uids(model, members, "dst", group),
        P.SCORE: members["score"].abs().to_list() * 2,
    })
    totals = touched.group_by(P.UID).agg(pl.col(P.SCORE).sum()).sort([P.SCORE, P.UID], descending=[True, False])
    return totals.with_columns(pl.int_range(pl.len()).cast(pl.Int64).alias(P.RANK))


def node_circuit_members(model: str, members: pl.DataFrame) -> pl.DataFrame:
    """A node circuit's members (uid, score, rank)."""
    return pl.DataFrame({
        P.UID: [component_uid(model, k, layer, i) for k, layer, i in members.select("component", "layer", "index").rows()],
        P.SCORE: members["score"], P.RANK: members["rank"],
    })


def circuit_rows(model: str, task: str, method: str, circuit, curve, members: pl.DataFrame) -> tuple:
    """(:Circuit node, INCLUDES rows, FOR_TASK row) of one circuit (a
    :class:`compgraph.effects.circuits.Circuit`) with its faithfulness curve (CPR, CMD, and
    the faithfulness at each size of the curve)."""
    uid = schema.circuit_uid(model, task, circuit.level, method)
    node = pl.DataFrame([{
        P.UID: uid, P.MODEL: model, P.TASK: task, P.METHOD: method, P.LEVEL: circuit.level,
        P.ABLATION: circuit.ablation, P.SIZE: circuit.size, P.N: circuit.n, P.THRESHOLD: circuit.threshold,
        P.METRIC_FULL: circuit.metric_full, P.METRIC_EMPTY: circuit.metric_empty,
        P.METRIC_CIRCUIT: circuit.metric_circuit, P.FAITHFULNESS: circuit.faithfulness,
        P.CPR: curve.cpr, P.CMD: curve.cmd, P.CURVE_FRACTIONS: list(curve.fractions),
        P.CURVE_SIZES: curve.sizes, P.CURVE_FAITHFULNESS: curve.faithfulness,
    }])
    includes = members.select(pl.lit(uid).alias("src"), pl.col(P.UID).alias("dst"), P.SCORE, P.RANK)
    for_task = pl.DataFrame([{"src": uid, "dst": schema.task_uid(task)}])
    return node, includes, for_task


# ---- attribution graphs (imported: compgraph.attribution) ------------------------------------

TRANSCODER_SITE, TRANSCODER_OUTPUT = "mlp_in", "mlp_out"
"""Where an attribution graph's transcoder features read and write (circuit-tracer's
transcoders read a layer's MLP input and predict its output)."""
GRAPH_SET = "attribution"
"""The transcoder set of a graph whose metadata names none (``scan``)."""


def graph_dictionary_uid(model: str, transcoder_set: str | None, layer: int) -> str:
    """The :Dictionary of a transcoder set's layer (one per layer, so feature uids are unique)."""
    return schema.dictionary_uid(model, transcoder_set or GRAPH_SET, TRANSCODER_SITE, layer)


def graph_node_uid(model: str, tokenizer_id: str, transcoder_set: str | None, node) -> str:
    """The uid a :class:`compgraph.data.attribution.GraphNode` lands on: a feature of the set's
    dictionary, an error or embedding ``:Site``, a logit's :Token, or one of compgraph's
    components (its exports)."""
    if node.kind == "feature":
        return schema.feature_uid(graph_dictionary_uid(model, transcoder_set, node.layer), node.index)
    if node.kind == "error":
        return schema.site_uid(model, S.MLP_ERROR, node.layer)
    if node.kind == "embedding":
        return schema.site_uid(model, S.EMBED)
    if node.kind == "logit":
        return schema.token_uid(tokenizer_id, node.index)
    return component_uid(model, node.kind, node.layer, node.index, group=2)  # kv_head: a :Site


def graph_rows(graph, *, model: str, tokenizer_id: str, uid: str, digest: str, source: str,
               token_texts: bool) -> tuple[list, list]:
    """(node frames, edge frames) of one :class:`compgraph.data.attribution.AttributionGraph`:
    the :AttributionGraph node, its dictionaries (one per layer of the transcoder set), the
    components and tokens its nodes land on (:func:`graph_node_uid`), ``CONTAINS`` from the
    graph to each (``pos``, ``influence``, ``activation``; a token's ``token_prob`` and
    ``target``) and each link as ``ATTRIBUTES``. ``token_texts``: set the tokens' ``text``
    from the file (only where the store has no tokenizer for the model)."""
    tset = graph.transcoder_set
    uids = [graph_node_uid(model, tokenizer_id, tset, n) for n in graph.nodes]
    by_id = {n.node_id: (n, u) for n, u in zip(graph.nodes, uids)}
    head = pl.DataFrame([{
        P.UID: uid, P.MODEL: model, P.SLUG: graph.slug, P.PROMPT: graph.prompt,
        P.PROMPT_TOKENS: list(graph.prompt_tokens), P.TRANSCODER_SET: tset or GRAPH_SET,
        P.TRANSCODER_LIST: list(graph.transcoder_list), P.GENERATOR: graph.generator,
        P.NODE_THRESHOLD: graph.node_threshold, P.SCHEMA_VERSION: graph.schema_version,
        P.N_NODES: len(graph.nodes), P.N_LINKS: len(graph.links), P.SOURCE: source, P.DIGEST: digest,
    }], schema_overrides={P.PROMPT_TOKENS: pl.List(pl.String), P.TRANSCODER_LIST: pl.List(pl.String),
                          P.GENERATOR: pl.String, P.NODE_THRESHOLD: pl.Float64, P.SCHEMA_VERSION: pl.Int64})
    features = [n for n in graph.nodes if n.kind == "feature"]
    layers = sorted({n.layer for n in features})
    dict_uids = [graph_dictionary_uid(model, tset, layer) for layer in layers]
    dictionaries = pl.DataFrame({
        P.UID: dict_uids, P.MODEL: model, P.NAME: tset or GRAPH_SET, P.KIND: "transcoder",
        P.SITE: TRANSCODER_SITE, P.LAYER: pl.Series(layers, dtype=pl.Int64), P.OUTPUT_SITE: TRANSCODER_OUTPUT,
        P.OUTPUT_LAYER: pl.Series(layers, dtype=pl.Int64), P.SOURCE: "attribution graph",
        P.FORMAT: "circuit-tracer",
    }, schema_overrides={P.UID: pl.String})
    feature_rows = pl.DataFrame({
        P.UID: [by_id[n.node_id][1] for n in features], P.MODEL: model,
        P.DICTIONARY: [graph_dictionary_uid(model, tset, n.layer) for n in features],
        P.LAYER: pl.Series([n.layer for n in features], dtype=pl.Int64),
        P.INDEX: pl.Series([n.index for n in features], dtype=pl.Int64),
        P.FEATURE_ID: pl.Series([n.feature for n in features], dtype=pl.Int64),
    }, schema_overrides={P.UID: pl.String, P.DICTIONARY: pl.String}).unique(P.UID, keep="first", maintain_order=True)
    others = [n for n in graph.nodes if n.kind not in ("feature", "logit")]
    kinds = {"error": str(S.MLP_ERROR), "embedding": str(S.EMBED)}
    nodes = [(schema.ATTRIBUTION_GRAPH, head), (schema.MODEL, pl.DataFrame([{P.UID: schema.model_uid(model),
                                                                               P.NAME: model}])),
             (schema.DICTIONARY, dictionaries), (schema.FEATURE, feature_rows)]
    if others:
        nodes += identity_nodes(model, pl.DataFrame({
            "kind": [kinds.get(n.kind, n.kind) for n in others],
            "layer": pl.Series([n.layer for n in others], dtype=pl.Int64),
            "index": pl.Series([None if n.kind in kinds else n.index for n in others], dtype=pl.Int64)}), group=2)
    logits = [n for n in graph.nodes if n.kind == "logit"]
    tokens = pl.DataFrame({P.UID: [by_id[n.node_id][1] for n in logits],
                           P.ID: pl.Series([n.index for n in logits], dtype=pl.Int64)},
                          schema_overrides={P.UID: pl.String})
    if token_texts:
        tokens = tokens.with_columns(pl.Series(P.TEXT, [n.token for n in logits], dtype=pl.String))
    nodes.append((schema.TOKEN, tokens.unique(P.UID, keep="first", maintain_order=True)))
    has = pl.DataFrame({"src": schema.model_uid(model), "dst": dict_uids}, schema_overrides={"dst": pl.String})
    contains = pl.DataFrame({
        "src": uid, "dst": [u for n, u in zip(graph.nodes, uids) if n.kind != "logit"],
        P.POS: pl.Series([n.pos for n in graph.nodes if n.kind != "logit"], dtype=pl.Int64),
        P.INFLUENCE: pl.Series([n.influence for n in graph.nodes if n.kind != "logit"], dtype=pl.Float64),
        P.ACTIVATION: pl.Series([n.activation for n in graph.nodes if n.kind != "logit"], dtype=pl.Float64),
    }, schema_overrides={"dst": pl.String})
    contains_token = pl.DataFrame({
        "src": uid, "dst": [by_id[n.node_id][1] for n in logits],
        P.POS: pl.Series([n.pos for n in logits], dtype=pl.Int64),
        P.INFLUENCE: pl.Series([n.influence for n in logits], dtype=pl.Float64),
        P.TOKEN_PROB: pl.Series([n.token_prob for n in logits], dtype=pl.Float64),
        P.TARGET: pl.Series([n.is_target_logit for n in logits], dtype=pl.Boolean),
    }, schema_overrides={"dst": pl.String})
    ends = [(by_id[link.source], by_id[link.target], link) for link in graph.links]
    to_token = [e for e in ends if e[1][0].kind == "logit"]
    to_component = [e for e in ends if e[1][0].kind != "logit"]
    edges = [(schema.HAS_DICTIONARY, has), (schema.CONTAINS, contains), (schema.CONTAINS_TOKEN, contains_token),
             (schema.ATTRIBUTES, _attributes(uid, to_component)), (schema.ATTRIBUTES_TOKEN, _attributes(uid, to_token))]
    return nodes, edges


def _attributes(graph_uid: str, ends: list) -> pl.DataFrame:
    return pl.DataFrame({
        "src": [s[1] for s, _, _ in ends], "dst": [t[1] for _, t, _ in ends], P.GRAPH: graph_uid,
        P.SOURCE_POS: pl.Series([s[0].pos for s, _, _ in ends], dtype=pl.Int64),
        P.TARGET_POS: pl.Series([t[0].pos for _, t, _ in ends], dtype=pl.Int64),
        P.INPUT: pl.Series([link.input for _, _, link in ends], dtype=pl.String),
        P.WEIGHT: pl.Series([link.weight for _, _, link in ends], dtype=pl.Float64),
    }, schema_overrides={"src": pl.String, "dst": pl.String, P.GRAPH: pl.String})
