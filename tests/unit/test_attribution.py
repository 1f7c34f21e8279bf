"""Importing attribution graphs into a store and exporting circuits as one (MemoryStore; the
named queries on the embedded store: tests/integration/test_queries.py)."""

from __future__ import annotations

import json

import polars as pl
import pytest

from compgraph import schema
from compgraph.attribution import circuit_document, import_graphs, write_viewer_file
from compgraph.data.attribution import parse_graph
from compgraph.errors import ConfigError
from compgraph.store.memory import MemoryStore
from tests.helpers.attribution import capital_graph, write

M = "gemma-2-2b"
G = schema.graph_uid(M, "capital")
F1 = f"{M}/D:gemma-2-2b/L1/mlp_in/F7"
F3 = f"{M}/D:gemma-2-2b/L3/mlp_in/F42"
EMBED, ERR2 = f"{M}/embed", f"{M}/L2/mlp_error"
PARIS, LONDON = f"{M}:7127", f"{M}:5134"


def _edges(store, rel, cols):
    frame = store.edges(rel)
    return sorted(frame.select(cols).rows()) if frame.height else []


def _snapshot(store):
    out = {}
    for kind in schema.NODE_KINDS:
        frame = store.nodes(kind)
        out[kind.name] = sorted(json.dumps(r, sort_keys=True, default=str) for r in frame.to_dicts())
    for rel in (schema.CONTAINS, schema.CONTAINS_TOKEN, schema.ATTRIBUTES, schema.ATTRIBUTES_TOKEN,
                schema.HAS_DICTIONARY, schema.RECURS, schema.COOCCURS):
        frame = store.edges(rel)
        out[f"{rel.type}>{rel.target.name}"] = sorted(json.dumps(r, sort_keys=True, default=str)
                                                      for r in frame.to_dicts())
    return out


@pytest.fixture
def store():
    return MemoryStore()


def test_a_graph_lands_as_features_sites_tokens_and_exact_edges(store, tmp_path):
    (path,) = write(tmp_path, capital_graph())
    report = import_graphs(store, path)
    assert (report.imported, report.nodes, report.links) == (1, 10, 8)
    graph = store.nodes(schema.ATTRIBUTION_GRAPH).row(0, named=True)
    assert (graph["uid"], graph["slug"], graph["prompt"], graph["transcoder_set"], graph["n_nodes"],
            graph["n_links"]) == (G, "capital", "The capital of", "gemma-2-2b", 10, 8)
    features = store.nodes(schema.FEATURE).sort("uid")
    assert features.select("uid", "layer", "index", "feature_id").rows() == [
        (F1, 1, 7, (1 + 7) * (1 + 7 + 1) // 2 + 7), (F3, 3, 42, (3 + 42) * (3 + 42 + 1) // 2 + 42)]
    assert sorted(store.nodes(schema.SITE).select("uid", "site").rows()) == sorted([(EMBED, "embed"), (ERR2, "mlp_error")])
    assert sorted(store.nodes(schema.TOKEN).select("uid", "id", "text").rows()) == [
        (LONDON, 5134, " London"), (PARIS, 7127, " Paris")]
    assert store.nodes(schema.DICTIONARY)["uid"].sort().to_list() == [
        f"{M}/D:gemma-2-2b/L1/mlp_in", f"{M}/D:gemma-2-2b/L3/mlp_in"]
    assert _edges(store, schema.CONTAINS, ["dst", "pos", "influence", "activation"]) == sorted([
        (EMBED, 0, None, None), (EMBED, 1, None, None), (EMBED, 2, 0.2, None), (EMBED, 3, 0.3, None),
        (F1, 2, 0.4, 1.5), (F3, 3, 0.5, 2.0), (F3, 2, 0.7, 0.5), (ERR2, 3, 0.6, None)])
    assert _edges(store, schema.CONTAINS_TOKEN, ["dst", "pos", "token_prob", "target"]) == [
        (LONDON, 3, 0.05, False), (PARIS, 3, 0.812, True)]
    assert _edges(store, schema.ATTRIBUTES, ["src", "dst", "source_pos", "target_pos", "weight"]) == sorted([
        (EMBED, F1, 2, 2, 2.0), (F1, F3, 2, 2, 1.5), (F1, F3, 2, 3, 0.5), (EMBED, F3, 3, 3, 1.0)])
    assert _edges(store, schema.ATTRIBUTES_TOKEN, ["src", "dst", "source_pos", "target_pos", "weight"]) == sorted([
        (F3, PARIS, 3, 3, 4.0), (ERR2, PARIS, 3, 3, -1.5), (F3, LONDON, 3, 3, 0.25), (F3, PARIS, 2, 3, 0.8)])
    assert set(store.edges(schema.ATTRIBUTES)["graph"]) == {G}


def test_reimporting_changes_nothing_and_a_changed_file_replaces_its_links(store, tmp_path):
    (path,) = write(tmp_path, capital_graph())
    import_graphs(store, path)
    before = _snapshot(store)
    again = import_graphs(store, path)
    assert (again.imported, again.unchanged) == (0, 1)
    assert _snapshot(store) == before
    doc = capital_graph(weight=9.0)
    doc["links"] = [link for link in doc["links"] if link["target"] != "5_5134_3"]  # London dropped
    path.write_text(json.dumps(doc))
    changed = import_graphs(store, path)
    assert (changed.imported, changed.replaced) == (1, 1)
    assert _edges(store, schema.ATTRIBUTES_TOKEN, ["src", "dst", "source_pos", "weight"]) == sorted([
        (F3, PARIS, 3, 9.0), (ERR2, PARIS, 3, -1.5), (F3, PARIS, 2, 0.8)])
    runs = store.nodes(schema.RUN, where={"stage": "import_graph"}).sort("started_at")
    assert runs["status"].to_list() == ["superseded", "complete"]


def test_graphs_share_their_features(store, tmp_path):
    import_graphs(store, tmp_path if write(tmp_path, capital_graph("a"), capital_graph("b")) else None)
    assert store.nodes(schema.FEATURE).height == 2
    contains = store.edges(schema.CONTAINS, where={"pos": 3})
    assert sorted(contains.filter(pl.col("dst") == F3)["src"].to_list()) == [
        schema.graph_uid(M, "a"), schema.graph_uid(M, "b")]
    assert store.edges(schema.ATTRIBUTES).height == 8


@pytest.mark.parametrize("breakage, message", [
    (lambda d: d["links"].append({"source": "1_7_2", "target": "nowhere", "weight": 1.0}),
     "link 8: the link's target 'nowhere' is no node of the file"),
    (lambda d: d["nodes"][4].pop("layer"), "node 4 (1_7_2): the node has no 'layer'"),
    (lambda d: d["links"].append(dict(d["links"][0])), "link 8 repeats E_6037_2 -> 1_7_2"),
])
def test_a_malformed_file_in_a_folder_writes_nothing(store, tmp_path, breakage, message):
    bad = capital_graph("z-bad")
    breakage(bad)
    write(tmp_path, capital_graph("a"), bad)
    with pytest.raises(ConfigError) as err:
        import_graphs(store, tmp_path)
    assert str(err.value) == f"{tmp_path / 'z-bad.json'}: {message}"
    assert all(not rows for rows in _snapshot(store).values())


def test_two_files_with_one_slug_are_refused(store, tmp_path):
    write(tmp_path / "x", capital_graph("same"))
    write(tmp_path / "y", capital_graph("same"))
    (tmp_path / "y" / "same.json").rename(tmp_path / "x" / "other.json")
    with pytest.raises(ConfigError, match="slug 'same' is also the slug of"):
        import_graphs(store, tmp_path / "x")


# ---- what the graphs share -------------------------------------------------------------------

F9 = f"{M}/D:gemma-2-2b/L2/mlp_in/F9"


def _third_graph():
    """capital_graph with L2 #9 at 3 (fed by L1 #7, feeding " Paris") and no L1#7 -> L3#42@2 link."""
    from tests.helpers.attribution import feature

    doc = capital_graph("c")
    doc["nodes"].append(feature(2, 9, 3, 0.9, 4.0))
    doc["links"] = [link for link in doc["links"] if (link["source"], link["target"]) != ("1_7_2", "3_42_2")]
    doc["links"] += [{"source": "1_7_2", "target": "2_9_3", "weight": 3.0},
                     {"source": "2_9_3", "target": "5_7127_3", "weight": 1.0}]
    return doc


def _expected_summary(docs, cooccur_min):
    """The summaries counted here from the documents themselves, in plain Python."""
    uid = {(1, 7): F1, (3, 42): F3, (2, 9): F9}
    held, infl, act, links = {}, {}, {}, {}
    for doc in docs:
        slug = doc["metadata"]["slug"]
        ids = {n["node_id"]: uid[int(n["layer"]), int(n["node_id"].split("_")[1])] for n in doc["nodes"]
               if n["feature_type"] == "cross layer transcoder"}
        for n in doc["nodes"]:
            if n["node_id"] in ids:
                f = ids[n["node_id"]]
                held.setdefault(f, set()).add(slug)
                infl.setdefault(f, []).append(n["influence"])
                act.setdefault(f, []).append(n["activation"])
        for link in doc["links"]:
            if link["source"] in ids and link["target"] in ids:
                links.setdefault((ids[link["source"]], ids[link["target"]]), []).append((slug, link["weight"]))
    features = sorted((f, len(g), sum(infl[f]) / len(infl[f]), sum(act[f]) / len(act[f])) for f, g in held.items())
    recurs = sorted((a, b, len({g for g, _ in ws}), len(ws), sum(w for _, w in ws) / len(ws))
                    for (a, b), ws in links.items() if len({g for g, _ in ws}) >= 2)
    pairs = sorted((a, b, len(held[a] & held[b])) for a in held for b in held if a < b)
    return features, recurs, [p for p in pairs if p[2] >= cooccur_min]


def _summary(store):
    features = store.nodes(schema.FEATURE).sort("uid").select("uid", "graphs", "mean_influence", "mean_activation") \
        .filter(pl.col("graphs").is_not_null())  # a feature in no graph now keeps its node, not its counts
    recurs = _edges(store, schema.RECURS, ["src", "dst", "graphs", "links", "mean_weight"])
    cooccurs = _edges(store, schema.COOCCURS, ["src", "dst", "graphs"])
    return [tuple(pytest.approx(v) if isinstance(v, float) else v for v in row) for row in features.rows()], \
        [tuple(pytest.approx(v) if isinstance(v, float) else v for v in row) for row in recurs], cooccurs


def test_the_summary_equals_a_count_over_the_files_and_follows_a_replaced_file(store, tmp_path):
    docs = [capital_graph("a"), capital_graph("b", weight=2.0), _third_graph()]
    write(tmp_path, *docs)
    import_graphs(store, tmp_path, cooccur_min=2)
    assert _summary(store) == _expected_summary(docs, 2)
    features, recurs, cooccurs = _summary(store)
    assert recurs == [(F1, F3, 3, 5, pytest.approx(0.9))]  # worked by hand: (1.5 + 0.5) * 2 + 0.5 over 5
    assert cooccurs == [(F1, F3, 3)]  # L2 #9 is in one graph only
    docs[1] = _third_graph() | {"metadata": {**_third_graph()["metadata"], "slug": "b"}}
    write(tmp_path, docs[1])
    import_graphs(store, tmp_path, cooccur_min=2)
    assert _summary(store) == _expected_summary(docs, 2)
    assert _summary(store)[2] == [(F1, F9, 2), (F1, F3, 3), (F9, F3, 2)]  # by uid: L1 < L2 < L3
    summaries = store.nodes(schema.RUN, where={"stage": "graph_summary"}).sort("started_at")
    assert summaries["status"].to_list() == ["superseded", "complete"]


def test_a_higher_floor_keeps_fewer_pairs_and_a_cut_off_summary_is_redone(store, tmp_path):
    docs = [capital_graph("a"), capital_graph("b"), _third_graph()]
    write(tmp_path, *docs)
    import_graphs(store, tmp_path)  # the default floor, 10: no pair of three graphs
    assert _summary(store)[2] == []
    import_graphs(store, tmp_path, cooccur_min=3)
    assert _summary(store) == _expected_summary(docs, 3)
    run = store.nodes(schema.RUN, where={"stage": "graph_summary", "status": "complete"})["uid"][0]
    store.merge_nodes(schema.RUN, pl.DataFrame([{"uid": run, "status": "running"}]))  # as if cut off
    store.delete_edges(schema.RECURS)
    report = import_graphs(store, tmp_path, cooccur_min=3)
    assert report.unchanged == 3 and _summary(store) == _expected_summary(docs, 3)


def test_an_import_keeps_the_last_floor_and_a_feature_gone_from_every_graph_loses_its_counts(store, tmp_path):
    from compgraph.attribution import summarise_graphs

    docs = [capital_graph("a"), _third_graph()]
    write(tmp_path, *docs)
    import_graphs(store, tmp_path, cooccur_min=1)
    assert summarise_graphs(store, M) == "unchanged"  # nothing imported since
    assert store.nodes(schema.FEATURE, uids=[F9])["graphs"].to_list() == [1]
    docs[1] = capital_graph("c")  # L2 #9 in no graph now
    write(tmp_path, docs[1])
    import_graphs(store, tmp_path)  # no --cooccur-min: the last summary's floor, 1
    assert _summary(store) == _expected_summary(docs, 1)
    assert store.nodes(schema.FEATURE, uids=[F9]).row(0, named=True).get("graphs") is None
    assert _summary(store)[2] == [(F1, F3, 2)]


def test_a_floor_below_one_is_refused_before_anything_is_written(store, tmp_path):
    write(tmp_path, capital_graph("a"))
    with pytest.raises(ConfigError, match="--cooccur-min must be at least 1, not 0"):
        import_graphs(store, tmp_path, cooccur_min=0)
    assert all(not rows for rows in _snapshot(store).values())


# ---- export ------------------------------------------------------------------------------------

E = "m"
H00, H13, N10 = schema.head_uid(E, 0, 0), schema.head_uid(E, 1, 3), schema.neuron_uid(E, 1, 0)
ATTN0, MLP1 = schema.site_uid(E, "attn", 0), schema.site_uid(E, "mlp", 1)
EMB, LOGITS = schema.site_uid(E, "embed"), schema.site_uid(E, "logits")
PROMPT = dict(prompt="When Mary and John", prompt_ids=[1, 50, 60, 70], prompt_tokens=["<s>", "When", " Mary", " and"],
              answer_id=99, answer=" Mary")


def _circuit_store() -> MemoryStore:
    """Model m (2 layers): a node circuit (two heads, a block) and an edge circuit for task t."""
    store = MemoryStore()
    store.merge_nodes(schema.MODEL, pl.DataFrame([{"uid": E, "name": E, "n_layers": 2, "source": "x"}]))
    store.merge_nodes(schema.HEAD, pl.DataFrame({"uid": [H00, H13], "model": E, "layer": [0, 1], "head": [0, 3]}))
    store.merge_nodes(schema.NEURON, pl.DataFrame({"uid": [N10], "model": E, "layer": [1], "index": [0]}))
    store.merge_nodes(schema.SITE, pl.DataFrame({"uid": [ATTN0, MLP1, EMB, LOGITS], "model": E,
                                                 "layer": [0, 1, None, None], "site": ["attn", "mlp", "embed", "logits"]}))
    store.merge_nodes(schema.TASK, pl.DataFrame([{"uid": schema.task_uid("t"), "name": "t"}]))
    node_c, edge_c = schema.circuit_uid(E, "t", "node", "verified"), schema.circuit_uid(E, "t", "edge", "attribution")
    store.merge_nodes(schema.CIRCUIT, pl.DataFrame([
        {"uid": node_c, "model": E, "task": "t", "level": "node", "method": "verified", "faithfulness": 0.9},
        {"uid": edge_c, "model": E, "task": "t", "level": "edge", "method": "attribution", "faithfulness": 0.7}]))
    store.merge_edges(schema.INCLUDES, pl.DataFrame([
        {"src": node_c, "dst": H13, "score": -3.0, "rank": 0}, {"src": node_c, "dst": MLP1, "score": 2.0, "rank": 1},
        {"src": node_c, "dst": H00, "score": 1.0, "rank": 2},
        {"src": edge_c, "dst": H00, "score": 2.5, "rank": 0}, {"src": edge_c, "dst": EMB, "score": 1.5, "rank": 1}]))
    causes = [(EMB, H00, "v", 1.5, True), (H00, H13, "q", 1.0, True), (H00, H13, "k", -0.25, True),
              (H13, LOGITS, "logits", 0.75, True), (N10, LOGITS, "logits", 0.1, False)]
    store.merge_edges(schema.CAUSES, pl.DataFrame([
        {"src": s, "dst": d, "input": i, "effect": w, "in_circuit": c, "task": "t", "method": "attribution"}
        for s, d, i, w, c in causes]))
    return store


def test_a_node_circuit_exports_its_members_with_their_scores_and_round_trips(tmp_path):
    store = _circuit_store()
    doc = circuit_document(store, E, "t", level="node", slug="m-t", **PROMPT)
    graph = parse_graph(doc, "export")
    assert [(n.kind, n.layer, n.index, n.pos) for n in graph.nodes] == [
        ("embedding", None, 1, 0), ("embedding", None, 50, 1), ("embedding", None, 60, 2), ("embedding", None, 70, 3),
        ("head", 0, 0, 3), ("head", 1, 3, 3), ("mlp", 1, None, 3), ("logit", None, 99, 3)]
    influence = {n.node_id: n.influence for n in graph.nodes}
    assert (influence["0_H0_3"], influence["1_H3_3"], influence["1_mlp_3"]) == pytest.approx((1.0, 0.5, 5 / 6))
    assert doc["metadata"]["prompt_tokens"] == PROMPT["prompt_tokens"] and doc["qParams"]["pinnedIds"] == []
    out = write_viewer_file(doc, tmp_path / "m-t.json")
    assert json.loads((tmp_path / "graph-metadata.json").read_text())["graphs"][0]["slug"] == "m-t"
    import_graphs(store, out, model=E)
    got = store.edges(schema.ATTRIBUTES_TOKEN).select("src", "dst", "weight").sort("src").rows()
    assert got == sorted([(H13, f"{E}:99", -3.0), (MLP1, f"{E}:99", 2.0), (H00, f"{E}:99", 1.0)])


def test_an_edge_circuit_exports_its_edges_with_their_inputs_and_round_trips(tmp_path):
    store = _circuit_store()
    doc = circuit_document(store, E, "t", level="edge", slug="m-t-edge", **PROMPT)
    assert sorted((link["source"], link["target"], link["weight"], link.get("input")) for link in doc["links"]) == \
        sorted([("E_70_3", "0_H0_3", 1.5, "v"), ("0_H0_3", "1_H3_3", 1.0, "q"), ("0_H0_3", "1_H3_3", -0.25, "k"),
                ("1_H3_3", "3_99_3", 0.75, "logits")])  # N10's edge is not in the circuit
    assert {n.kind for n in parse_graph(doc, "export").nodes} == {"embedding", "head", "logit"}
    import_graphs(store, write_viewer_file(doc, tmp_path / "m-t-edge.json"), model=E)
    got = sorted(store.edges(schema.ATTRIBUTES).select("src", "dst", "input", "weight").rows())
    assert got == sorted([(EMB, H00, "v", 1.5), (H00, H13, "q", 1.0), (H00, H13, "k", -0.25)])
    assert store.edges(schema.ATTRIBUTES_TOKEN).select("src", "dst", "input", "weight").rows() == [
        (H13, f"{E}:99", "logits", 0.75)]


def test_export_refusals():
    store = _circuit_store()
    with pytest.raises(ConfigError, match="no node circuit of m for task 'nope'"):
        circuit_document(store, E, "nope", **PROMPT)
    with pytest.raises(ConfigError, match="--level must be node or edge"):
        circuit_document(store, E, "t", level="both", **PROMPT)
    with pytest.raises(ConfigError, match="name the file m-t.json"):
        write_viewer_file(circuit_document(store, E, "t", slug="m-t", **PROMPT), "elsewhere.json")
