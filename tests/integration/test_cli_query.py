"""`compgraph query` and `compgraph info` through click's CliRunner."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from compgraph.cli.main import main
from compgraph.store.factory import open_store
from tests.helpers.stores import SERVERS, server


@pytest.fixture
def run(tmp_path, monkeypatch):
    """The CLI against an empty embedded store at tmp_path/kb (reads never create one)."""
    monkeypatch.setenv("COMPGRAPH_STORE", str(tmp_path / "kb"))
    open_store(tmp_path / "kb").close()
    runner = CliRunner()

    def invoke(*args, input=None):
        return runner.invoke(main, list(args), input=input, catch_exceptions=False)

    return invoke


def one_line_error(result, *needles):
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0]


def test_return_one_as_json_embedded(run):
    result = run("query", "RETURN 1 AS x", "--format", "json")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == '[{"x": 1}]'


def test_return_one_as_json_over_bolt(run, bolt_env):
    uri, database = bolt_env
    result = run("query", "RETURN 1 AS x", "--format", "json", "--store", uri, "--database", database)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == '[{"x": 1}]'


def test_write_without_flag_is_refused_and_changes_nothing(run):
    one_line_error(run("query", "CREATE (:X)"), "--write")
    count = run("query", "MATCH (n:X) RETURN count(n) AS c", "--format", "json")
    assert json.loads(count.stdout) == [{"c": 0}]
    assert run("query", "CREATE (:X)", "--write").exit_code == 0
    assert json.loads(run("query", "MATCH (n:X) RETURN count(n) AS c", "--format", "json").stdout) == [{"c": 1}]


def test_syntax_error_and_missing_parameter(run):
    one_line_error(run("query", "MATCH (n RETURN n"), "syntax")
    one_line_error(run("query", "RETURN $a AS a"), "parameter")


@pytest.mark.parametrize("backend", SERVERS)
def test_unreachable_bolt_and_wrong_password(run, backend, request, monkeypatch):
    one_line_error(run("query", "RETURN 1", "--store", "bolt://127.0.0.1:9"), "cannot reach")
    uri, database = server(request, backend)
    monkeypatch.setenv("NEO4J_PASSWORD", "wrong-" + os.environ["NEO4J_PASSWORD"])
    result = run("query", "RETURN 1", "--store", uri, *(["--database", database] if database else []))
    one_line_error(result, "authentication failed")
    assert "wrong-" not in result.output  # the password is never echoed


def test_params_typed_and_from_json_file(run, tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"l": [1, 2], "s": "a'b"}))
    result = run("query", "RETURN $i AS i, $f AS f, $s AS s, $l AS l, $t AS t", "--param", "i=3",
                 "--param", "f=0.5", "--param", "t=plain text", "--params-json", str(tmp_path / "p.json"),
                 "--format", "json")
    assert json.loads(result.stdout) == [{"i": 3, "f": 0.5, "s": "a'b", "l": [1, 2], "t": "plain text"}]


def test_csv_and_table_formats(run):
    csv = run("query", "RETURN 1 AS a, [1, 2] AS l, 'x,y' AS s, null AS n, 0.1 AS f, true AS b", "--format", "csv")
    assert csv.stdout.splitlines() == ["a,l,s,n,f,b", '1,"[1, 2]","x,y",,0.1,true']
    table = run("query", "RETURN 1 AS a")
    assert "a" in table.stdout and "1 row(s)" in table.stdout


def test_bad_param_syntax_and_unknown_named_query(run):
    one_line_error(run("query", "RETURN 1", "--param", "novalue"), "NAME=VALUE")
    one_line_error(run("query", "--named", "no_such_query"), "no named query")
    one_line_error(run("query"), "CYPHER")


def test_info_counts(run):
    run("query", "CREATE (:Component:Neuron {uid: 'a'})-[:CONNECTS {kind: 'v'}]->(:Component:Neuron {uid: 'b'})",
        "--write")
    result = run("info", "--format", "json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["labels"]["Neuron"] == 2 and info["labels"]["Component"] == 2
    assert info["relationships"] == {"CONNECTS": 1}
    assert info["schema_version"] == 1
