"""The same job on a Bolt server as on the embedded store: `compgraph ingest` of a tiny
model with connections, effects on two tasks and circuits, then every `analyse` command,
on ArcadeDB's Bolt server and on a real Neo4j (``neo4j`` marker), must give the graph and
the figures the embedded store gives (every node's and edge's properties; the analyses'
JSON rows, modularity by igraph on every store). On Neo4j, modularity's default engine is
GDS's Leiden in the server: the same graphs, Q within 0.01 of igraph's."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from compgraph.cli.main import main
from tests.helpers.stores import SERVERS, dump, server

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
    return dump(store), figures


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
