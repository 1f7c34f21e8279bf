"""Neo4j GDS (compgraph.store.gds) on the Neo4j at NEO4J_URI: the projection of a stored
component graph equals the undirected view compgraph.analysis.modularity builds from the
same edges (weights to the last bit), and GDS's Leiden finds the communities of a graph
whose answer is known. Elsewhere (embedded, ArcadeDB's Bolt) there is no GDS."""

from __future__ import annotations

import os

import polars as pl
import pytest

from compgraph import kb as kb_module
from compgraph import schema
from compgraph.analysis import modularity as M
from compgraph.errors import ConfigError
from compgraph.store import gds
from compgraph.store.factory import open_store
from tests.helpers.stores import server

MODEL, OTHER = "m", "o"
U = [schema.head_uid(MODEL, 0, h) for h in range(6)]


def _seed(store) -> None:
    """Two triangles (U0-U2, U3-U5) joined by U2-U3, with what the projection must fold:
    two kinds on one ordered pair (the larger |weight| counts), both directions of a pair
    (summed), a self-loop (dropped), a weightless edge beside a weighted one (the weighted
    one counts, as in ``kb``), edges into and out of another model (left out); and CAUSES
    edges of two methods."""
    store.merge_nodes(schema.HEAD, pl.DataFrame({"uid": U, "model": MODEL, "layer": 0, "head": range(6)}))
    store.merge_nodes(schema.HEAD, pl.DataFrame({"uid": ["o/L0/H0"], "model": OTHER, "layer": 0, "head": 0}))
    edges = [(U[0], U[1], "q", 2.0), (U[0], U[1], "k", -3.0), (U[1], U[0], "q", 0.5), (U[1], U[2], "q", 1.0),
             (U[0], U[2], "v", 1.5), (U[2], U[3], "q", 0.25), (U[3], U[4], "q", 2.0), (U[4], U[5], "q", None),
             (U[4], U[5], "k", 0.5), (U[3], U[5], "k", -2.5), (U[4], U[4], "q", 9.0), (U[5], "o/L0/H0", "q", 7.0),
             ("o/L0/H0", U[0], "q", 5.0)]
    store.merge_edges(schema.CONNECTS, pl.DataFrame(edges, schema=["src", "dst", "kind", "weight"], orient="row"))
    causes = [(U[0], U[1], "a", -2.0), (U[0], U[1], "b", 5.0), (U[1], U[2], "a", 1.0), (U[2], U[3], "b", 1.0)]
    store.merge_edges(schema.CAUSES, pl.DataFrame([(s, d, m, w, "t", "clean") for s, d, m, w in causes],
                                                  schema=["src", "dst", "method", "effect", "task", "input"],
                                                  orient="row"))


def _view(store, rel: str, method: str | None = None) -> M.Undirected:
    nodes, edges = kb_module.KB(store).component_tables(MODEL, edges=(rel,), method=method, isolates=False)
    return M.from_frames(nodes["uid"].to_list(), edges)


def _pairs(view: M.Undirected) -> dict[frozenset, float]:
    return {frozenset((view.nodes[e.source], view.nodes[e.target])): w
            for e, w in zip(view.graph.es, view.graph.es["weight"])}


def _projected(store, rel: str, method: str | None = None) -> dict[frozenset, float]:
    with gds.stored_graph(store, rel, model=MODEL, method=method) as graph:
        rows = store.query(
            "CALL gds.graph.relationshipProperty.stream($g, 'weight') YIELD sourceNodeId, targetNodeId, propertyValue "
            "RETURN gds.util.asNode(sourceNodeId).uid AS a, gds.util.asNode(targetNodeId).uid AS b, "
            "propertyValue AS w", {"g": graph})
    pairs = {frozenset((a, b)): w for a, b, w in rows.iter_rows()}
    assert rows.height == 2 * len(pairs)  # undirected: each pair both ways
    return pairs


@pytest.fixture
def neo4j_store(request):
    uri, database = server(request, "neo4j")
    with open_store(uri, database=database) as store:
        yield store


@pytest.mark.neo4j
def test_the_stored_projection_is_the_undirected_view(neo4j_store):
    _seed(neo4j_store)
    expected = _pairs(_view(neo4j_store, "CONNECTS"))
    assert expected == {frozenset(U[:2]): 3.5, frozenset((U[1], U[2])): 1.0, frozenset((U[0], U[2])): 1.5,
                        frozenset(U[2:4]): 0.25, frozenset(U[3:5]): 2.0, frozenset(U[4:6]): 0.5,
                        frozenset((U[3], U[5])): 2.5}
    assert _projected(neo4j_store, "CONNECTS") == expected
    by_a = _pairs(_view(neo4j_store, "CAUSES", "a"))
    assert by_a == {frozenset(U[:2]): 2.0, frozenset(U[1:3]): 1.0}
    assert _projected(neo4j_store, "CAUSES", "a") == by_a
    assert _projected(neo4j_store, "CAUSES") == _pairs(_view(neo4j_store, "CAUSES")) == {
        frozenset(U[:2]): 5.0, frozenset(U[1:3]): 1.0, frozenset(U[2:4]): 1.0}
    listed = neo4j_store.query("CALL gds.graph.list() YIELD graphName RETURN graphName")
    assert listed.height == 0  # every projection dropped after its block
    with pytest.raises(ConfigError, match="CAUSES edges only"):
        _projected(neo4j_store, "CONNECTS", "a")


@pytest.mark.neo4j
def test_gds_leiden_finds_the_two_triangles_and_q_is_computed_here(neo4j_store):
    _seed(neo4j_store)
    found = gds.stored_leiden(neo4j_store, "CONNECTS", model=MODEL, seed=3)
    assert set(found) == set(U)
    assert len({found[u] for u in U[:3]}) == 1 and len({found[u] for u in U[3:]}) == 1
    assert found[U[0]] != found[U[3]]
    view = _view(neo4j_store, "CONNECTS")
    membership = [found[u] for u in view.nodes]
    null = M.null_model_z(view, n=3, seed=1, membership=membership, leiden=gds.GdsLeiden(neo4j_store))
    # Q by hand: m = 11.25; inside the triangles 3.5 + 1 + 1.5 = 6 and 2 + 0.5 + 2.5 = 5; each side's
    # strength is twice its inside weight plus the bridge's 0.25
    left = 2 * 6 + 0.25
    right = 2 * 5 + 0.25
    m = 11.25
    assert null["q"] == pytest.approx((6 + 5) / m - (left / (2 * m)) ** 2 - (right / (2 * m)) ** 2, abs=1e-12)
    assert len(null["samples"]) == 3 and all(-1 <= q <= 1 for q in null["samples"])
    again = M.null_model_z(view, n=3, seed=1, membership=membership, leiden=gds.GdsLeiden(neo4j_store))
    assert again["samples"] == null["samples"]  # seeded, on one thread: repeatable
    # the same graph built here (vertex indices) gives the same partition
    assert M._canonical(view.nodes, M._membership_groups(view.nodes, gds.GdsLeiden(neo4j_store)(view.graph, seed=3))) \
        == null["partition"]


def test_gds_only_on_neo4j(cypher_store):
    uri = os.environ.get("NEO4J_URI")
    on_neo4j = bool(uri) and str(cypher_store.location).startswith(uri)
    version = gds.gds_version(cypher_store)
    assert (version is not None and version.startswith("2.")) if on_neo4j else version is None
