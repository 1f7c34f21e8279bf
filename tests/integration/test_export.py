"""`compgraph export --format neo4j-import` end to end: a tiny model's store (neurons, heads,
connections, effects, circuits) and a few awkward values, exported, loaded by Neo4j's own bulk
importer (``neo4j-admin database import full``) into a fresh database, served by a second
Neo4j, and compared with the embedded store node by node and edge by edge."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from compgraph import schema
from compgraph.cli.main import main
from compgraph.store.factory import open_store

from tests.helpers.neo4j_server import PASSWORD, bulk_import, neo4j_server
from tests.helpers.stores import digest

JARS = Path(__file__).resolve().parents[2] / ".neo4j"  # what .ci/run assembles (fetched here if absent)


@pytest.mark.neo4j
def test_an_export_loads_with_neo4j_admin_import_into_the_same_graph(tmp_path, tiny_dir, monkeypatch):
    store = tmp_path / "kb"
    runner = CliRunner()

    def cli(*args):
        result = runner.invoke(main, [*map(str, args), "--store", str(store)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    cli("ingest", tiny_dir, "--name", "tiny", "--top-k", "4", "--device", "cpu", "--extract",
        "neurons,heads,connections", "--tasks", "induction", "--examples", "8")
    with open_store(store) as graph:  # values the importer could misread
        graph.merge_nodes(schema.TOKEN, pl.DataFrame({"uid": ["tok:x1", "tok:x2", "tok:x3"],
                                                      "text": ['say "hi",\nthen', "", "a;b\\c"]}))
        graph.merge_nodes(schema.NEURON, pl.DataFrame({
            "uid": ["odd/L0/N0", "odd/L0/N1"], "model": "odd", "flag": [True, False], "big": [2**40, -1],
            "ratio": [math.inf, -math.inf], "tags": [["x", ""], None], "vec": [[0.1, 1e-300], [2.5]],
        }))
    output = cli("export", "--format", "neo4j-import", tmp_path / "import")
    assert "neo4j-admin database import full neo4j @import.args" in output

    state = tmp_path / "neo4j"
    log = bulk_import(JARS, state, tmp_path / "import")
    assert "IMPORT DONE" in log
    monkeypatch.setenv("NEO4J_USER", "neo4j")
    monkeypatch.setenv("NEO4J_PASSWORD", PASSWORD)
    with neo4j_server(JARS, state=state) as uri:
        assert digest(uri) == digest(store)  # every node (runs aside) and every edge, all properties
        with open_store(uri) as graph:  # compgraph made its constraints on first open
            runs = graph.query("MATCH (r:Run) RETURN count(r) AS n")["n"][0]
            constraints = graph.query("SHOW CONSTRAINTS YIELD labelsOrTypes RETURN labelsOrTypes")
    with open_store(store) as graph:
        assert runs == graph.query("MATCH (r:Run) RETURN count(r) AS n")["n"][0]
    assert ["Component"] in constraints["labelsOrTypes"].to_list()
