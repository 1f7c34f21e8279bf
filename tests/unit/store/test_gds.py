"""Neo4j GDS (compgraph.store.gds) on the Neo4j at NEO4J_URI: the projection of a stored
component graph equals the undirected view compgraph.analysis.modularity builds from the
same edges (weights to the last bit), and GDS's Leiden finds the communities of a graph
whose answer is known. Elsewhere (embedded, ArcadeDB's Bolt) there is no GDS."""

from __future__ import annotations

import polars as pl
import pytest

from compgraph import kb as kb_module
from compgraph import schema
from compgraph.analysis import modularity as M
from compgraph.store import gds
from compgraph.store.factory import open_store
from tests.helpers.stores import server

MODEL, OTHER = "m", "o"
U = [schema.head_uid(MODEL, 0, h) for h in range(6)]


def _seed(store) -> None:
    """Two triangles (U0-U2, U3-U5) joined by U2-U3, with what the projection must fold:
    two kinds on one ordered pair (the larger |weight| counts), both directions of a pair
    (summed), a self-loop (dropped), a weightless edge (1) and an edge into another model
    (left out)."""
    store.merge_nodes(schema.HEAD, pl.DataFrame({"uid": U, "model": MODEL, "layer": 0, "head": range(6)}))
    store.merge_nodes(schema.HEAD, pl.DataFrame({"uid": ["o/L0/H0"], "model": OTHER, "layer": 0, "head": 0}))
    edges = [(U[0], U[1], "q", 2.0), (U[0], U[1], "k", -3.0), (U[1], U[0], "q", 0.5), (U[1], U[2], "q", 1.0),
             (U[0], U[2], "v", 1.5), (U[2], U[3], "q", 0.25), (U[3], U[4], "q", 2.0), (U[4], U[5], "q", None),
             (U[3], U[5], "k", -2.5), (U[4], U[4], "q", 9.0), (U[5], "o/L0/H0", "q", 7.0)]
    store.merge_edges(schema.CONNECTS, pl.DataFrame(edges, schema=["src", "dst", "kind", "weight"], orient="row"))


@pytest.fixture
def neo4j_store(request):
    uri, database = server(request, "neo4j")
    with open_store(uri, database=database) as store:
        yield store


@pytest.mark.neo4j
def test_the_stored_projection_is_the_undirected_view(neo4j_store):
    _seed(neo4j_store)
    nodes, edges = kb_module.KB(neo4j_store).component_tables(MODEL, edges=("CONNECTS",), isolates=False)
    view = M.from_frames(nodes["uid"].to_list(), edges)
    expected = {frozenset((view.nodes[e.source], view.nodes[e.target])): w for e, w in zip(view.graph.es,
                                                                                         view.graph.es["weight"])}
    assert expected == {frozenset(U[:2]): 3.5, frozenset((U[1], U[2])): 1.0, frozenset((U[0], U[2])): 1.5,
                        frozenset(U[2:4]): 0.25, frozenset(U[3:5]): 2.0, frozenset(U[4:6]): 1.0,
                        frozenset((U[3], U[5])): 2.5}
    with gds.stored_graph(neo4j_store, "CONNECTS", model=MODEL) as graph:
        rows = neo4j_store.query(
            "CALL gds.graph.relationshipProperty.stream($g, 'weight') YIELD sourceNodeId, targetNodeId, propertyValue "
            "RETURN gds.util.asNode(sourceNodeId).uid AS a, gds.util.asNode(targetNodeId).uid AS b, "
            "propertyValue AS w", {"g": graph})
        listed = neo4j_store.query("CALL gds.graph.list() YIELD graphName RETURN graphName")["graphName"].to_list()
        assert graph in listed
    projected = {frozenset((a, b)): w for a, b, w in rows.iter_rows()}
    assert projected == expected and rows.height == 2 * len(expected)  # undirected: each pair both ways
    listed = neo4j_store.query("CALL gds.graph.list() YIELD graphName RETURN graphName")["graphName"].to_list()
    assert graph not in listed  # dropped after the block


@pytest.mark.neo4j
def test_gds_leiden_finds_the_two_triangles_and_q_is_computed_here(neo4j_store):
    _seed(neo4j_store)
    found = gds.stored_leiden(neo4j_store, "CONNECTS", model=MODEL, seed=3)
    assert set(found) == set(U)
    assert len({found[u] for u in U[:3]}) == 1 and len({found[u] for u in U[3:]}) == 1
    assert found[U[0]] != found[U[3]]
    nodes, edges = kb_module.KB(neo4j_store).component_tables(MODEL, edges=("CONNECTS",), isolates=False)
    view = M.from_frames(nodes["uid"].to_list(), edges)
    membership = [found[u] for u in view.nodes]
    null = M.null_model_z(view, n=3, seed=1, membership=membership, leiden=gds.GdsLeiden(neo4j_store))
    # Q by hand: m = 11.75; inside the triangles 3.5 + 1 + 1.5 = 6 and 2 + 1 + 2.5 = 5.5; each side's
    # strength is twice its inside weight plus the bridge's 0.25
    left = 2 * 6 + 0.25
    right = 2 * 5.5 + 0.25
    m = 11.75
    assert null["q"] == pytest.approx((6 + 5.5) / m - (left / (2 * m)) ** 2 - (right / (2 * m)) ** 2, abs=1e-12)
    assert len(null["samples"]) == 3 and all(-1 <= q <= 1 for q in null["samples"])
    # the same graph built here (vertex indices) gives the same partition
    assert M._canonical(view.nodes, M._membership_groups(view.nodes, gds.GdsLeiden(neo4j_store)(view.graph, seed=3))) \
        == null["partition"]


def test_no_gds_outside_neo4j(cypher_store, request):
    if "neo4j" in request.node.callspec.id:
        assert gds.gds_version(cypher_store).startswith("2.")
    else:
        assert gds.gds_version(cypher_store) is None
