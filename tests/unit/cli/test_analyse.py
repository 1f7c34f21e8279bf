"""``compgraph analyse`` through click's CliRunner, on a KB over an in-memory store
(compgraph.kb.open patched to hand it out), with answers computed by hand."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner

from compgraph import kb as kb_module
from compgraph import schema
from compgraph.cli.analyse import analyse, write_communities
from compgraph.errors import ConfigError
from compgraph.analysis.reuse import permutation_test
from compgraph.store.memory import MemoryStore

M = "m"
H = {(layer, h): schema.head_uid(M, layer, h) for layer in range(2) for h in range(4)}
N = {(layer, i): schema.neuron_uid(M, layer, i) for layer in range(2) for i in range(4)}
LEFT = [H[0, 0], H[0, 1], H[1, 0], H[1, 1], N[0, 0]]
RIGHT = [H[0, 2], H[0, 3], H[1, 2], H[1, 3], N[0, 1]]
CIRCUITS = {  # task -> members (node level, activation)
    "ioi": [H[0, 0], H[0, 1], H[1, 0], N[0, 0]],
    "colored": [H[0, 0], H[0, 1], N[1, 3]],
    "gt": [H[1, 3]],
}


def _clique_edges(nodes):
    return [(u, v) for i, u in enumerate(nodes) for v in nodes[i + 1:]]


def build(store) -> None:
    """Model m: 8 heads, 8 neurons. CONNECTS: two 5-cliques (LEFT, RIGHT) joined by one
    edge, weight 1 (one of them -1: magnitudes count). CAUSES: a path of three edges.
    Node circuits of three tasks, and an edge circuit of ioi (another method)."""
    store.merge_nodes(schema.MODEL, pl.DataFrame({"uid": [M], "name": [M]}))
    store.merge_nodes(schema.HEAD, pl.DataFrame({"uid": list(H.values()), "model": M,
                                                 "layer": [k[0] for k in H], "head": [k[1] for k in H]}))
    store.merge_nodes(schema.NEURON, pl.DataFrame({"uid": list(N.values()), "model": M,
                                                   "layer": [k[0] for k in N], "index": [k[1] for k in N]}))
    pairs = _clique_edges(LEFT) + _clique_edges(RIGHT) + [(N[0, 0], N[0, 1])]
    store.merge_edges(schema.CONNECTS, pl.DataFrame({
        "src": [u for u, _ in pairs], "dst": [v for _, v in pairs], "kind": "virtual",
        "weight": [-1.0 if i == 0 else 1.0 for i in range(len(pairs))]}))
    store.merge_edges(schema.CAUSES, pl.DataFrame({
        "src": [H[0, 0], H[1, 0], H[0, 1]], "dst": [H[1, 0], N[1, 3], H[1, 0]], "effect": [0.5, -0.25, 0.125],
        "method": "attribution", "task": "ioi", "input": ["q", "mlp", "v"]}))
    rows, includes = [], []
    for task, members in CIRCUITS.items():
        uid = schema.circuit_uid(M, task, "node", "activation")
        rows.append({"uid": uid, "model": M, "task": task, "level": "node", "method": "activation"})
        includes += [{"src": uid, "dst": c, "score": 1.0 / (r + 1), "rank": r} for r, c in enumerate(members)]
    edge_uid = schema.circuit_uid(M, "ioi", "edge", "attribution")
    rows.append({"uid": edge_uid, "model": M, "task": "ioi", "level": "edge", "method": "attribution"})
    includes.append({"src": edge_uid, "dst": H[1, 3], "score": 0.5, "rank": 0})
    store.merge_nodes(schema.CIRCUIT, pl.DataFrame(rows))
    store.merge_edges(schema.INCLUDES, pl.DataFrame(includes))


@pytest.fixture
def store(monkeypatch):
    memory = MemoryStore()
    build(memory)
    opened = []

    def fake_open(uri_or_path=None, *, database=None):
        opened.append((uri_or_path, database))
        return kb_module.KB(memory)

    monkeypatch.setattr(kb_module, "open", fake_open)
    memory.opened = opened
    return memory


def run(*args: str):
    result = CliRunner().invoke(analyse, list(args))
    return result


def run_json(*args: str):
    result = run(*args, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_modularity_rows_for_both_graphs(store):
    rows = run_json("modularity", "--model", M, "--null-samples", "5", "--store", "somewhere")
    assert store.opened == [("somewhere", None)]
    connects, causes = rows
    assert (connects["graph"], connects["nodes"], connects["edges"], connects["communities"],
            connects["largest"], connects["null_samples"]) == ("CONNECTS", 10, 21, 2, 5, 5)
    assert connects["q"] == pytest.approx(20 / 21 - 1 / 2, abs=1e-12)  # two 5-cliques joined by one edge
    assert connects["z"] == pytest.approx((connects["q"] - connects["null_mean"]) / connects["null_std"], abs=1e-9)
    assert (causes["graph"], causes["nodes"], causes["edges"]) == ("CAUSES", 4, 3)
    # a star around L1/H0 with |weights| 0.5, 0.25, 0.125 (m = 0.875): one community, Q = 1 - 1 = 0
    assert causes["communities"] == 1 and causes["q"] == pytest.approx(0.0, abs=1e-12)


def test_modularity_write_back_and_figures(store, tmp_path):
    result = run("modularity", "--model", M, "--null-samples", "2", "--write-back", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    heads = store.nodes(schema.HEAD).sort("uid")
    by_uid = dict(zip(heads["uid"], heads["community_connects"]))
    assert {by_uid[u] for u in LEFT if u in by_uid} != {by_uid[u] for u in RIGHT if u in by_uid}
    assert len({by_uid[u] for u in LEFT if u in by_uid}) == 1
    assert heads.filter(pl.col("uid") == H[1, 0])["community_causes"].to_list() == [0]
    for name in ("communities_connects.png", "communities_causes.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
        assert f"wrote {tmp_path / name}" in result.stderr


def test_degrees(store, tmp_path):
    rows = run_json("degrees", "--model", M, "--out", str(tmp_path))
    connects, causes = rows
    # degrees: 8 clique members with 4, the two bridge ends with 5
    assert (connects["nodes"], connects["edges"], connects["max_degree"]) == (10, 21, 5)
    assert connects["mean_degree"] == pytest.approx(42 / 10)
    assert connects["n"] == 10 and {"alpha", "xmin", "R_lognormal", "p_exponential"} <= set(connects)
    assert (causes["nodes"], causes["edges"], causes["max_degree"]) == (4, 3, 3)
    assert (tmp_path / "degrees_connects.png").is_file() and (tmp_path / "degrees_causes.png").is_file()


def test_overlap_of_two_circuits(store, tmp_path):
    rows = run_json("overlap", "--model", M, "--tasks", "ioi,colored", "--out", str(tmp_path))
    first = rows[0]
    assert (first["group_by"], first["group"]) == ("all", "all")
    assert (first["n_a"], first["n_b"], first["n_shared"], first["n_union"]) == (4, 3, 2, 5)
    assert first["jaccard"] == pytest.approx(2 / 5) and first["shared_fraction_a"] == pytest.approx(2 / 4)
    # scores 1/(rank+1): ioi H00 1, H01 1/2, H10 1/3, N00 1/4 (total 25/12); colored H00 1, H01 1/2,
    # N13 1/3 (total 11/6); weighted compares shares: ioi 12/25, 6/25, 4/25, 3/25; colored 6/11, 3/11, 2/11
    assert first["weighted"] == pytest.approx((12 / 25 + 6 / 25) / (6 / 11 + 3 / 11 + 4 / 25 + 3 / 25 + 2 / 11))
    assert [(r["group_by"], r["group"]) for r in rows[1:]] == [
        ("kind", "head"), ("kind", "neuron"), ("layer", "0"), ("layer", "1")]
    neurons = rows[2]
    assert (neurons["n_a"], neurons["n_b"], neurons["n_shared"], neurons["overlap_coef"]) == (1, 1, 0, 0.0)
    assert (tmp_path / "overlap_by_layer.png").is_file()
    page = (tmp_path / "circuit_ioi.html").read_text(encoding="utf-8")
    assert all(uid in page for uid in CIRCUITS["ioi"])
    assert '"rel": "CAUSES"' in page and '"rel": "CONNECTS"' in page
    assert (tmp_path / "circuit_colored.html").is_file()


def test_overlap_table_format(store):
    result = run("overlap", "--model", M, "--tasks", "ioi,colored")
    assert result.exit_code == 0, result.output
    assert "overlap of the node circuits of ioi (a) and colored (b)" in result.stdout
    assert "5 row(s)" in result.stdout


def test_overlap_refusals(store):
    result = run("overlap", "--model", M, "--tasks", "ioi")
    assert result.exit_code == 1 and "exactly two tasks" in result.stderr
    result = run("overlap", "--model", M, "--tasks", "ioi,colored", "--level", "edge", "--method", "activation")
    assert result.exit_code == 1
    assert "no edge circuit by activation of m for task(s) ioi, colored" in result.stderr
    assert "ioi (edge, attribution)" in result.stderr  # says what there is
    result = run("overlap", "--model", M, "--tasks", "ioi,colored", "--level", "edge")  # any method
    assert result.exit_code == 1 and "no edge circuit of m for task(s) colored;" in result.stderr
    result = run("overlap", "--model", "nope", "--tasks", "a,b")
    assert result.exit_code == 1 and "no model 'nope'" in result.stderr


def test_a_task_with_circuits_by_several_methods_needs_method(store):
    uid = schema.circuit_uid(M, "ioi", "node", "verified")
    store.merge_nodes(schema.CIRCUIT, pl.DataFrame([{"uid": uid, "model": M, "task": "ioi", "level": "node",
                                                     "method": "verified"}]))
    store.merge_edges(schema.INCLUDES, pl.DataFrame([{"src": uid, "dst": H[0, 0], "score": 1.0, "rank": 0}]))
    result = run("overlap", "--model", M, "--tasks", "ioi,colored")
    assert result.exit_code == 1
    assert "task(s) ioi have node circuits by several methods; choose one with --method" in result.stderr
    assert run_json("overlap", "--model", M, "--tasks", "ioi,colored", "--method", "activation")


def frames():
    return {task: pl.DataFrame({"component": members}) for task, members in CIRCUITS.items()}


def test_reuse_json(store, tmp_path):
    got = run_json("reuse", "--model", M, "--permutations", "200", "--out", str(tmp_path))
    tasks = ["colored", "gt", "ioi"]  # every task with a node circuit, sorted
    assert [row["task"] for row in got["matrix"]] == tasks
    assert got["matrix"][0] == {"task": "colored", "colored": 1.0, "gt": 0.0, "ioi": 2 / 5}
    assert got["reuse"][:2] == [
        {"component": H[0, 0], "kind": "head", "layer": 0, "n_tasks": 2, "tasks": ["colored", "ioi"]},
        {"component": H[0, 1], "kind": "head", "layer": 0, "n_tasks": 2, "tasks": ["colored", "ioi"]}]
    universe = kb_module.KB(store).components(M).select(pl.col("uid").alias("component"), "kind", "layer")
    assert universe.height == 16
    circuits = {t: frames()[t] for t in tasks}
    expected = permutation_test(circuits, universe, n=200, seed=0)
    assert got["test"] == {"statistic": "mean_pairwise_jaccard", **expected}
    assert expected["observed"] == pytest.approx((2 / 5 + 0 + 0) / 3)
    assert (tmp_path / "reuse_heatmap.png").is_file()


def test_reuse_tables_and_task_subset(store):
    result = run("reuse", "--model", M, "--tasks", "ioi,gt", "--permutations", "50", "--statistic", "n_reused")
    assert result.exit_code == 0, result.output
    assert "permutation test" in result.stdout and "n_reused" in result.stdout
    result = run("reuse", "--model", M, "--level", "edge", "--method", "attribution")
    assert result.exit_code == 1 and "at least two tasks" in result.stderr


def test_empty_graph_rows_are_nan(monkeypatch):
    memory = MemoryStore()
    memory.merge_nodes(schema.MODEL, pl.DataFrame({"uid": [M]}))
    monkeypatch.setattr(kb_module, "open", lambda *a, **k: kb_module.KB(memory))
    result = CliRunner().invoke(analyse, ["modularity", "--model", M, "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["nodes"], r["edges"], r["communities"]) for r in rows] == [(0, 0, 0), (0, 0, 0)]
    assert all(r["q"] == "NaN" for r in rows)


# ---- --write-back ---------------------------------------------------------------------------------

def component_store(uids: list[str]) -> MemoryStore:
    store = MemoryStore()
    store.merge_nodes(schema.HEAD, pl.DataFrame({"uid": uids, "model": ["m"] * len(uids),
                                                 "layer": [0] * len(uids)}))
    return store


def test_write_back_sets_the_property_on_components():
    store = component_store(["m/L0/H0", "m/L0/H1"])
    result = write_communities(store, {"m/L0/H0": 0, "m/L0/H1": 1}, "weights")
    assert result.updated == 2 and result.created == 0
    nodes = store.nodes(schema.HEAD).sort("uid")
    assert nodes["community_weights"].to_list() == [0, 1]
    assert nodes["layer"].to_list() == [0, 0]  # other properties untouched


def test_write_back_with_model_clears_earlier_labels():
    store = component_store(["m/L0/H0", "m/L0/H1"])
    write_communities(store, {"m/L0/H0": 3, "m/L0/H1": 4}, "weights")
    write_communities(store, {"m/L0/H1": 0}, "weights", model="m")
    nodes = store.nodes(schema.HEAD).sort("uid")
    assert nodes["community_weights"].to_list() == [None, 0]


def test_write_back_refuses_unknown_uids_and_bad_names():
    store = component_store(["m/L0/H0"])
    with pytest.raises(ConfigError, match="not components"):
        write_communities(store, {"m/L0/H0": 0, "m/L9/H9": 1}, "w")
    assert "community_w" not in store.nodes(schema.HEAD).columns
    with pytest.raises(ConfigError, match="community name"):
        write_communities(store, {"m/L0/H0": 0}, "bad name")
