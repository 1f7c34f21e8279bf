"""Issue #7: what compgraph prints is what the store holds; bad input is refused in one
line before a store is opened or created; errors carry the engine's own reason."""

from __future__ import annotations

import csv
import ctypes
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from compgraph import render
from compgraph.cli.main import main
from compgraph.store.factory import open_store
from compgraph.store.rows import Records
from tests.helpers.stores import CYPHER_BACKENDS, server



@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPGRAPH_STORE", str(tmp_path / "kb"))
    runner = CliRunner()
    return lambda *args, input=None: runner.invoke(main, [str(a) for a in args], input=input,
                                                   catch_exceptions=False)


@pytest.fixture(params=CYPHER_BACKENDS)
def target(request, tmp_path):
    """--store (and --database) options naming an empty store of each backend."""
    if request.param == "embedded":
        open_store(tmp_path / "kb").close()
        return ["--store", str(tmp_path / "kb")]
    uri, database = server(request, request.param)
    return ["--store", uri] + (["--database", database] if database else [])


@pytest.fixture(params=CYPHER_BACKENDS)
def store(request, tmp_path):
    """An open, empty store of each backend that answers Cypher."""
    if request.param == "embedded":
        with open_store(tmp_path / "kb") as graph:
            yield graph
        return
    uri, database = server(request, request.param)
    with open_store(uri, database=database) as graph:
        yield graph


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def one_line_error(result, *needles) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def as_json(cli, target, statement, *more):
    return json.loads(ok(cli("query", statement, "--format", "json", *target, *more)))


# ---- 1. output loses nothing ----------------------------------------------------------------

MAPS = "UNWIND [{a: 1}, {b: 2}, {a: 3, c: 'z'}] AS m RETURN m"


def test_maps_keep_every_key_in_json_csv_and_table(cli, target):
    assert as_json(cli, target, MAPS) == [{"m": {"a": 1}}, {"m": {"b": 2}}, {"m": {"a": 3, "c": "z"}}]
    rows = list(csv.reader(io.StringIO(ok(cli("query", MAPS, "--format", "csv", *target)))))
    assert rows[0] == ["m"] and [json.loads(r[0]) for r in rows[1:]] == [{"a": 1}, {"b": 2}, {"a": 3, "c": "z"}]
    table = ok(cli("query", MAPS, *target))
    assert '{"a": 1}' in table and '{"b": 2}' in table and '"c": "z"' in table


def test_nodes_relationships_and_paths_keep_labels_type_and_properties(cli, target):
    ok(cli("query", "CREATE (:Model {uid: 'm', name: 'm', n_layers: 2}) "
                    "CREATE (n:Component:Neuron {uid: 'm/L0/N1', model: 'm', layer: 0})"
                    "-[:DECODES_TO {via: 'out', logit: 1.5, rank: 0, sign: 1, run: 'r'}]->"
                    "(t:Token {uid: 'tok:7', id: 7, text: 'é'}) "
                    "CREATE (n)-[:ACTIVATES_ON {mean_act: 0.25, count: 3}]->(t)", "--write", *target))
    nodes = as_json(cli, target, "MATCH (n) WHERE n:Model OR n:Neuron OR n:Token RETURN n ORDER BY n.uid")
    assert [r["n"] for r in nodes] == [
        {"labels": ["Model"], "properties": {"uid": "m", "name": "m", "n_layers": 2}},
        {"labels": ["Component", "Neuron"], "properties": {"uid": "m/L0/N1", "model": "m", "layer": 0}},
        {"labels": ["Token"], "properties": {"uid": "tok:7", "id": 7, "text": "é"}},
    ]
    rels = as_json(cli, target, "MATCH ()-[e]->() RETURN e, properties(e) AS p ORDER BY type(e)")
    assert [r["e"] for r in rels] == [
        {"type": "ACTIVATES_ON", "properties": {"mean_act": 0.25, "count": 3}},
        {"type": "DECODES_TO", "properties": {"via": "out", "logit": 1.5, "rank": 0, "sign": 1, "run": "r"}},
    ]
    assert [r["p"] for r in rels] == [r["e"]["properties"] for r in rels]
    path = as_json(cli, target, "MATCH p = (:Neuron)-[:DECODES_TO]->(:Token) RETURN p")[0]["p"]
    assert [n["properties"]["uid"] for n in path["nodes"]] == ["m/L0/N1", "tok:7"]
    assert [r["type"] for r in path["relationships"]] == ["DECODES_TO"]
    cells = list(csv.reader(io.StringIO(ok(cli("query", "MATCH (n:Model) RETURN n", "--format", "csv", *target)))))
    assert json.loads(cells[1][0]) == nodes[0]["n"]


def test_values_survive_a_json_round_trip(cli, target):
    statement = ("RETURN 9223372036854775807 AS big, -9223372036854775807 AS small, 0.0 / 0.0 AS nan, "
                 "1.0 / 0.0 AS inf, -1.0 / 0.0 AS ninf, [1, 'a', 2.5, null, true, [2]] AS mixed, "
                 "'ü😀 \"q\" \\n' AS text, 0.1 AS f, $p AS p")
    row = as_json(cli, target, statement, "--param", "p=[1.25, {\"k\": \"v\"}]")[0]
    assert row == {"big": 2**63 - 1, "small": -(2**63 - 1), "nan": "NaN", "inf": "Infinity", "ninf": "-Infinity",
                   "mixed": [1, "a", 2.5, None, True, [2]], "text": 'ü😀 "q" \n', "f": 0.1,
                   "p": [1.25, {"k": "v"}]}
    line = list(csv.reader(io.StringIO(ok(cli("query", statement, "--format", "csv", "--param", "p=1", *target)))))[1]
    assert line[:5] == [str(2**63 - 1), str(-(2**63 - 1)), "NaN", "Infinity", "-Infinity"]


def test_query_frame_loses_nothing(store):
    frame = store.query(MAPS)
    assert frame.schema["m"] == pl.Struct({"a": pl.Int64, "b": pl.Int64, "c": pl.String})
    assert frame["m"].to_list() == [{"a": 1, "b": None, "c": None}, {"a": None, "b": 2, "c": None},
                                    {"a": 3, "b": None, "c": "z"}]
    mixed = store.query("UNWIND [[1, 'a'], [2.5], 3] AS v RETURN v, 2 AS n")
    assert mixed.schema["v"] == pl.Object and mixed["v"].to_list() == [[1, "a"], [2.5], 3]
    big = store.query("RETURN 9223372036854775807 AS big, 0.0 / 0.0 AS nan")
    assert big["big"].to_list() == [2**63 - 1] and big["nan"].is_nan().all()


def test_records_stream_and_release_their_cursor(store):
    with store.records("UNWIND range(1, 5000) AS x RETURN x, x * 2 AS y") as rows:
        assert rows.keys == ["x", "y"]
        assert [next(rows) for _ in range(3)] == [{"x": 1, "y": 2}, {"x": 2, "y": 4}, {"x": 3, "y": 6}]
    # left early: the next statement, a write included, runs
    store.query("CREATE (:X {a: 1})", write=True)
    with store.records("MATCH (n:X) RETURN n.a AS a") as rows:
        assert list(rows) == [{"a": 1}]


def test_json_and_csv_are_written_as_rows_arrive():
    def rows():
        for i in range(2500):
            yield {"x": i}
        raise RuntimeError("the store failed after 2500 rows")

    for write in (render.write_json, render.write_csv):
        out = io.StringIO()
        with pytest.raises(RuntimeError):
            write(Records(["x"], rows()), out)
        assert out.getvalue().count("\n") >= 1999, write  # 2000 rows written before the failure


def _peak_rss_kb(args: list[str], store: Path) -> int:
    """Run the CLI in a child; its own peak resident memory (from wait4, not a high-water
    mark shared with earlier children)."""
    with open(store.parent / "stderr.txt", "w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "compgraph.cli", *args, "--store", str(store)],
                                stdout=subprocess.DEVNULL, stderr=err,
                                env=dict(os.environ, COMPGRAPH_JVM_HEAP="256m"))
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        assert proc.returncode == 0, err.read()[-2000:]
    return usage.ru_maxrss


def test_large_results_stream_in_bounded_memory(tmp_path):
    """The Python side holds a batch, not the result: 600k rows as json peak about 100 MB
    above RETURN 1 (the JVM's heap, capped at 256m here, filling up); holding them all
    (as before) took 270 MB more."""
    store = tmp_path / "kb"
    open_store(store).close()
    baseline = _peak_rss_kb(["query", "RETURN 1 AS x", "--format", "json"], store)
    peak = _peak_rss_kb(["query", "UNWIND range(1, 600000) AS x RETURN x, 'row' AS s", "--format", "json"], store)
    assert peak - baseline < 170_000, (peak, baseline)


# ---- 2. tables show data verbatim, and say what they leave out -------------------------------------

def test_tables_print_markup_and_emoji_codes_verbatim(cli, target):
    out = ok(cli("query", "RETURN ':x:' AS `[red]h`, '[bold]b[/bold]' AS b, '[/]' AS c, "
                          "'[link=http://x]y[/link]' AS d", *target))
    for text in ("[red]h", ":x:", "[bold]b[/bold]", "[/]", "[link=http://x]y[/link]"):
        assert text in out
    assert "❌" not in out


def test_long_tables_are_cut_with_a_note(cli, target):
    out = ok(cli("query", "UNWIND range(1, 150) AS x RETURN x", *target))
    assert "150 row(s), 50 not shown (--limit 100" in out and "│ 100 │" in out and "│ 101 │" not in out
    out = ok(cli("query", "UNWIND range(1, 150) AS x RETURN x", "--limit", "3", *target))
    assert "147 not shown (--limit 3" in out and "│ 4 " not in out
    assert len(as_json(cli, target, "UNWIND range(1, 150) AS x RETURN x")) == 150
    assert as_json(cli, target, "UNWIND range(1, 150) AS x RETURN x", "--limit", "2") == [{"x": 1}, {"x": 2}]
    assert ok(cli("query", "UNWIND range(1, 150) AS x RETURN x", "--format", "csv", *target)).count("\n") == 151


# ---- 4. read commands never create a store; report names the models there ------------------------

@pytest.mark.parametrize("command", [["query", "RETURN 1 AS x"], ["info"], ["report", "m"], ["runs"]])
def test_read_commands_on_a_mistyped_path_create_nothing(cli, tmp_path, command):
    missing = tmp_path / "no" / "such-kb"
    one_line_error(cli(*command, "--store", missing), f"no store at {missing}")
    assert not (tmp_path / "no").exists()
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    one_line_error(cli(*command, "--store", empty), f"no store at {empty}")
    assert list(empty.iterdir()) == []


def test_report_on_an_unknown_model_names_the_models_held(cli, tmp_path):
    ok(cli("query", "CREATE (:Model {uid: 'tiny-a', name: 'tiny-a'}), (:Model {uid: 'tiny-b', name: 'tiny-b'})",
           "--write"))
    one_line_error(cli("report", "tiny"), "no model 'tiny'", "tiny-a, tiny-b")
    open_store(tmp_path / "other").close()
    one_line_error(cli("report", "tiny", "--store", tmp_path / "other"), "holds no models")


# ---- 5. no tracebacks --------------------------------------------------------------------------

def test_a_schema_version_that_is_not_an_integer_is_refused_and_kept(cli, tmp_path):
    ok(cli("query", "MATCH (m:CompgraphMeta) SET m.schema_version = 'abc'", "--write"))
    for command in (["info"], ["query", "RETURN 1 AS x"], ["report", "m"]):
        one_line_error(cli(*command), "schema version 'abc'", "not an integer")
    import arcadedb_embedded as arcade

    db = arcade.open_database(str(tmp_path / "kb" / "db"))
    try:
        assert db.query("opencypher", "MATCH (m:CompgraphMeta) RETURN m.schema_version AS v").to_list() == [
            {"v": "abc"}]
    finally:
        db.close()


def _without_dac_override():
    """In the child: drop the capabilities that let root write where the mode bits forbid it."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP: gone from the exec'd process


def test_a_read_only_store_is_one_line_and_left_as_it_was(tmp_path):
    store = tmp_path / "kb"
    with open_store(store) as graph:
        graph.query("CREATE (:X {a: 1})", write=True)
    paths = [store, *store.rglob("*")]
    before = {p: p.stat().st_mtime_ns for p in paths}
    modes = {p: p.stat().st_mode for p in paths}
    try:
        for p in paths:
            p.chmod(stat.S_IMODE(p.stat().st_mode) & ~0o222)
        for args in (["query", "MATCH (n:X) RETURN n.a AS a"], ["info"]):
            proc = subprocess.run([sys.executable, "-m", "compgraph.cli", *args, "--store", str(store)],
                                  capture_output=True, text=True, preexec_fn=_without_dac_override)
            assert proc.returncode == 1, proc.stderr
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and "read-only" in lines[0], proc.stderr
    finally:
        for p, mode in modes.items():
            p.chmod(stat.S_IMODE(mode))
    assert {p: p.stat().st_mtime_ns for p in [store, *store.rglob("*")]} == before


# ---- 6. clear messages --------------------------------------------------------------------------

def test_a_failing_named_query_gives_the_engines_reason(cli, target, request):
    line = one_line_error(cli("query", "--named", "top_heads", "--param", "model=m", "--param", "score=copy_score",
                              "--param", "limit=abc", *target), "query failed")
    assert "// name:" not in line and "Error executing Cypher query" not in line
    backend = request.node.callspec.params["target"]
    if backend == "embedded":  # the embedded engine names the cause; ArcadeDB's Bolt server does not
        assert 'For input string: "abc"' in line
    elif backend == "neo4j":
        assert "Type mismatch for parameter 'limit'" in line


def test_credentials_in_a_uri_are_refused_and_never_echoed(cli):
    for uri in ("bolt://neo4j:s3cr3t-pw@127.0.0.1:7687", "neo4j://neo4j:s3cr3t-pw@localhost", "bolt://me@host:1"):
        result = cli("query", "RETURN 1", "--store", uri)
        one_line_error(result, "NEO4J_USER", "NEO4J_PASSWORD")
        assert "s3cr3t" not in result.output


def test_unreachable_servers_are_one_line(cli):
    for uri in ("neo4j://127.0.0.1:9", "bolt://127.0.0.1:9"):
        one_line_error(cli("query", "RETURN 1", "--store", uri), "cannot reach")


WRITES = [
    "CREATE (:X)", "MERGE (n:X {a: 1}) RETURN n", "MATCH (n) SET n.flag = true", "MATCH (n) DETACH DELETE n",
    "MATCH (n) DELETE n", "MATCH (n:Token) REMOVE n.text", "FOREACH (i IN [1] | CREATE (:X))",
    "UNWIND [1] AS i CALL { CREATE (:X) } RETURN i",
    "CREATE INDEX x_a IF NOT EXISTS FOR (n:X) ON (n.a)", "DROP INDEX token_uid IF EXISTS",
    "CREATE CONSTRAINT x_uid IF NOT EXISTS FOR (n:X) REQUIRE n.uid IS UNIQUE", "DROP CONSTRAINT token_uid",
]


_USAGE = {"lastRead", "readCount"}  # Neo4j counts reads of an index: reading changes them, writing is what we check


def _snapshot(cli, target):
    indexes = [{k: v for k, v in row.items() if k not in _USAGE} for row in as_json(cli, target, "SHOW INDEXES")]
    return (as_json(cli, target, "MATCH (n) RETURN labels(n) AS l, properties(n) AS p ORDER BY p.uid"),
            indexes, as_json(cli, target, "SHOW CONSTRAINTS"))


def test_read_procedures_run_and_every_write_form_is_refused(cli, target):
    ok(cli("query", "CREATE (:Token {uid: 'tok:1', text: 'a'})", "--write", *target))
    assert {"label": "Token"} in as_json(cli, target, "CALL db.labels()")
    assert as_json(cli, target, "CALL db.labels() YIELD label RETURN label ORDER BY label")
    assert any("uid" in (r.get("properties") or []) for r in as_json(cli, target, "SHOW INDEXES"))
    line = one_line_error(cli("query", "CALL db.indexes()", *target))  # ArcadeDB has none: its own reason
    assert "--write" not in line and "db.indexes" in line
    before = _snapshot(cli, target)
    for statement in WRITES:
        one_line_error(cli("query", statement, *target), "--write")
    for statement in ("CALL db.createLabel('Y')", "CALL db.indexes() YIELD name CREATE (:X)"):
        one_line_error(cli("query", statement, *target))
    assert _snapshot(cli, target) == before


# ---- 4/5. ingest refuses bad input before the store is touched -----------------------------------

@pytest.mark.parametrize("option", [["--dtype", "foo"], ["--device", "tpu"], ["--top-k", "100000"],
                                    ["--top-k", "0"], ["--batch-size", "0"]])
def test_ingest_refuses_bad_options_before_creating_the_store(cli, tmp_path, small_model, option):  # noqa: F811
    store = tmp_path / "kb"
    one_line_error(cli("ingest", small_model, "--name", "small", *option, "--store", store), option[0])
    assert not store.exists()


def test_ingest_refuses_bad_options_on_an_existing_store_and_changes_nothing(cli, tmp_path, small_model):  # noqa: F811
    store = tmp_path / "kb"
    open_store(store).close()
    before = ok(cli("info", "--format", "json", "--store", store))
    one_line_error(cli("ingest", small_model, "--device", "tpu", "--store", store), "--device")
    assert ok(cli("info", "--format", "json", "--store", store)) == before


def test_ingest_refuses_a_corpus_without_text(cli, tmp_path, small_model):  # noqa: F811
    corpus = tmp_path / "empty.jsonl"
    corpus.write_text(json.dumps({"text": ""}) + "\n")
    one_line_error(cli("ingest", small_model, "--corpus", corpus, "--store", tmp_path / "kb"), "empty.jsonl")
    assert not (tmp_path / "kb").exists()
