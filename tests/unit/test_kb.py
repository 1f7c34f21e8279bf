"""The Python API (compgraph.kb) on an in-memory store holding a hand-built graph, with exact answers."""

from __future__ import annotations

import subprocess
import sys

import networkx as nx
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import compgraph
from compgraph import kb as kb_module
from compgraph import schema
from compgraph.errors import ConfigError, CypherUnsupported, StoreNotFound
from compgraph.store.memory import MemoryStore

M, OTHER = "m", "other"
N00, N01, N10 = (schema.neuron_uid(M, layer, i) for layer, i in ((0, 0), (0, 1), (1, 0)))
H00, H01, H10 = (schema.head_uid(M, layer, h) for layer, h in ((0, 0), (0, 1), (1, 0)))
MLP0, ATTN1 = schema.site_uid(M, "mlp", 0), schema.site_uid(M, "attn", 1)
KV1, EMBED = schema.kv_head_uid(M, 1, 0), schema.site_uid(M, "embed")
E10 = schema.expert_uid(M, 1, 3)
XH = schema.head_uid(OTHER, 0, 0)
IOI, CAPITALS = schema.task_uid("ioi"), schema.task_uid("capitals")
C_IOI = schema.circuit_uid(M, "ioi", "node", "activation")
C_IOI_EDGE = schema.circuit_uid(M, "ioi", "edge", "attribution")
C_CAP = schema.circuit_uid(M, "capitals", "node", "activation")
C_OTHER = schema.circuit_uid(OTHER, "ioi", "node", "activation")


def _affects(rows):
    return pl.DataFrame([{"src": s, "dst": d, "effect": e, "effect_norm": e / 10, "method": m, "via": m,
                          "ablation": "corrupt", "direction": "noising", "metric": "logit_diff", "n_examples": 10}
                         for s, d, e, m in rows])


def _circuit(uid, model, task, level, method, **extra):
    return {"uid": uid, "model": model, "task": task, "level": level, "method": method, "ablation": "corrupt",
            "size": 2, "faithfulness": 0.9, "metric_full": 5.0, "metric_empty": 0.0, "metric_circuit": 4.5, **extra}


def build(store) -> None:
    """Model m: three neurons, three heads, one expert, four sites (mlp, attn, a key/value
    head, the embeddings); model ``other``: one head.
    Two tasks, four circuits, effects, weights (CONNECTS) and attribution edges (CAUSES)."""
    store.merge_nodes(schema.NEURON, pl.DataFrame({
        "uid": [N00, N01, N10], "model": M, "layer": [0, 0, 1], "index": [0, 1, 0], "act_mean": [0.5, 1.5, 2.5]}))
    store.merge_nodes(schema.HEAD, pl.DataFrame({
        "uid": [H00, H01, H10, XH], "model": [M, M, M, OTHER], "layer": [0, 0, 1, 0], "head": [0, 1, 0, 0],
        "kv_head": [0, 0, 0, 0], "induction_score": [0.1, 0.2, 0.9, 0.5]}))
    store.merge_nodes(schema.EXPERT, pl.DataFrame({"uid": [E10], "model": M, "layer": [1], "expert": [3],
                                                   "routing_load": [0.25]}))
    store.merge_nodes(schema.SITE, pl.DataFrame({"uid": [MLP0, ATTN1, KV1, EMBED], "model": M, "layer": [0, 1, 1, None],
                                                 "site": ["mlp", "attn", "kv_head", "embed"],
                                                 "kv_head": [None, None, 0, None]}))
    store.merge_nodes(schema.TASK, pl.DataFrame({"uid": [IOI, CAPITALS], "name": ["ioi", "capitals"]}))
    store.merge_edges(schema.AFFECTS, _affects([
        (H00, IOI, -0.5, "activation"), (H10, IOI, 2.0, "activation"), (MLP0, IOI, 1.0, "activation"),
        (N01, IOI, 0.25, "attribution"), (H00, CAPITALS, 3.0, "activation"), (XH, IOI, 9.0, "activation")]))
    store.merge_nodes(schema.CIRCUIT, pl.DataFrame([
        _circuit(C_IOI, M, "ioi", "node", "activation"),
        _circuit(C_IOI_EDGE, M, "ioi", "edge", "attribution"),
        _circuit(C_OTHER, OTHER, "ioi", "node", "activation"),
    ]))
    store.merge_nodes(schema.CIRCUIT, pl.DataFrame([_circuit(C_CAP, M, "capitals", "node", "activation",
                                                             cpr=0.8, cmd=0.2)]))
    store.merge_edges(schema.INCLUDES, pl.DataFrame({
        "src": [C_IOI, C_IOI, C_CAP, C_IOI_EDGE, C_OTHER], "dst": [H10, MLP0, H00, H00, XH],
        "score": [2.0, 1.0, 3.0, 0.7, 9.0], "rank": [0, 1, 0, 0, 0]}))
    store.merge_edges(schema.FOR_TASK, pl.DataFrame({"src": [C_IOI, C_IOI_EDGE, C_CAP, C_OTHER],
                                                     "dst": [IOI, IOI, CAPITALS, IOI]}))
    store.merge_edges(schema.CONNECTS, pl.DataFrame({
        "src": [H00, H00, H00, N00, N01, H01], "dst": [H10, H10, H10, N10, N10, N10],
        "kind": ["q_comp", "k_comp", "v_comp", "virtual", "virtual", "ov_to_mlp"],
        "weight": [0.2, 0.6, 0.1, -1.5, 0.05, 0.3]}))
    store.merge_edges(schema.CAUSES, pl.DataFrame({
        "src": [MLP0, H00, MLP0], "dst": [ATTN1, H10, ATTN1], "effect": [0.4, -0.9, 0.1],
        "method": "attribution", "task": ["ioi", "ioi", "capitals"], "input": ["q", "k", "q"]}))


@pytest.fixture(scope="module")
def kb():
    store = MemoryStore()
    build(store)
    return compgraph.KB(store)


# ---- components ---------------------------------------------------------------------------

def test_components_lists_every_kind_with_index_mapped(kb):
    frame = kb.components(M)
    assert frame.columns[:5] == ["uid", "kind", "layer", "index", "model"]
    assert set(frame.columns[5:]) == {"act_mean", "head", "kv_head", "induction_score", "expert", "routing_load", "site"}
    assert frame.select("uid", "kind", "layer", "index").rows() == [
        (N00, "neuron", 0, 0), (N01, "neuron", 0, 1), (N10, "neuron", 1, 0),
        (H00, "head", 0, 0), (H01, "head", 0, 1), (H10, "head", 1, 0),
        (E10, "expert", 1, 3),
        (MLP0, "site", 0, None), (KV1, "site", 1, 0), (ATTN1, "site", 1, None), (EMBED, "site", None, None),
    ]
    assert frame.filter(pl.col("uid") == H10)["induction_score"].to_list() == [0.9]
    assert frame.filter(pl.col("uid") == MLP0)["site"].to_list() == ["mlp"]


def test_components_of_one_kind(kb):
    heads = kb.components(M, kind="head")
    assert heads.select("uid", "index", "head", "model").rows() == [(H00, 0, 0, M), (H01, 1, 1, M), (H10, 0, 0, M)]
    assert kb.components(OTHER, kind="head")["uid"].to_list() == [XH]
    assert kb.components(OTHER, kind="neuron").schema == pl.Schema(kb_module.COMPONENT_COLUMNS)
    with pytest.raises(ConfigError, match="unknown component kind"):
        kb.components(M, kind="Head")


# ---- effects --------------------------------------------------------------------------------

def _effects(rows):
    return pl.DataFrame([{"component": c, "kind": k, "layer": layer, "index": i, "effect": e, "effect_norm": e / 10,
                          "method": m, "via": m, "ablation": "corrupt", "direction": "noising",
                          "metric": "logit_diff", "n_examples": 10} for c, k, layer, i, e, m in rows],
                        schema=kb_module.EFFECT_COLUMNS)


def test_effects_of_a_task_largest_first(kb):
    assert_frame_equal(kb.effects(M, "ioi"), _effects([
        (H10, "head", 1, 0, 2.0, "activation"), (MLP0, "site", 0, None, 1.0, "activation"),
        (H00, "head", 0, 0, -0.5, "activation"), (N01, "neuron", 0, 1, 0.25, "attribution")]))
    assert_frame_equal(kb.effects(M, "ioi", method="attribution"),
                       _effects([(N01, "neuron", 0, 1, 0.25, "attribution")]))
    assert_frame_equal(kb.effects(M, "capitals"), _effects([(H00, "head", 0, 0, 3.0, "activation")]))
    assert_frame_equal(kb.effects(M, "no_such_task"), _effects([]))


def test_effects_read_the_whole_model_when_many_components_are_named(kb, monkeypatch):
    expected = kb.effects(M, "ioi")
    monkeypatch.setattr(kb_module, "_LOOKUP_BY_UID", 0)
    assert_frame_equal(kb.effects(M, "ioi"), expected)


# ---- circuits -------------------------------------------------------------------------------

def test_circuits_one_row_each_with_curve_areas_when_present(kb):
    frame = kb.circuits(M)
    assert frame.columns[:12] == ["uid", "task", "level", "method", "ablation", "size", "faithfulness",
                                  "metric_full", "metric_empty", "metric_circuit", "cpr", "cmd"]
    assert frame.select("uid", "task", "level", "method", "cpr", "cmd").rows() == [
        (C_CAP, "capitals", "node", "activation", 0.8, 0.2),
        (C_IOI_EDGE, "ioi", "edge", "attribution", None, None),
        (C_IOI, "ioi", "node", "activation", None, None),
    ]
    assert frame["faithfulness"].to_list() == [0.9] * 3 and frame["model"].to_list() == [M] * 3
    ioi = kb.circuits(M, task="ioi")
    assert ioi["uid"].to_list() == [C_IOI_EDGE, C_IOI] and "cpr" not in ioi.columns
    assert kb.circuits("nobody").height == 0


def _members(rows):
    return pl.DataFrame(rows, schema=kb_module.MEMBER_COLUMNS, orient="row")


def test_circuit_members_node_level_by_default(kb):
    assert_frame_equal(kb.circuit_members(M), _members([
        (C_CAP, "capitals", "node", "activation", H00, "head", 0, 0, 3.0, 0),
        (C_IOI, "ioi", "node", "activation", H10, "head", 1, 0, 2.0, 0),
        (C_IOI, "ioi", "node", "activation", MLP0, "site", 0, None, 1.0, 1),
    ]))


def test_circuit_members_filters(kb):
    assert_frame_equal(kb.circuit_members(M, task="ioi", level=None), _members([
        (C_IOI_EDGE, "ioi", "edge", "attribution", H00, "head", 0, 0, 0.7, 0),
        (C_IOI, "ioi", "node", "activation", H10, "head", 1, 0, 2.0, 0),
        (C_IOI, "ioi", "node", "activation", MLP0, "site", 0, None, 1.0, 1),
    ]))
    assert kb.circuit_members(M, level="edge", method="activation").height == 0
    assert kb.circuit_members(OTHER)["component"].to_list() == [XH]


# ---- the component graph -------------------------------------------------------------------

def _edges(graph):
    return {(u, v): d for u, v, d in graph.edges(data=True)}


def _edge(rel, weight, kind, task=None, method=None, n=1):
    return {"rel": rel, "weight": weight, "kind": kind, "task": task, "method": method, "n_parallel": n}


def test_component_graph_keeps_the_strongest_of_parallel_edges(kb):
    graph = kb.component_graph(M)
    assert isinstance(graph, nx.DiGraph) and graph.graph["model"] == M
    assert set(graph.nodes) == {N00, N01, N10, H00, H01, H10, E10, MLP0, ATTN1, KV1, EMBED}
    assert graph.nodes[KV1] == {"kind": "site", "layer": 1, "index": 0, "model": M}
    assert graph.nodes[H01] == {"kind": "head", "layer": 0, "index": 1, "model": M}
    assert graph.nodes[MLP0] == {"kind": "site", "layer": 0, "index": None, "model": M}
    assert _edges(graph) == {
        (H00, H10): _edge("CAUSES", -0.9, "k", "ioi", "attribution", n=4),
        (N00, N10): _edge("CONNECTS", -1.5, "virtual"),
        (N01, N10): _edge("CONNECTS", 0.05, "virtual"),
        (H01, N10): _edge("CONNECTS", 0.3, "ov_to_mlp"),
        (MLP0, ATTN1): _edge("CAUSES", 0.4, "q", "ioi", "attribution", n=2),
    }


def test_component_graph_task_filters_causes_only(kb):
    graph = kb.component_graph(M, task="capitals")
    assert _edges(graph)[(H00, H10)] == _edge("CONNECTS", 0.6, "k_comp", n=3)
    assert _edges(graph)[(MLP0, ATTN1)] == _edge("CAUSES", 0.1, "q", "capitals", "attribution")
    assert len(_edges(graph)) == 5
    assert len(_edges(kb.component_graph(M, method="activation"))) == 4  # CAUSES are all attribution


def test_component_graph_kinds_min_weight_and_isolates(kb):
    graph = kb.component_graph(M, edges=("CONNECTS",), kinds=("head",), min_weight=0.15)
    assert set(graph.nodes) == {H00, H01, H10}
    assert _edges(graph) == {(H00, H10): _edge("CONNECTS", 0.6, "k_comp", n=2)}  # v_comp (0.1) is below
    trimmed = kb.component_graph(M, edges="CONNECTS", kinds=["head"], isolates=False)
    assert set(trimmed.nodes) == {H00, H10}
    neurons = kb.component_graph(M, edges="CONNECTS", kinds="neuron", min_weight=1.0)
    assert set(neurons.nodes) == {N00, N01, N10} and set(neurons.edges) == {(N00, N10)}
    assert kb.component_graph(M, edges=()).number_of_edges() == 0
    with pytest.raises(ConfigError, match="CONNECTS, CAUSES"):
        kb.component_graph(M, edges=("AFFECTS",))
    with pytest.raises(ConfigError, match="unknown component kind"):
        kb.component_graph(M, kinds=("layer",))


def test_edges_among_are_the_graphs_edges_between_those_components(kb):
    """The same rule as component_graph (one per ordered pair: the strongest), read for a few uids."""
    assert _edges_of(kb.edges_among(M, [H00, H10, N10], edges=("CONNECTS",))) == {
        (H00, H10): _edge("CONNECTS", 0.6, "k_comp", n=3)}
    assert _edges_of(kb.edges_among(M, [H00, H10], edges=("CAUSES",), task="ioi")) == {
        (H00, H10): _edge("CAUSES", -0.9, "k", "ioi", "attribution")}
    whole = kb.component_tables(M)[1].filter(pl.col("src").is_in([H00, H10, N00, N10]) &
                                             pl.col("dst").is_in([H00, H10, N00, N10]))
    assert _edges_of(kb.edges_among(M, [H00, H10, N00, N10])) == _edges_of(whole)
    assert kb.edges_among(M, []).height == 0


def _edges_of(frame: pl.DataFrame) -> dict:
    return {(r.pop("src"), r.pop("dst")): r for r in frame.iter_rows(named=True)}


def test_component_graph_of_an_empty_store():
    graph = compgraph.KB(MemoryStore()).component_graph(M)
    assert graph.number_of_nodes() == 0 and graph.number_of_edges() == 0


# ---- Cypher, opening, closing, importing ----------------------------------------------------

def test_cypher_needs_a_cypher_store(kb):
    with pytest.raises(CypherUnsupported):
        kb.query("RETURN 1 AS x")
    with pytest.raises(CypherUnsupported):
        kb.named("circuit_members", model=M, task="ioi", level="node", method="activation")
    with pytest.raises(ConfigError, match="no named query"):
        kb.named("no_such_query")


def test_kb_closes_its_store():
    class Recording(MemoryStore):
        closed = 0

        def close(self):
            self.closed += 1

    store = Recording()
    with compgraph.KB(store) as opened:
        assert opened.store is store and opened.location == "memory"
    assert store.closed == 1


def test_open_never_creates_a_store(tmp_path):
    with pytest.raises(StoreNotFound, match="no store at"):
        compgraph.open(tmp_path / "absent")
    assert not (tmp_path / "absent").exists()


def test_import_is_cheap():
    code = ("import sys, compgraph; compgraph.KB; compgraph.open\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'jpype', 'arcadedb_embedded', 'neo4j',"
            " 'transformers', 'networkx')]\n"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
