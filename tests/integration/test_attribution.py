"""Attribution graphs through the CLI on the embedded store: import a folder (every variant),
refuse a malformed file leaving the store as it was, co-occurrence communities, and a real
pipeline's circuits (a tiny Llama's effects) exported and imported back with their weights."""

from __future__ import annotations

import json

import polars as pl
import pytest
from click.testing import CliRunner

import compgraph
from compgraph import schema
from compgraph.cli.main import main
from tests.helpers.attribution import capital_graph, write
from tests.unit.stages.test_effects import EXAMPLES, write_task

M = "gemma-2-2b"


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _counts(kb_path):
    with compgraph.open(str(kb_path)) as kb:
        return kb.named("label_counts").rows()


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("graphs")
    write(folder, capital_graph("a", "current"), capital_graph("b", "v051"), capital_graph("c", "legacy"),
          capital_graph("d", "neuronpedia"))
    kb_path = tmp_path_factory.mktemp("kb") / "kb"
    result = _cli("import-graph", folder, "--cooccur-min", "2", "--store", kb_path)
    assert result.exit_code == 0, result.output
    return folder, kb_path, result.output


def test_a_folder_imports_once_and_a_second_import_changes_nothing(imported):
    folder, kb_path, output = imported
    assert output.splitlines()[-1].startswith("4 file(s): 4 imported (0 replacing an earlier version), 0 unchanged; "
                                              "40 nodes, 32 links in ")
    before = _counts(kb_path)
    again = _cli("import-graph", folder, "--cooccur-min", "2", "--store", kb_path)
    assert again.exit_code == 0 and "0 imported (0 replacing an earlier version), 4 unchanged" in again.output
    assert _counts(kb_path) == before
    with compgraph.open(str(kb_path)) as kb:
        rows = kb.named("feature_prevalence", model=M, limit=5).rows()
    assert [(r[0].rsplit("/", 1)[1], r[4]) for r in rows] == [("F7", 4), ("F42", 4)]


def test_a_malformed_file_is_one_line_and_leaves_the_store_as_it_was(imported, tmp_path):
    _, kb_path, _ = imported
    before = _counts(kb_path)
    bad = capital_graph("e")
    bad["links"].append({"source": "3_42_3", "target": "9_9_9", "weight": 1.0})
    write(tmp_path, capital_graph("f"), bad)
    result = _cli("import-graph", tmp_path, "--store", kb_path)
    assert result.exit_code == 1
    assert result.output.strip() == (f"error: {tmp_path / 'e.json'}: link 8: the link's target '9_9_9' is no node "
                                     "of the file")
    assert _counts(kb_path) == before


def test_cooccurrence_communities_agree_with_the_named_query(imported):
    _, kb_path, _ = imported
    with compgraph.open(str(kb_path)) as kb:
        nodes, edges = kb.cooccurrence_tables(M, min_graphs=2)
        named = kb.named("feature_cooccurrence", model=M, min_graphs=2)
    assert edges.select("src", "dst", pl.col("weight").cast(pl.Int64)).rows() == named.rows() == [
        (f"{M}/D:{M}/L1/mlp_in/F7", f"{M}/D:{M}/L3/mlp_in/F42", 4)]
    assert sorted(nodes["uid"]) == sorted([named["a"][0], named["b"][0]])
    result = _cli("analyse", "modularity", "--model", M, "--graphs", "COOCCURS", "--null-samples", "2",
                  "--format", "json", "--store", kb_path)
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert (row["graph"], row["nodes"], row["edges"], row["communities"]) == ("COOCCURS", 2, 1, 1)
    refused = _cli("analyse", "modularity", "--model", M, "--graphs", "LINKS", "--store", kb_path)
    assert refused.exit_code == 1 and "--graphs takes CONNECTS, CAUSES, COOCCURS, not LINKS" in refused.output


@pytest.fixture(scope="module")
def circuits(tiny_dir, tmp_path_factory):
    """A tiny Llama's effects on a four-example task, by the pipeline: node and edge circuits."""
    task = write_task(tmp_path_factory.mktemp("task") / "mine.jsonl", EXAMPLES)
    kb_path = tmp_path_factory.mktemp("tiny") / "kb"
    result = _cli("effects", tiny_dir, "--name", "tiny", "--tasks", task, "--method", "attribution",
                  "--circuit-n", 3, "--circuit-edges", 6, "--device", "cpu", "--store", kb_path)
    assert result.exit_code == 0, result.output
    return task, kb_path


@pytest.mark.parametrize("level", ["node", "edge"])
def test_an_exported_circuit_imports_back_with_its_components_and_weights(circuits, level, tmp_path):
    task, kb_path = circuits
    out = tmp_path / f"tiny-{level}.json"
    result = _cli("export-circuit", "tiny", task, out, "--level", level, "--store", kb_path)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["metadata"]["prompt"] == EXAMPLES[0][0]
    assert json.loads((tmp_path / "graph-metadata.json").read_text())["graphs"][0]["slug"] == f"tiny-{level}"
    assert _cli("import-graph", out, "--model", "tiny", "--store", kb_path).exit_code == 0
    graph = schema.graph_uid("tiny", f"tiny-{level}")
    with compgraph.open(str(kb_path)) as kb:
        store = kb.store
        (circuit,) = store.nodes(schema.CIRCUIT, where={"level": level}).to_dicts()
        token = store.nodes(schema.MODEL, uids=["tiny"])["tokenizer"][0]
        answer = schema.token_uid(token, doc["nodes"][-1]["feature"])
        found = [store.edges(rel, where={"graph": graph}) for rel in (schema.ATTRIBUTES, schema.ATTRIBUTES_TOKEN)]
        links = pl.concat([f.select("src", "dst", "input", "weight") for f in found if f.height])
        if level == "node":
            want = store.edges(schema.INCLUDES, source_where={"uid": circuit["uid"]}) \
                .select("dst", "score").rows()
            got = links.filter(pl.col("dst") == answer).select("src", "weight").rows()
            assert sorted(got) == sorted(want) and len(want) == 3
        else:
            causes = store.edges(schema.CAUSES, where={"in_circuit": True})
            logits = schema.site_uid("tiny", "logits")
            want = causes.select("src", pl.when(pl.col("dst") == logits).then(pl.lit(answer)).otherwise("dst"),
                                 "input", "effect").rows()
            assert sorted(links.rows()) == sorted(want) and want
        members = store.edges(schema.CONTAINS, where=None, source_where={"uid": graph})["dst"].unique().to_list()
        included = store.edges(schema.INCLUDES, source_where={"uid": circuit["uid"]})["dst"].to_list()
        assert set(included) - {schema.site_uid("tiny", "logits")} <= set(members)  # the logits: the answer's :Token


def test_a_cut_off_import_is_redone_without_doubling_its_links(tmp_path):
    """An import killed mid-file leaves its run 'running': the next import deletes what that run
    wrote before writing the file again, so no link is written twice (links are created, not merged)."""
    from compgraph.attribution import import_graphs
    from compgraph.store.factory import open_store

    (path,) = write(tmp_path / "g", capital_graph("a"))
    with open_store(tmp_path / "kb") as store:
        import_graphs(store, path)
        before = {rel.type + rel.target.name: store.edges(rel).drop("run").sort("src", "dst").rows()
                  for rel in (schema.CONTAINS, schema.CONTAINS_TOKEN, schema.ATTRIBUTES, schema.ATTRIBUTES_TOKEN)}
        (run,) = store.nodes(schema.RUN, where={"stage": "import_graph"})["uid"].to_list()
        store.merge_nodes(schema.RUN, pl.DataFrame([{"uid": run, "status": "running"}]))
        assert import_graphs(store, path).imported == 1
        after = {rel.type + rel.target.name: store.edges(rel).drop("run").sort("src", "dst").rows()
                 for rel in (schema.CONTAINS, schema.CONTAINS_TOKEN, schema.ATTRIBUTES, schema.ATTRIBUTES_TOKEN)}
    assert after == before and len(before["ATTRIBUTESComponent"]) == 4
