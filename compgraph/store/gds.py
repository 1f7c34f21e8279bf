"""Neo4j Graph Data Science: Leiden communities computed inside the server.

    if gds_version(store):                                   # None: no GDS (or not Neo4j)
        by_uid = stored_leiden(store, "CONNECTS", model="m", seed=0)
        membership = GdsLeiden(store)(igraph_graph, seed=1)  # for a graph built here

**Projection of a stored component graph** (:func:`stored_leiden`). The same graph
:meth:`compgraph.kb.KB.component_tables` and :func:`compgraph.analysis.modularity.from_frames`
build, computed by Cypher inside the server and handed to ``gds.graph.project`` (Cypher
aggregation): the model's components joined by ``CONNECTS`` (weight: ``weight``) or
``CAUSES`` (weight: ``effect``; of one ``method`` when given), one edge per ordered pair with
the largest |weight| (a pair whose edges all lack it counts 1), self-loops dropped, and
each unordered pair weighted by the sum over its two directions, projected undirected.
Components without such an edge are not projected (they would be singletons).

**Leiden.** ``gds.leiden.stream`` with ``relationshipWeightProperty: weight``, ``gamma`` =
the resolution, ``randomSeed`` = the seed and ``concurrency: 1`` (a seeded run is
repeatable only on one thread), GDS's defaults otherwise (``maxLevels`` 10, ``tolerance``
1e-4, ``theta`` 0.01). GDS's Leiden refines and aggregates like igraph's but is another
implementation: partitions differ, quality agrees (the tests and the README compare Q).
Q itself is not taken from GDS but computed by the caller with the one definition of
:mod:`compgraph.analysis.modularity`.

**Graphs built here** (:class:`GdsLeiden`): an igraph graph's edges (vertex indices and
``weight``) are sent as parameters and projected from them (node ids are the indices);
vertices without edges, which GDS never sees, come back as singletons.

Every projection has a fresh name (``compgraph-<uuid>``) and is dropped when done, failure
included. Raw Cypher lives here only: GDS exists only on Neo4j.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from compgraph import schema
from compgraph.errors import ConfigError
from compgraph.store.base import GraphStore

P = schema.Prop
_WEIGHTS = {str(schema.Rel.CONNECTS): P.WEIGHT, str(schema.Rel.CAUSES): P.EFFECT}

_PROJECT_STORED = """
MATCH (a:{component} {{{model}: $model}})-[e:{rel}]->(b:{component} {{{model}: $model}})
WHERE a <> b {method}
WITH a, b, coalesce(max(abs(e.{weight})), 1.0) AS w
WITH CASE WHEN elementId(a) < elementId(b) THEN a ELSE b END AS s,
     CASE WHEN elementId(a) < elementId(b) THEN b ELSE a END AS t, w
WITH s, t, sum(w) AS w
WITH gds.graph.project($graph, s, t, {{relationshipProperties: {{weight: w}}}},
                       {{undirectedRelationshipTypes: ['*']}}) AS g
RETURN g.nodeCount AS nodes, g.relationshipCount AS relationships
"""

_PROJECT_PAIRS = """
UNWIND range(0, size($s) - 1) AS i
WITH gds.graph.project($graph, $s[i], $t[i], {relationshipProperties: {weight: $w[i]}},
                       {undirectedRelationshipTypes: ['*']}) AS g
RETURN g.nodeCount AS nodes, g.relationshipCount AS relationships
"""

_LEIDEN = """
CALL gds.leiden.stream($graph, {{relationshipWeightProperty: 'weight', gamma: $gamma, randomSeed: $seed,
                                 concurrency: 1}})
YIELD nodeId, communityId
RETURN {key} AS node, communityId AS community
"""


def gds_version(store: GraphStore) -> str | None:
    """The GDS library's version on this store's server, or None (no GDS, or not Neo4j)."""
    try:
        rows = store.query("RETURN gds.version() AS version")
    except Exception:  # noqa: BLE001 - an unknown function, or a dialect without it: no GDS
        return None
    return str(rows["version"][0]) if rows.height else None


@contextmanager
def _projection(store: GraphStore, statement: str, params: dict[str, Any]) -> Iterator[str]:
    """A projection under a fresh name, dropped after the block (after a failure too, without
    hiding that failure behind one of the drop's)."""
    name = f"compgraph-{uuid.uuid4().hex}"

    def drop() -> None:
        store.query("CALL gds.graph.drop($graph, false) YIELD graphName RETURN graphName", {"graph": name})

    try:
        store.query(statement, {**params, "graph": name}, write=False)
        yield name
    except BaseException:
        with suppress(Exception):
            drop()
        raise
    drop()


def _leiden(store: GraphStore, graph: str, key: str, *, seed: int, resolution: float) -> dict[Any, int]:
    rows = store.query(_LEIDEN.format(key=key), {"graph": graph, "gamma": float(resolution), "seed": int(seed)})
    return dict(zip(rows["node"].to_list(), rows["community"].to_list())) if rows.height else {}


@contextmanager
def stored_graph(store: GraphStore, rel: str, *, model: str, method: str | None = None) -> Iterator[str]:
    """The model's stored ``rel`` graph projected into GDS's catalog (module docstring) for
    the ``with`` block; yields its name."""
    if rel not in _WEIGHTS:
        raise ConfigError(f"no component graph {rel!r}: use one of {', '.join(_WEIGHTS)}")
    if method is not None and rel != str(schema.Rel.CAUSES):
        raise ConfigError("a method applies to CAUSES edges only")
    statement = _PROJECT_STORED.format(component=schema.Label.COMPONENT, rel=rel, weight=_WEIGHTS[rel],
                                       model=P.MODEL,
                                       method=f"AND e.{P.METHOD} = $method" if method is not None else "")
    params = {"model": model, **({"method": method} if method is not None else {})}
    with _projection(store, statement, params) as graph:
        yield graph


def stored_leiden(store: GraphStore, rel: str, *, model: str, method: str | None = None, seed: int = 0,
                  resolution: float = 1.0) -> dict[str, int]:
    """Component uid -> Leiden community (GDS's labels) of the model's stored ``rel`` graph."""
    with stored_graph(store, rel, model=model, method=method) as graph:
        return _leiden(store, graph, f"gds.util.asNode(nodeId).{P.UID}", seed=seed, resolution=resolution)


class GdsLeiden:
    """``(igraph graph, seed) -> membership`` (one community label per vertex) by GDS's
    Leiden on a projection of the graph's weighted edges; the signature of the community
    search :func:`compgraph.analysis.modularity.null_model_z` takes."""

    def __init__(self, store: GraphStore, *, resolution: float = 1.0):
        self.store = store
        self.resolution = resolution

    def __call__(self, g, seed: int) -> list[int]:
        pairs: Sequence[tuple[int, int]] = g.get_edgelist()
        if not pairs:
            return list(range(g.vcount()))
        params = {"s": [a for a, _ in pairs], "t": [b for _, b in pairs], "w": [float(w) for w in g.es["weight"]]}
        with _projection(self.store, _PROJECT_PAIRS, params) as graph:
            found = _leiden(self.store, graph, "nodeId", seed=seed, resolution=self.resolution)
        fresh = max(found.values(), default=-1) + 1
        return [found[v] if v in found else fresh + v for v in range(g.vcount())]
