"""One contract for every GraphStore: embedded ArcadeDB, ArcadeDB over Bolt, and a real
Neo4j when NEO4J_URI is set."""

from __future__ import annotations

import polars as pl
import pytest

from compgraph import schema
from compgraph.errors import (
    ConfigError,
    MissingEndpointError,
    QueryError,
    ReadOnlyViolation,
    SchemaVersionError,
)


def neurons(n: int, model: str = "m", **extra) -> pl.DataFrame:
    return pl.DataFrame({
        "uid": [schema.neuron_uid(model, i // 10, i % 10) for i in range(n)],
        "model": [model] * n,
        "layer": [i // 10 for i in range(n)],
        "index": [i % 10 for i in range(n)],
        "act_mean": [i / 7 for i in range(n)],
        "vec": [[float(i), 0.5, -1.25] for i in range(n)],
        **extra,
    })


def tokens(n: int) -> pl.DataFrame:
    return pl.DataFrame({"uid": [schema.token_uid("tok", i) for i in range(n)],
                         "id": list(range(n)), "text": [f"t{i}" for i in range(n)]})


def count(store, pattern: str) -> int:
    return store.query(f"MATCH {pattern} RETURN count(*) AS c")["c"][0]


def test_same_frame_twice_leaves_same_counts(store):
    first = store.merge_nodes(schema.NEURON, neurons(25))
    second = store.merge_nodes(schema.NEURON, neurons(25))
    assert (first.created, second.created, second.updated) == (25, 0, 25)
    assert count(store, "(n:Neuron)") == 25
    assert count(store, "(n:Component)") == 25
    store.merge_nodes(schema.TOKEN, tokens(5))
    edges = pl.DataFrame({"src": [schema.neuron_uid("m", 0, i) for i in range(5)],
                          "dst": [schema.token_uid("tok", i) for i in range(5)],
                          "via": ["out"] * 5, "logit": [1.0] * 5, "rank": [0] * 5})
    assert store.merge_edges(schema.DECODES_TO, edges).created == 5
    again = store.merge_edges(schema.DECODES_TO, edges)
    assert (again.created, again.unchanged) == (0, 5)
    assert count(store, "()-[e:DECODES_TO]->()") == 5


def test_property_updates_keep_other_properties(store):
    store.merge_nodes(schema.NEURON, neurons(3))
    update = pl.DataFrame({"uid": [schema.neuron_uid("m", 0, 1)], "act_mean": [42.5],
                           "act_max": [None]}, schema_overrides={"act_max": pl.Float64})
    store.merge_nodes(schema.NEURON, update)
    row = store.query("MATCH (n:Neuron {uid: $u}) RETURN n.act_mean AS a, n.index AS i, n.vec AS v, "
                      "n.act_max AS mx", {"u": schema.neuron_uid("m", 0, 1)}).row(0, named=True)
    assert row == {"a": 42.5, "i": 1, "v": [1.0, 0.5, -1.25], "mx": None}


def test_edges_keyed_by_key_properties(store):
    store.merge_nodes(schema.NEURON, neurons(2))
    store.merge_nodes(schema.TOKEN, tokens(2))
    src, dst = schema.neuron_uid("m", 0, 0), schema.token_uid("tok", 1)
    rows = pl.DataFrame({"src": [src, src], "dst": [dst, dst], "via": ["out", "in"], "logit": [2.0, -1.0]})
    assert store.merge_edges(schema.DECODES_TO, rows).created == 2
    changed = store.merge_edges(schema.DECODES_TO, rows.with_columns(pl.Series("logit", [3.0, -1.0])))
    assert (changed.created, changed.updated, changed.unchanged) == (0, 1, 1)
    got = store.query("MATCH (:Neuron {uid: $s})-[e:DECODES_TO]->(:Token {uid: $d}) "
                      "RETURN e.via AS via, e.logit AS logit ORDER BY via", {"s": src, "d": dst})
    assert got.to_dicts() == [{"via": "in", "logit": -1.0}, {"via": "out", "logit": 3.0}]


def test_missing_endpoint_is_an_error_and_writes_nothing(store):
    store.merge_nodes(schema.NEURON, neurons(2))
    store.merge_nodes(schema.TOKEN, tokens(2))
    rows = pl.DataFrame({"src": [schema.neuron_uid("m", 0, 0), schema.neuron_uid("m", 0, 1)],
                         "dst": [schema.token_uid("tok", 0), "tok:999"], "via": ["out", "out"]})
    with pytest.raises(MissingEndpointError) as info:
        store.merge_edges(schema.DECODES_TO, rows)
    assert info.value.missing == ["tok:999"] and info.value.count == 1
    assert count(store, "()-[e:DECODES_TO]->()") == 0
    skipped = store.merge_edges(schema.DECODES_TO, rows, on_missing="skip")
    assert (skipped.created, skipped.skipped) == (1, 1)
    assert count(store, "()-[e:DECODES_TO]->()") == 1


HOSTILE = "x'}) MATCH (n) DETACH DELETE n //\"; DROP"


def test_parameters_stay_data(store):
    store.merge_nodes(schema.TOKEN, pl.DataFrame({"uid": ["tok:q"], "id": [1], "text": [HOSTILE]}))
    got = store.query("RETURN $s AS s, $f AS f, $l AS l, $strs AS strs",
                      {"s": HOSTILE, "f": 0.125, "l": [1.5, -2.0], "strs": ["a'b", 'c"d']})
    assert got.row(0, named=True) == {"s": HOSTILE, "f": 0.125, "l": [1.5, -2.0], "strs": ["a'b", 'c"d']}
    found = store.query("MATCH (t:Token) WHERE t.text = $s RETURN t.uid AS uid", {"s": HOSTILE})
    assert found["uid"].to_list() == ["tok:q"]
    assert count(store, "(t:Token)") == 1


@pytest.mark.parametrize("statement", [
    "CREATE (:X {a: 1})",
    "MATCH (n:Neuron) SET n.flag = true",
    "MATCH (n:Neuron) DETACH DELETE n",
    "MERGE (n:X {a: 2}) RETURN n",
    "CREATE INDEX x_a IF NOT EXISTS FOR (n:X) ON (n.a)",
])
def test_read_only_unless_write(store, statement):
    store.merge_nodes(schema.NEURON, neurons(3))
    with pytest.raises(ReadOnlyViolation):
        store.query(statement)
    assert count(store, "(n:X)") == 0
    assert count(store, "(n:Neuron)") == 3
    assert store.query("MATCH (n:Neuron) WHERE n.flag IS NOT NULL RETURN count(n) AS c")["c"][0] == 0


def test_write_allowed_with_flag(store):
    store.query("CREATE (:X {a: 1})", write=True)
    assert count(store, "(n:X)") == 1


def test_failing_statement_leaves_nothing_half_written(store):
    with pytest.raises(QueryError):
        store.query("UNWIND [1, 2, 0] AS x CREATE (:X {v: 10 / x})", write=True)
    assert count(store, "(n:X)") == 0


def test_invalid_row_rejects_whole_frame_before_writing(store):
    frame = neurons(1000).with_columns(
        pl.Series("extra", [{"a": 1} if i == 500 else None for i in range(1000)]))
    with pytest.raises(ConfigError, match="extra"):
        store.merge_nodes(schema.NEURON, frame, batch_size=100)
    assert count(store, "(n:Neuron)") == 0


def test_query_errors_are_query_errors(store):
    with pytest.raises(QueryError, match="(?i)syntax"):
        store.query("MATCH (n RETURN n")
    with pytest.raises(QueryError, match="(?i)parameter"):
        store.query("RETURN $absent AS a")


def test_data_survives_close_and_reopen(store_factory):
    with store_factory() as s:
        s.merge_nodes(schema.NEURON, neurons(12))
    with store_factory() as s:
        assert count(s, "(n:Neuron)") == 12
        assert s.schema_version() == schema.SCHEMA_VERSION


def test_newer_schema_version_is_refused(store_factory):
    with store_factory() as s:
        s.query("MATCH (m:CompgraphMeta {uid: $u}) SET m.schema_version = $v",
                {"u": schema.META_UID, "v": schema.SCHEMA_VERSION + 1}, write=True)
    with pytest.raises(SchemaVersionError, match="upgrade"):
        store_factory()


def test_batches_smaller_than_frame(store):
    result = store.merge_nodes(schema.NEURON, neurons(95), batch_size=10)
    assert result.created == 95
    store.merge_nodes(schema.TOKEN, tokens(10))
    edges = pl.DataFrame({"src": [schema.neuron_uid("m", i // 10, i % 10) for i in range(95)],
                          "dst": [schema.token_uid("tok", i % 10) for i in range(95)],
                          "via": ["out"] * 95, "rank": list(range(95))})
    assert store.merge_edges(schema.DECODES_TO, edges, batch_size=7).created == 95
    assert count(store, "(:Neuron)-[:DECODES_TO]->(:Token)") == 95
