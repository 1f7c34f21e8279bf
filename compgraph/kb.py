"""The Python API: a knowledge base over one graph store, answering with polars frames
and networkx graphs.

    import compgraph
    with compgraph.open("./compgraph-kb") as kb:          # or compgraph.KB(store)
        kb.circuits("smollm2-135m")
        kb.effects("smollm2-135m", "ioi").head(10)
        g = kb.component_graph("smollm2-135m", edges=("CONNECTS",), min_weight=0.1)

Every method but :meth:`KB.query` and :meth:`KB.named` reads through the store
protocol's typed reads (``store.nodes`` / ``store.edges``), so they work on every store,
the Cypher-less :class:`~compgraph.store.memory.MemoryStore` included.

Components are described alike everywhere: ``kind`` is the lower-cased kind label
(``neuron``, ``head``, ``expert``, ``feature``, ``site``), ``index`` the component's
number within its layer (a head's ``head``, an expert's ``expert``, a neuron's or a
feature's ``index``, a key/value-head site's ``kv_head``; null for other sites).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

import polars as pl

from compgraph import schema
from compgraph.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import networkx as nx

    from compgraph.store.base import GraphStore

P = schema.Prop
(UID, MODEL, LAYER, INDEX, HEAD, KV_HEAD, EXPERT, RANK, METHOD, VIA, ABLATION, DIRECTION, METRIC, TASK, INPUT,
 KIND, EFFECT, EFFECT_NORM, N_EXAMPLES, SCORE, WEIGHT, LEVEL, SIZE, FAITHFULNESS, METRIC_FULL, METRIC_EMPTY,
 METRIC_CIRCUIT, EXCESS, MUTUAL, SAME_TOP) = (str(p) for p in (  # plain str: polars reads StrEnum values as Enum
    P.UID, P.MODEL, P.LAYER, P.INDEX, P.HEAD, P.KV_HEAD, P.EXPERT, P.RANK, P.METHOD, P.VIA, P.ABLATION,
    P.DIRECTION, P.METRIC, P.TASK, P.INPUT, P.KIND, P.EFFECT, P.EFFECT_NORM, P.N_EXAMPLES, P.SCORE, P.WEIGHT,
    P.LEVEL, P.SIZE, P.FAITHFULNESS, P.METRIC_FULL, P.METRIC_EMPTY, P.METRIC_CIRCUIT, P.EXCESS, P.MUTUAL,
    P.SAME_TOP))
CURVE_PROPS = (str(P.CPR), str(P.CMD))

COMPONENT_KINDS: dict[str, schema.NodeKind] = {
    k.name.lower(): k for k in (schema.NEURON, schema.HEAD, schema.EXPERT, schema.FEATURE, schema.SITE)}
"""``kind`` value -> node kind, in the order frames list them."""
_INDEX_PROP = {schema.HEAD.name.lower(): HEAD, schema.EXPERT.name.lower(): EXPERT, schema.SITE.name.lower(): KV_HEAD}
"""The property that numbers a component within its layer, where it is not ``index`` (a
site numbers only a key/value head: ``kv_head``)."""

GRAPH_RELS = (str(schema.Rel.CONNECTS), str(schema.Rel.CAUSES))
_GRAPH_EDGE = dict(zip(GRAPH_RELS, ((schema.CONNECTS, WEIGHT, KIND), (schema.CAUSES, EFFECT, INPUT))))
"""rel -> (relationship kind, property read as ``weight``, property read as ``kind``)."""

_LOOKUP_BY_UID = 5_000
"""Up to this many components are looked up by uid; more, and the model's are read whole."""

DESCRIBE = {"kind": pl.String, LAYER: pl.Int64, INDEX: pl.Int64}
COMPONENT_COLUMNS = {UID: pl.String, **DESCRIBE, MODEL: pl.String}
EFFECT_COLUMNS = {"component": pl.String, **DESCRIBE, EFFECT: pl.Float64, EFFECT_NORM: pl.Float64,
                  METHOD: pl.String, VIA: pl.String, ABLATION: pl.String, DIRECTION: pl.String, METRIC: pl.String,
                  N_EXAMPLES: pl.Int64}
CIRCUIT_COLUMNS = {UID: pl.String, TASK: pl.String, LEVEL: pl.String, METHOD: pl.String, ABLATION: pl.String,
                   SIZE: pl.Int64, FAITHFULNESS: pl.Float64, METRIC_FULL: pl.Float64,
                   METRIC_EMPTY: pl.Float64, METRIC_CIRCUIT: pl.Float64}
MEMBER_COLUMNS = {"circuit": pl.String, TASK: pl.String, LEVEL: pl.String, METHOD: pl.String,
                  "component": pl.String, **DESCRIBE, SCORE: pl.Float64, RANK: pl.Int64}
GRAPH_EDGE_COLUMNS = {"src": pl.String, "dst": pl.String, "rel": pl.String, WEIGHT: pl.Float64,
                      KIND: pl.String, TASK: pl.String, METHOD: pl.String}


class KB:
    """A knowledge base over an open :class:`~compgraph.store.base.GraphStore`.

    ``KB(store)`` wraps a store that is already open (closing the KB closes it);
    :func:`open` opens one by path or URI. A context manager."""

    def __init__(self, store: "GraphStore"):
        self.store = store

    @property
    def location(self) -> str:
        return self.store.location

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "KB":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"KB({self.location!r})"

    # ---- Cypher -------------------------------------------------------------------------
    def query(self, cypher: str, **params: Any) -> pl.DataFrame:
        """Run read-only Cypher (values as ``$name`` parameters); the rows as a frame."""
        return self.store.query(cypher, params)

    def named(self, name: str, **params: Any) -> pl.DataFrame:
        """Run a query of the named library (``queries/*.cypher``; ``compgraph queries`` lists them)."""
        from compgraph.library import named_query

        return self.query(named_query(name).text, **params)

    # ---- components -----------------------------------------------------------------------
    def components(self, model: str, kind: str | None = None) -> pl.DataFrame:
        """The components of a model: uid, kind, layer, index, model, then every other
        property (null where a kind lacks it). Ordered by kind (neuron, head, expert,
        feature, site), then layer, index, uid."""
        kinds = _check_kinds([kind] if kind else None)
        return _stack([self._kind_frame(k, model, None) for k in kinds], COMPONENT_COLUMNS)

    def _kind_frame(self, kind: str, model: str, uids: list[str] | None) -> pl.DataFrame:
        found = self.store.nodes(COMPONENT_KINDS[kind], uids=uids, where={MODEL: model})
        if found.height == 0:
            return found
        index_prop = _INDEX_PROP.get(kind, INDEX)
        index = pl.col(index_prop) if index_prop in found.columns else pl.lit(None, dtype=pl.Int64)
        return found.with_columns(pl.lit(kind).alias("kind"), index.alias(INDEX)) \
            .sort([LAYER, INDEX, UID], nulls_last=True)

    def _lookup(self, model: str, uids: list[str]) -> pl.DataFrame:
        """The named components of a model, as :meth:`components` lists them (by uid, kind
        after kind; the whole model read at once when many are named)."""
        if len(uids) > _LOOKUP_BY_UID:
            return self.components(model)
        parts = []
        for kind in COMPONENT_KINDS:
            if not uids:
                break
            parts.append(self._kind_frame(kind, model, uids))
            found = set(parts[-1][UID].to_list()) if parts[-1].height else set()
            uids = [u for u in uids if u not in found]
        return _stack(parts, COMPONENT_COLUMNS)

    def _describe(self, model: str, frame: pl.DataFrame, on: str) -> pl.DataFrame:
        """``frame`` with kind, layer and index of the component named in column ``on``."""
        table = self._lookup(model, frame[on].unique().drop_nulls().to_list())
        table = table.select(pl.col(UID).alias(on), *DESCRIBE)
        return frame.drop([c for c in DESCRIBE if c in frame.columns]).join(table, on=on, how="left",
                                                                            maintain_order="left")

    # ---- effects and circuits -------------------------------------------------------------
    def effects(self, model: str, task: str, method: str | None = None) -> pl.DataFrame:
        """Every component's effect on a task (``AFFECTS``), by one method or all: component,
        kind, layer, index, effect, effect_norm, method, via (the ``--method`` of the run that
        wrote it: a verified run's activation rows have via ``verified``), ablation,
        direction, metric, n_examples; largest |effect| first. ``task`` is the task's name."""
        found = self.store.edges(schema.AFFECTS, where=_present({METHOD: method}), source_where={MODEL: model},
                                 target_where={UID: schema.task_uid(task)})
        found = _conform(found, {"src": pl.String, "dst": pl.String})
        found = self._describe(model, found.rename({"src": "component"}), "component")
        return _conform(found, EFFECT_COLUMNS).select(list(EFFECT_COLUMNS)) \
            .sort([pl.col(EFFECT).abs(), pl.col("component")], descending=[True, False], nulls_last=True)

    def circuits(self, model: str, task: str | None = None) -> pl.DataFrame:
        """One row per :Circuit of a model (of one task): uid, task, level, method, ablation,
        size, faithfulness, metric_full, metric_empty, metric_circuit, cpr and cmd where
        any circuit has them, then its other properties. Ordered by task, level, method."""
        found = self.store.nodes(schema.CIRCUIT, where=_present({MODEL: model, TASK: task}))
        lead = [*CIRCUIT_COLUMNS, *(c for c in CURVE_PROPS if c in found.columns)]
        found = _conform(found, CIRCUIT_COLUMNS)
        return found.select(*lead, *(c for c in found.columns if c not in lead)) \
            .sort([TASK, LEVEL, METHOD, UID], nulls_last=True)

    def circuit_members(self, model: str, task: str | None = None, level: str | None = "node",
                        method: str | None = None) -> pl.DataFrame:
        """The members of a model's circuits (``INCLUDES``), filtered by task, level and method
        (None: any): circuit (uid), task, level, method, component (uid), kind, layer, index,
        score, rank. Ordered by circuit, then rank."""
        where = _present({MODEL: model, TASK: task, LEVEL: level, METHOD: method})
        circuits = _conform(self.store.nodes(schema.CIRCUIT, where=where), CIRCUIT_COLUMNS) \
            .select(pl.col(UID).alias("circuit"), TASK, LEVEL, METHOD)
        members = _conform(self.store.edges(schema.INCLUDES, source_where=where),
                           {"src": pl.String, "dst": pl.String, SCORE: pl.Float64, RANK: pl.Int64})
        members = members.select(pl.col("src").alias("circuit"), pl.col("dst").alias("component"), SCORE, RANK)
        members = self._describe(model, members.join(circuits, on="circuit", how="inner"), "component")
        return members.select(list(MEMBER_COLUMNS)).sort(["circuit", RANK, "component"], nulls_last=True)

    # ---- matches across models -------------------------------------------------------------
    def matches(self, model_a: str, model_b: str, method: str | None = None,
                rank: int | None = None) -> pl.DataFrame:
        """``MATCHES`` from ``model_a``'s components to ``model_b``'s (of ``method`` and
        ``rank``; None: any): component, kind, layer, index, match, dst_kind, dst_layer,
        dst_index, method, score, excess, rank, mutual, same_top (decoding; null for the
        activation method). Ordered by layer, index, method, rank."""
        where = _present({METHOD: method, RANK: rank})
        edges = _conform(self.store.edges(schema.MATCHES, where=where or None, source_where={MODEL: model_a},
                                          target_where={MODEL: model_b}),
                         {"src": pl.String, "dst": pl.String, METHOD: pl.String, SCORE: pl.Float64,
                          EXCESS: pl.Float64, RANK: pl.Int64, MUTUAL: pl.Boolean, SAME_TOP: pl.Boolean})
        frame = edges.select(pl.col("src").alias("component"), pl.col("dst").alias("match"), METHOD, SCORE,
                             EXCESS, RANK, MUTUAL, SAME_TOP)
        frame = self._describe(model_a, frame, "component")
        other = self._lookup(model_b, frame["match"].unique().to_list()).select(
            pl.col(UID).alias("match"), pl.col("kind").alias("dst_kind"), pl.col(LAYER).alias("dst_layer"),
            pl.col(INDEX).alias("dst_index"))
        frame = frame.join(other, on="match", how="left", maintain_order="left")
        columns = ["component", *DESCRIBE, "match", "dst_kind", "dst_layer", "dst_index", METHOD, SCORE, EXCESS,
                   RANK, MUTUAL, SAME_TOP]
        return frame.select(columns).sort([LAYER, INDEX, METHOD, RANK], nulls_last=True)

    # ---- the component graph ---------------------------------------------------------------
    def component_graph(self, model: str, edges: Iterable[str] | str = GRAPH_RELS, kinds: Iterable[str] | None = None,
                        min_weight: float | None = None, task: str | None = None, method: str | None = None,
                        *, isolates: bool = True) -> "nx.DiGraph":
        """A model's components as a :class:`networkx.DiGraph`.

        Nodes: every component of the model (of ``kinds``, when given), keyed by uid, with
        attributes kind, layer, index, model; ``isolates=False`` leaves out those no kept
        edge touches. Edges: the ``CONNECTS`` (weights) and/or ``CAUSES`` (edge
        attribution) relationships between them, with attributes ``rel``; ``weight``
        (``CONNECTS.weight`` or ``CAUSES.effect``, signed); ``kind`` (``CONNECTS.kind`` or
        ``CAUSES.input``); ``task`` and ``method`` (``CAUSES`` only, else None); and
        ``n_parallel``. ``task`` (a task name) and ``method`` filter ``CAUSES`` only;
        ``min_weight`` keeps edges with |weight| >= it.

        Where several relationships join one ordered pair (q/k/v composition of two heads,
        CONNECTS beside CAUSES, several tasks), the one of largest |weight| is kept (ties:
        by rel, kind, task, method) and ``n_parallel`` counts how many there were: a plain
        DiGraph is what most networkx algorithms expect. Graph attribute: ``model``. The frames
        behind it: :meth:`component_tables`."""
        import networkx as nx

        nodes, table = self.component_tables(model, edges, kinds, min_weight, task, method, isolates=isolates)
        graph = nx.DiGraph(model=model)
        graph.add_nodes_from((row.pop(UID), row) for row in nodes.iter_rows(named=True))
        graph.add_edges_from((row.pop("src"), row.pop("dst"), row) for row in table.iter_rows(named=True))
        return graph

    def component_tables(self, model: str, edges: Iterable[str] | str = GRAPH_RELS,
                         kinds: Iterable[str] | None = None, min_weight: float | None = None, task: str | None = None,
                         method: str | None = None, *, isolates: bool = True) -> tuple[pl.DataFrame, pl.DataFrame]:
        """:meth:`component_graph` as two frames, without networkx (for graphs of millions of
        edges): nodes (uid, kind, layer, index, model) and edges (src, dst, rel, weight, kind,
        task, method, n_parallel), one edge per ordered pair as there."""
        rels = _check_rels(edges)
        nodes = self.components(model)
        if kinds is not None:
            nodes = nodes.filter(pl.col("kind").is_in(_check_kinds(kinds)))
        uids = nodes[UID].implode()
        table = pl.concat([pl.DataFrame(schema=GRAPH_EDGE_COLUMNS),
                           *(self._graph_edges(rel, model, task, method) for rel in rels)], how="vertical")
        table = _strongest(table.filter(pl.col("src").is_in(uids) & pl.col("dst").is_in(uids)), min_weight)
        nodes = nodes.select(UID, *DESCRIBE, MODEL)
        if not isolates:
            nodes = nodes.filter(pl.col(UID).is_in(pl.concat([table["src"], table["dst"]]).unique().implode()))
        return nodes, table

    def cooccurrence_tables(self, model: str, min_graphs: int = 1) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Transcoder features that occur together in a model's imported attribution graphs
        (:mod:`compgraph.attribution`), as the two frames of :meth:`component_tables`: nodes
        (the features in at least one pair) and edges (src < dst by uid, ``rel`` COOCCURS,
        ``weight`` = the number of graphs containing both, pairs in >= ``min_graphs`` graphs),
        counted from the graphs' ``CONTAINS`` at any floor
        (:func:`compgraph.data.attribution_summary.cooccurring_pairs`: a sparse product, memory
        one entry per co-occurring pair)."""
        from compgraph.data.attribution_summary import cooccurring_pairs

        features = self.components(model, "feature")
        contains = _conform(self.store.edges(schema.CONTAINS_FEATURE, source_where={MODEL: model}, properties=()),
                            {"src": pl.String, "dst": pl.String})
        pairs = cooccurring_pairs(contains.select(pl.col("src").alias("graph"), pl.col("dst").alias("feature")),
                                  min_graphs)
        edges = pairs.select("src", "dst", pl.lit(str(schema.Rel.COOCCURS)).alias("rel"),
                             pl.col("graphs").cast(pl.Float64).alias(WEIGHT), pl.lit(None, pl.String).alias(KIND), pl.lit(None, pl.String).alias(TASK),
                             pl.lit(None, pl.String).alias(METHOD)).cast(GRAPH_EDGE_COLUMNS)
        used = pl.concat([edges["src"], edges["dst"]]).unique().implode()
        nodes = features.filter(pl.col(UID).is_in(used)).select(UID, *DESCRIBE, MODEL)
        return nodes, edges

    def graph_paths(self, graph: str, limit: int = 10, max_hops: int = 4) -> pl.DataFrame:
        """The strongest paths of one imported attribution graph (uid ``graph:{model}:{slug}``)
        from its embeddings to its target logit: path (uids), positions, weights, hops,
        strength (:func:`compgraph.data.attribution_paths.top_paths`). Reads the graph's links alone
        (the index on ``ATTRIBUTES.graph``)."""
        from compgraph.data.attribution_paths import PATH_COLUMNS, top_paths

        found = self.store.nodes(schema.ATTRIBUTION_GRAPH, uids=[graph])
        if not found.height:
            raise ConfigError(f"no attribution graph {graph!r} in the store")
        model = found[MODEL][0]
        targets = self.store.edges(schema.CONTAINS_TOKEN, where={str(P.TARGET): True}, source_where={UID: graph})
        if not targets.height:
            return pl.DataFrame(schema=PATH_COLUMNS)
        wanted = (str(P.SOURCE_POS), str(P.TARGET_POS), WEIGHT)
        links = pl.concat([_conform(self.store.edges(rel, where={str(P.GRAPH): graph}, properties=wanted),
                                    {"src": pl.String, "dst": pl.String, str(P.SOURCE_POS): pl.Int64,
                                     str(P.TARGET_POS): pl.Int64, WEIGHT: pl.Float64})
                           for rel in (schema.ATTRIBUTES, schema.ATTRIBUTES_TOKEN)])
        target = (targets["dst"][0], int(targets[str(P.POS)][0]))
        return top_paths(links, {schema.site_uid(model, schema.SiteKind.EMBED)}, target, max_hops=max_hops,
                         limit=limit)

    def edges_among(self, model: str, uids: Iterable[str], edges: Iterable[str] | str = GRAPH_RELS,
                    task: str | None = None, method: str | None = None) -> pl.DataFrame:
        """The edges of :meth:`component_graph` (same columns and rule: one per ordered pair and
        relationship set asked for) whose two ends are both among ``uids``, read without
        reading the rest of the graph (for a circuit's members)."""
        uids = list(dict.fromkeys(uids))
        table = pl.concat([pl.DataFrame(schema=GRAPH_EDGE_COLUMNS),
                           *(self._graph_edges(rel, model, task, method, among=uids) for rel in _check_rels(edges))],
                          how="vertical")
        return _strongest(table, None)

    def _graph_edges(self, rel: str, model: str, task: str | None, method: str | None,
                     among: list[str] | None = None) -> pl.DataFrame:
        kind, weight, label = _GRAPH_EDGE[rel]
        causal = kind is schema.CAUSES
        where = _present({TASK: task, METHOD: method}) if causal else None
        ends = {} if among is None else {UID: among}
        wanted = (weight, label, TASK, METHOD) if causal else (weight, label)  # a lean read: millions of edges
        found = _conform(self.store.edges(kind, where=where, source_where={MODEL: model, **ends},
                                          target_where=ends or None, properties=wanted),
                         {"src": pl.String, "dst": pl.String, weight: pl.Float64, label: pl.String,
                          TASK: pl.String, METHOD: pl.String})
        if not causal:  # task and method belong to attribution edges only
            found = found.with_columns(pl.lit(None, dtype=pl.String).alias(c) for c in (TASK, METHOD))
        return found.select("src", "dst", pl.lit(str(rel)).alias("rel"), pl.col(weight).alias(WEIGHT),
                            pl.col(label).alias(KIND), TASK, METHOD).cast(GRAPH_EDGE_COLUMNS)


def open(uri_or_path: str | None = None, *, database: str | None = None) -> KB:  # noqa: A001
    """Open an existing store (a directory, or a ``bolt://`` / ``neo4j://`` URI; None means
    ``$COMPGRAPH_STORE`` or ``./compgraph-kb``) as a :class:`KB`; never creates one."""
    from compgraph.store.factory import open_store

    return KB(open_store(uri_or_path, database=database, create=False))


# ---- helpers -----------------------------------------------------------------------------

def _present(filters: dict[str, Any]) -> dict[str, Any] | None:
    """A typed-read filter without the entries left as None (None means "any" here)."""
    kept = {k: v for k, v in filters.items() if v is not None}
    return kept or None


def _conform(frame: pl.DataFrame, columns: dict[str, pl.DataType]) -> pl.DataFrame:
    """``frame`` with every column of ``columns`` (null where absent) cast to its type."""
    missing = [pl.lit(None, dtype=t).alias(c) for c, t in columns.items() if c not in frame.columns]
    return frame.with_columns(missing).cast({c: t for c, t in columns.items()})


def _stack(frames: list[pl.DataFrame], columns: dict[str, pl.DataType]) -> pl.DataFrame:
    """Frames of components stacked: ``columns`` first, then every other property."""
    frames = [f for f in frames if f.height]
    if not frames:
        return pl.DataFrame(schema=columns)
    stacked = _conform(pl.concat(frames, how="diagonal_relaxed"), columns)
    return stacked.select(*columns, *(c for c in stacked.columns if c not in columns))


def _strongest(table: pl.DataFrame, min_weight: float | None) -> pl.DataFrame:
    """One edge per ordered pair: the largest |weight| (ties by rel, kind, task, method),
    with ``n_parallel``; edges below ``min_weight`` in |weight| dropped first."""
    if min_weight is not None:
        table = table.filter(pl.col(WEIGHT).abs() >= min_weight)
    order = ["src", "dst", "_abs", "rel", KIND, TASK, METHOD]
    return table.with_columns(pl.col(WEIGHT).abs().alias("_abs")) \
        .sort(order, descending=[False, False, True, False, False, False, False], nulls_last=True) \
        .group_by(["src", "dst"], maintain_order=True) \
        .agg(pl.exclude("_abs").first(), pl.len().cast(pl.Int64).alias("n_parallel"))


def _check_kinds(kinds: Iterable[str] | None) -> list[str]:
    if kinds is None:
        return list(COMPONENT_KINDS)
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    unknown = [k for k in kinds if k not in COMPONENT_KINDS]
    if unknown:
        raise ConfigError(f"unknown component kind(s) {', '.join(map(repr, unknown))}; "
                          f"known: {', '.join(COMPONENT_KINDS)}")
    return kinds


def _check_rels(edges: Iterable[str] | str) -> list[str]:
    rels = [edges] if isinstance(edges, str) else list(edges)
    unknown = [r for r in rels if r not in GRAPH_RELS]
    if unknown:
        raise ConfigError(f"component_graph reads {', '.join(GRAPH_RELS)} edges, not {', '.join(map(repr, unknown))}")
    return list(dict.fromkeys(rels))
