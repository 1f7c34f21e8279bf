"""The neo4j-import export: column types, cell spelling, files and arguments written from
hand-built stores, parts, and refusals that leave nothing behind. The round trip through
Neo4j's own importer is in tests/integration/test_servers.py."""

from __future__ import annotations

import csv
import math

import polars as pl
import pytest

from compgraph import schema
from compgraph.errors import ConfigError
from compgraph.store import export
from compgraph.store.export import ARRAY_DELIMITER, write_neo4j_import


@pytest.mark.parametrize("value, expected", [
    (1, "long"), (2.5, "double"), (True, "boolean"), ("", "string"), (None, None), ([], None),
    ([1, 2], "long[]"), ([1, 0.5], "double[]"), (["a", ""], "string[]"), (2**63 - 1, "long"),
])
def test_value_type(value, expected):
    assert export.value_type("p", value) == expected


@pytest.mark.parametrize("value, message", [
    (2**63, "does not fit the importer's 64-bit long"),
    (-(2**63) - 1, "does not fit"),
    ({"a": 1}, "holds dict values"),
    (["a", 1], "a list of long and string"),
])
def test_value_type_refuses_what_the_importer_cannot_hold(value, message):
    with pytest.raises(ConfigError, match=message):
        export.value_type("p", value)


def test_column_types_collect_every_type():
    rows = [{"props": {"a": 1, "b": "x"}}, {"props": {"a": 0.5}}, {"props": {"c": None}}]
    assert export.column_types(["a", "b", "c"], rows) == {"a": {"long", "double"}, "b": {"string"}, "c": {"string"}}


def test_cells_are_spelled_as_java_parses_them():
    assert [export._cell(v, "double") for v in (math.nan, math.inf, -math.inf, 2, 0.1)] == \
        ["NaN", "Infinity", "-Infinity", 2.0, 0.1]
    assert export._cell([True, False], "boolean[]") == f"true{ARRAY_DELIMITER}false"
    assert [export._field(v) for v in (None, "", 'a"b', 0.1, 3)] == ["", '""', '"a""b"', "0.1", "3"]
    with pytest.raises(ConfigError, match="U\\+001F"):
        export._cell(["a\x1fb"], "string[]")


def read_csv(path):
    """(header fields, data records): strings come back quoted as written (``"a"``), so that
    quoted strings, unquoted numbers and unquoted empty (absent) fields stay distinct."""
    with open(path, newline="", encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split(",")
        rows = csv.reader(handle, quoting=csv.QUOTE_NONE, escapechar=None, quotechar="\x00")
        return header, sorted(rows)


def _seed(store):
    store.merge_nodes(schema.MODEL, pl.DataFrame({"uid": ["m"]}))
    store.merge_nodes(schema.NEURON, pl.DataFrame({
        "uid": ["m/L0/N0", "m/L0/N1"], "layer": [0, 0], "act_max": [1.5, math.nan],
        "dead": [False, True], "top": [["a", "b"], []], "ratio": [math.inf, -0.25],
    }))
    store.merge_nodes(schema.TOKEN, pl.DataFrame({"uid": ["tok:0", "tok:1"], "text": ['say "hi",\nthen', ""]}))
    store.merge_edges(schema.DECODES_TO, pl.DataFrame({
        "src": ["m/L0/N0", "m/L0/N1"], "dst": ["tok:0", "tok:1"], "via": ["out", "out"], "rank": [0, 1],
        "score": [2.0, None],
    }))


def test_export_writes_typed_parts_and_the_importer_arguments(cypher_store, tmp_path):
    _seed(cypher_store)
    summary = write_neo4j_import(cypher_store, tmp_path / "out")
    out = tmp_path / "out"
    assert summary.nodes == {"Model": 1, "Component:Neuron": 2, "Token": 2, "CompgraphMeta": 1}
    assert summary.relationships == {"DECODES_TO": 2}
    assert summary.empty_lists == 1  # N1's "top": the importer cannot spell it
    args = (out / "import.args").read_text().splitlines()
    assert args[:3] == ["--multiline-fields=true", "--array-delimiter=U+001F", "--id-type=string"]  # a newline
    assert sorted(args[3:]) == sorted([
        "--nodes=Model=nodes-Model-0.csv", "--nodes=Component:Neuron=nodes-Component-Neuron-0.csv",
        "--nodes=Token=nodes-Token-0.csv", "--nodes=CompgraphMeta=nodes-CompgraphMeta-0.csv",
        "--relationships=DECODES_TO=relationships-DECODES_TO-0.csv"])
    assert summary.command == f"cd {out.resolve()} && neo4j-admin database import full neo4j @import.args"

    header, rows = read_csv(out / "nodes-Component-Neuron-0.csv")
    assert header == ["uid:ID(Component)", "act_max:double", "dead:boolean", "layer:long", "ratio:double",
                      "top:string[]"]
    assert rows == [['"m/L0/N0"', "1.5", '"false"', "0", '"Infinity"', f'"a{ARRAY_DELIMITER}b"'],
                    ['"m/L0/N1"', "", '"true"', "0", "-0.25", ""]]  # NaN: the store keeps none
    header, rows = read_csv(out / "relationships-DECODES_TO-0.csv")
    assert header == [":START_ID(Component)", ":END_ID(Token)", "rank:long", "score:double", "via:string"]
    assert rows == [['"m/L0/N0"', '"tok:0"', "0", "2.0", '"out"'], ['"m/L0/N1"', '"tok:1"', "1", "", '"out"']]
    with open(out / "nodes-Token-0.csv", newline="", encoding="utf-8") as handle:  # quotes and a newline inside
        assert sorted(csv.reader(handle)) == [["tok:0", 'say "hi",\nthen'], ["tok:1", ""], ["uid:ID(Token)", "text:string"]]
    assert '"tok:1",""\n' in (out / "nodes-Token-0.csv").read_text()  # the empty string, quoted


def test_large_groups_are_split_into_parts_with_their_own_headers(cypher_store, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "PART_ROWS", 2)
    cypher_store.merge_nodes(schema.TOKEN, pl.DataFrame({"uid": [f"tok:{i}" for i in range(5)],
                                                         "text": ["a", "b", "c", "d", "e"]}))
    summary = write_neo4j_import(cypher_store, tmp_path / "out")
    assert summary.nodes["Token"] == 5
    parts = sorted((tmp_path / "out").glob("nodes-Token-*.csv"))
    assert [p.name for p in parts] == ["nodes-Token-0.csv", "nodes-Token-1.csv", "nodes-Token-2.csv"]
    assert [len(read_csv(p)[1]) for p in parts] == [2, 2, 1]
    assert all(read_csv(p)[0] == ["uid:ID(Token)", "text:string"] for p in parts)


def test_refusals_leave_no_files(cypher_store, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not an empty directory"):
        write_neo4j_import(cypher_store, busy)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    cypher_store.query("CREATE (:Stray {uid: 's'})", write=True)
    with pytest.raises(ConfigError, match="nodes labelled Stray are not in compgraph's vocabulary"):
        write_neo4j_import(cypher_store, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="Stray"):
        write_neo4j_import(cypher_store, empty)
    assert empty.is_dir() and not any(empty.iterdir())  # the user's directory stays, empty
    cypher_store.query("MATCH (n:Stray) DETACH DELETE n", write=True)
    cypher_store.query("CREATE (:Token {text: 'no uid'})", write=True)
    with pytest.raises(ConfigError, match="a node labelled Token has no uid"):
        write_neo4j_import(cypher_store, tmp_path / "out")


def test_integers_and_floats_of_one_property_go_to_separate_files(cypher_store, tmp_path):
    cypher_store.merge_nodes(schema.TOKEN, pl.DataFrame({"uid": ["tok:0", "tok:1"], "n": [3, 4]}))
    cypher_store.merge_nodes(schema.TOKEN, pl.DataFrame({"uid": ["tok:2"], "n": [0.5]}))
    summary = write_neo4j_import(cypher_store, tmp_path / "out")
    assert summary.nodes["Token"] == 3
    assert read_csv(tmp_path / "out" / "nodes-Token-0a.csv") == (["uid:ID(Token)", "n:long"],
                                                                [['"tok:0"', "3"], ['"tok:1"', "4"]])
    assert read_csv(tmp_path / "out" / "nodes-Token-0b.csv") == (["uid:ID(Token)", "n:double"], [['"tok:2"', "0.5"]])
    args = (tmp_path / "out" / "import.args").read_text().splitlines()
    assert "--multiline-fields=true" not in args  # no string spans lines: the importer may read in parallel
    assert {"--nodes=Token=nodes-Token-0a.csv", "--nodes=Token=nodes-Token-0b.csv"} <= set(args)
