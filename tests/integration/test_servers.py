"""The same job on a Bolt server as on the embedded store: `compgraph ingest` of a tiny
model with connections, effects on two tasks and circuits, then every `analyse` command,
on ArcadeDB's Bolt server and on a real Neo4j (``neo4j`` marker), must give the graph and
the figures the embedded store gives (every node's and edge's properties; the analyses'
JSON rows, modularity by igraph on every store). On Neo4j, modularity's default engine is
GDS's Leiden in the server: the same graphs, Q within 0.01 of igraph's. And the embedded
store, with a few awkward values added, exported (`compgraph export --format neo4j-import`),
loaded by Neo4j's own bulk importer (``neo4j-admin database import full``) into a fresh
database and served by a second Neo4j, equals itself node by node and edge by edge."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from compgraph import schema
from compgraph.cli.main import main
from compgraph.store.factory import open_store
from tests.helpers.neo4j_server import PASSWORD, bulk_import, neo4j_server
from tests.helpers.stores import SERVERS, digest, dump, server

JARS = Path(__file__).resolve().parents[2] / ".neo4j"  # what .ci/run assembles (fetched if absent)

JOB = ["--name", "tiny", "--top-k", "4", "--device", "cpu", "--extract", "neurons,heads,connections",
       "--connections-k", "3", "--tasks", "ioi,capitals", "--examples", "8", "--circuit-n", "4",
       "--circuit-edges", "20"]
ANALYSES = [
    ["overlap", "--model", "tiny", "--tasks", "ioi,capitals"],
    ["reuse", "--model", "tiny", "--permutations", "50"],
    ["modularity", "--model", "tiny", "--null-samples", "2", "--engine", "igraph"],
    ["degrees", "--model", "tiny"],
]


MODULARITY = ANALYSES[2]


def run(*args) -> str:
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def job(tiny_dir, target: list[str]) -> tuple:
    run("ingest", tiny_dir, *JOB, *target)
    figures = [json.loads(run("analyse", *a, "--format", "json", *target)) for a in ANALYSES]
    return figures


@pytest.fixture(scope="module")
def embedded(tiny_dir, tmp_path_factory):
    store = tmp_path_factory.mktemp("embedded") / "kb"
    figures = job(tiny_dir, ["--store", store])
    return dump(store), figures, store


@pytest.mark.parametrize("backend", SERVERS)
def test_a_server_holds_the_embedded_graph_and_gives_its_figures(backend, request, tiny_dir, embedded):
    uri, database = server(request, backend)
    target = ["--store", uri, *(["--database", database] if database else [])]
    figures = job(tiny_dir, target)
    assert dump(uri, database) == embedded[0]
    assert figures == embedded[1]
    if backend == "neo4j":
        by_igraph = figures[ANALYSES.index(MODULARITY)]
        by_gds = json.loads(run("analyse", "modularity", "--model", "tiny", "--null-samples", "2",
                                "--format", "json", *target))
        for mine, theirs in zip(by_gds, by_igraph, strict=True):
            assert mine["engine"].startswith("gds 2.") and theirs["engine"] == "igraph"
            assert (mine["graph"], mine["nodes"], mine["edges"], mine["null_samples"]) == \
                (theirs["graph"], theirs["nodes"], theirs["edges"], theirs["null_samples"])
            assert abs(mine["q"] - theirs["q"]) <= 0.01, (mine, theirs)


@pytest.mark.neo4j
def test_an_export_loads_with_neo4j_admin_import_into_the_same_graph(embedded, tmp_path, monkeypatch):
    store = tmp_path / "kb"
    shutil.copytree(embedded[2], store)
    with open_store(store) as graph:  # values the importer could misread
        graph.merge_nodes(schema.TOKEN, pl.DataFrame({"uid": ["tok:x1", "tok:x2", "tok:x3"],
                                                      "text": ['say "hi",\nthen', "", "a;b\\c"]}))
        graph.merge_nodes(schema.NEURON, pl.DataFrame({
            "uid": ["odd/L0/N0", "odd/L0/N1"], "model": "odd", "flag": [True, False], "big": [2**40, -1],
            "ratio": [math.inf, -math.inf], "tags": [["x", ""], None], "vec": [[0.1, 1e-300], [2.5]],
        }))
    output = run("export", "--format", "neo4j-import", tmp_path / "import", "--store", store)
    assert "neo4j-admin database import full neo4j @import.args" in output

    state = tmp_path / "neo4j"
    assert "IMPORT DONE" in bulk_import(JARS, state, tmp_path / "import")
    monkeypatch.setenv("NEO4J_USER", "neo4j")
    monkeypatch.setenv("NEO4J_PASSWORD", PASSWORD)
    with neo4j_server(JARS, state=state) as uri:
        assert digest(uri) == digest(store)  # every node (runs aside) and every edge, all properties
        with open_store(uri) as graph:  # compgraph made its constraints on first open
            imported = _runs(graph)
            constraints = graph.query("SHOW CONSTRAINTS YIELD labelsOrTypes RETURN labelsOrTypes")
    with open_store(store) as graph:  # the runs too, less the lists the importer cannot spell
        assert imported == {uid: {k: v for k, v in props.items() if v not in ([], [""])}
                            for uid, props in _runs(graph).items()}
    assert ["Component"] in constraints["labelsOrTypes"].to_list()


def _runs(graph) -> dict[str, dict]:
    with graph.records("MATCH (r:Run) RETURN properties(r) AS props") as rows:
        return {r["props"]["uid"]: r["props"] for r in rows}
