"""One contract for every GraphStore: the in-memory store, embedded ArcadeDB, ArcadeDB
over Bolt, and a real Neo4j when NEO4J_URI is set.

Writes and typed reads are checked on every backend (``store``); raw Cypher on the
backends that run it (``cypher_store``): the in-memory store refuses it by design."""

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


def n_nodes(store, kind) -> int:
    return store.nodes(kind).height


def n_edges(store, rel) -> int:
    return store.edges(rel).height


def test_same_frame_twice_leaves_same_counts(store):
    first = store.merge_nodes(schema.NEURON, neurons(25))
    second = store.merge_nodes(schema.NEURON, neurons(25))
    assert (first.created, second.created, second.updated) == (25, 0, 25)
    assert n_nodes(store, schema.NEURON) == 25
    assert n_nodes(store, schema.COMPONENT) == 25
    store.merge_nodes(schema.TOKEN, tokens(5))
    edges = pl.DataFrame({"src": [schema.neuron_uid("m", 0, i) for i in range(5)],
                          "dst": [schema.token_uid("tok", i) for i in range(5)],
                          "via": ["out"] * 5, "logit": [1.0] * 5, "rank": [0] * 5})
    assert store.merge_edges(schema.DECODES_TO, edges).created == 5
    again = store.merge_edges(schema.DECODES_TO, edges)
    assert (again.created, again.unchanged) == (0, 5)
    assert n_edges(store, schema.DECODES_TO) == 5


def test_property_updates_keep_other_properties(store):
    store.merge_nodes(schema.NEURON, neurons(3))
    update = pl.DataFrame({"uid": [schema.neuron_uid("m", 0, 1)], "act_mean": [42.5],
                           "act_max": [None]}, schema_overrides={"act_max": pl.Float64})
    store.merge_nodes(schema.NEURON, update)
    row = store.nodes(schema.NEURON, uids=[schema.neuron_uid("m", 0, 1)]).row(0, named=True)
    assert (row["act_mean"], row["index"], row["vec"], row.get("act_max")) == (42.5, 1, [1.0, 0.5, -1.25], None)


def test_edges_keyed_by_key_properties(store):
    store.merge_nodes(schema.NEURON, neurons(2))
    store.merge_nodes(schema.TOKEN, tokens(2))
    src, dst = schema.neuron_uid("m", 0, 0), schema.token_uid("tok", 1)
    rows = pl.DataFrame({"src": [src, src], "dst": [dst, dst], "via": ["out", "in"], "logit": [2.0, -1.0]})
    assert store.merge_edges(schema.DECODES_TO, rows).created == 2
    changed = store.merge_edges(schema.DECODES_TO, rows.with_columns(pl.Series("logit", [3.0, -1.0])))
    assert (changed.created, changed.updated, changed.unchanged) == (0, 1, 1)
    got = store.edges(schema.DECODES_TO, source_where={"uid": src}).sort("via")
    assert got.select("dst", "via", "logit").to_dicts() == [{"dst": dst, "via": "in", "logit": -1.0},
                                                           {"dst": dst, "via": "out", "logit": 3.0}]


def test_missing_endpoint_is_an_error_and_writes_nothing(store):
    store.merge_nodes(schema.NEURON, neurons(2))
    store.merge_nodes(schema.TOKEN, tokens(2))
    rows = pl.DataFrame({"src": [schema.neuron_uid("m", 0, 0), schema.neuron_uid("m", 0, 1)],
                         "dst": [schema.token_uid("tok", 0), "tok:999"], "via": ["out", "out"]})
    with pytest.raises(MissingEndpointError) as info:
        store.merge_edges(schema.DECODES_TO, rows)
    assert info.value.missing == ["tok:999"] and info.value.count == 1
    assert n_edges(store, schema.DECODES_TO) == 0
    skipped = store.merge_edges(schema.DECODES_TO, rows, on_missing="skip")
    assert (skipped.created, skipped.skipped) == (1, 1)
    assert n_edges(store, schema.DECODES_TO) == 1


HOSTILE = "x'}) MATCH (n) DETACH DELETE n //\"; DROP"


def test_parameters_stay_data(cypher_store):
    store = cypher_store
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
def test_read_only_unless_write(cypher_store, statement):
    store = cypher_store
    store.merge_nodes(schema.NEURON, neurons(3))
    with pytest.raises(ReadOnlyViolation):
        store.query(statement)
    assert count(store, "(n:X)") == 0
    assert count(store, "(n:Neuron)") == 3
    assert store.query("MATCH (n:Neuron) WHERE n.flag IS NOT NULL RETURN count(n) AS c")["c"][0] == 0


def test_write_allowed_with_flag(cypher_store):
    store = cypher_store
    store.query("CREATE (:X {a: 1})", write=True)
    assert count(store, "(n:X)") == 1


def test_failing_statement_leaves_nothing_half_written(cypher_store):
    store = cypher_store
    with pytest.raises(QueryError):
        store.query("UNWIND [1, 2, 0] AS x CREATE (:X {v: 10 / x})", write=True)
    assert count(store, "(n:X)") == 0


def test_invalid_row_rejects_whole_frame_before_writing(store):
    frame = neurons(1000).with_columns(
        pl.Series("extra", [{"a": 1} if i == 500 else None for i in range(1000)]))
    with pytest.raises(ConfigError, match="extra"):
        store.merge_nodes(schema.NEURON, frame, batch_size=100)
    assert n_nodes(store, schema.NEURON) == 0


def test_query_errors_are_query_errors(cypher_store):
    store = cypher_store
    with pytest.raises(QueryError, match="(?i)syntax"):
        store.query("MATCH (n RETURN n")
    with pytest.raises(QueryError, match="(?i)parameter"):
        store.query("RETURN $absent AS a")


def test_data_survives_close_and_reopen(store_factory):
    with store_factory() as s:
        s.merge_nodes(schema.NEURON, neurons(12))
    with store_factory() as s:
        assert n_nodes(s, schema.NEURON) == 12
        assert s.schema_version() == schema.SCHEMA_VERSION


def test_newer_schema_version_is_refused(cypher_store_factory):
    store_factory = cypher_store_factory
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
    assert n_edges(store, schema.DECODES_TO) == 95


# ---- typed reads, deletes and replacing merges ----------------------------------------------

def decodes(src_layer_index: list[tuple[int, int]], tokens_: list[int], run: str, via: str = "out") -> pl.DataFrame:
    return pl.DataFrame({"src": [schema.neuron_uid("m", layer, i) for layer, i in src_layer_index],
                         "dst": [schema.token_uid("tok", t) for t in tokens_], "via": via,
                         "rank": list(range(len(tokens_))), "run": run})


def test_typed_node_reads_filter_by_uid_and_properties(store):
    store.merge_nodes(schema.NEURON, neurons(30))
    store.merge_nodes(schema.HEAD, pl.DataFrame({"uid": ["m/L0/H0"], "model": ["m"], "layer": [0], "head": [0]}))
    by_uid = store.nodes(schema.NEURON, uids=[schema.neuron_uid("m", 2, 3), "absent", schema.neuron_uid("m", 0, 1)])
    assert sorted(by_uid["uid"].to_list()) == [schema.neuron_uid("m", 0, 1), schema.neuron_uid("m", 2, 3)]
    layer_one = store.nodes(schema.NEURON, where={"layer": 1})
    assert sorted(layer_one["index"].to_list()) == list(range(10))
    some = store.nodes(schema.NEURON, where={"layer": [0, 2], "index": 4})
    assert sorted(some["uid"].to_list()) == [schema.neuron_uid("m", 0, 4), schema.neuron_uid("m", 2, 4)]
    assert store.nodes(schema.HEAD)["uid"].to_list() == ["m/L0/H0"]  # kinds do not leak into each other
    assert store.nodes(schema.COMPONENT).height == 31
    assert store.nodes(schema.NEURON, uids=["m/L0/H0"]).height == 0
    assert store.nodes(schema.NEURON, where={"layer": 9}).height == 0


def test_typed_reads_keep_heterogeneous_properties(store):
    store.merge_nodes(schema.RUN, pl.DataFrame([{"uid": "r1", "stage": "a", "done": ["x", "y"]}]))
    store.merge_nodes(schema.RUN, pl.DataFrame([{"uid": "r2", "stage": "b", "seconds": 1.5}]))
    rows = {r["uid"]: r for r in store.nodes(schema.RUN).to_dicts()}
    assert rows["r1"]["done"] == ["x", "y"] and rows["r1"].get("seconds") is None
    assert rows["r2"]["seconds"] == 1.5 and rows["r2"]["stage"] == "b"


def test_edge_reads_and_deletes_by_run_and_source(store):
    store.merge_nodes(schema.NEURON, neurons(20))
    store.merge_nodes(schema.NEURON, neurons(10, model="other"))
    store.merge_nodes(schema.TOKEN, tokens(5))
    store.merge_edges(schema.DECODES_TO, decodes([(0, 0), (0, 1), (1, 0)], [0, 1, 2], "r1"))
    store.merge_edges(schema.DECODES_TO, decodes([(1, 1)], [3], "r2"))
    other = pl.DataFrame({"src": [schema.neuron_uid("other", 0, 0)], "dst": [schema.token_uid("tok", 4)],
                          "via": ["out"], "run": ["r1"]})
    store.merge_edges(schema.DECODES_TO, other)
    assert store.edges(schema.DECODES_TO, where={"run": "r1"}).height == 4
    assert store.edges(schema.DECODES_TO, where={"run": "r1"}, source_where={"model": "m"}).height == 3
    to_tokens_0_1 = store.edges(schema.DECODES_TO, source_where={"model": "m"}, target_where={"id": [0, 1]})
    assert sorted(to_tokens_0_1["src"].to_list()) == [schema.neuron_uid("m", 0, 0), schema.neuron_uid("m", 0, 1)]
    assert store.edges(schema.DECODES_TO, target_where={"uid": [schema.token_uid("tok", 3), schema.token_uid("tok", 4)]}) \
        .sort("dst")["dst"].to_list() == [schema.token_uid("tok", 3), schema.token_uid("tok", 4)]
    got = store.edges(schema.DECODES_TO, where={"run": "r2"})
    assert got.select("src", "dst", "rank").to_dicts() == [
        {"src": schema.neuron_uid("m", 1, 1), "dst": schema.token_uid("tok", 3), "rank": 0}]
    assert store.delete_edges(schema.DECODES_TO, where={"run": ["r1", "r9"]}, source_where={"model": "m"}) == 3
    left = store.edges(schema.DECODES_TO)
    assert sorted(left["run"].to_list()) == ["r1", "r2"] and n_nodes(store, schema.NEURON) == 30


def test_lean_edge_reads_return_the_named_properties_alone(store):
    store.merge_nodes(schema.NEURON, neurons(4))
    store.merge_nodes(schema.TOKEN, tokens(3))
    rows = decodes([(0, 0), (0, 1), (0, 2)], [0, 1, 2], "r1").with_columns(
        logit=pl.Series([0.5, -1.25, 2.0]))
    store.merge_edges(schema.DECODES_TO, rows)
    lean = store.edges(schema.DECODES_TO, source_where={"model": "m"}, properties=["logit", "rank", "absent"])
    assert lean.columns == ["src", "dst", "logit", "rank", "absent"]
    assert lean.sort("rank").select("src", "logit", "rank").to_dicts() == [
        {"src": schema.neuron_uid("m", 0, i), "logit": w, "rank": i} for i, w in enumerate([0.5, -1.25, 2.0])]
    assert lean["absent"].to_list() == [None, None, None]
    full = store.edges(schema.DECODES_TO).select("src", "dst", "logit", "rank")
    assert lean.select("src", "dst", "logit", "rank").sort("rank").equals(full.sort("rank"))
    none = store.edges(schema.DECODES_TO, where={"run": "r9"}, properties=["rank"])
    assert none.height == 0 and none.columns == ["src", "dst", "rank"]
    for bad in (["rank", "rank"], ["src"]):
        with pytest.raises(ConfigError, match="distinct and not src or dst"):
            store.edges(schema.DECODES_TO, properties=bad)


def test_replacing_merge_deletes_the_stale_edges_of_named_runs(store):
    store.merge_nodes(schema.NEURON, neurons(10))
    store.merge_nodes(schema.TOKEN, tokens(6))
    store.merge_edges(schema.DECODES_TO, decodes([(0, 0)] * 4, [0, 1, 2, 3], "old"))
    store.merge_edges(schema.DECODES_TO, decodes([(0, 0)], [5], "another-stage"))
    store.merge_edges(schema.DECODES_TO, decodes([(0, 1)] * 2, [0, 1], "old"))
    result = store.merge_edges(schema.DECODES_TO, decodes([(0, 0)] * 2, [0, 1], "new"), replace={"old", "new"})
    assert (result.created, result.updated, result.deleted) == (0, 2, 2)
    left = store.edges(schema.DECODES_TO).sort("src", "dst")
    assert left.select("src", "dst", "run").rows() == [
        (schema.neuron_uid("m", 0, 0), schema.token_uid("tok", 0), "new"),
        (schema.neuron_uid("m", 0, 0), schema.token_uid("tok", 1), "new"),
        (schema.neuron_uid("m", 0, 0), schema.token_uid("tok", 5), "another-stage"),  # not a replaced run
        (schema.neuron_uid("m", 0, 1), schema.token_uid("tok", 0), "old"),  # not a source of this merge
        (schema.neuron_uid("m", 0, 1), schema.token_uid("tok", 1), "old"),
    ]


def test_remove_properties_where(store):
    store.merge_nodes(schema.NEURON, neurons(20).with_columns(pl.Series("run_x", ["a"] * 10 + ["b"] * 10)))
    assert store.remove_properties(schema.NEURON, ["act_mean", "vec"], where={"run_x": "a"}) == 10
    rows = store.nodes(schema.NEURON).sort("uid").to_dicts()
    assert all(r.get("act_mean") is None and r.get("vec") is None for r in rows if r["run_x"] == "a")
    assert all(r["act_mean"] is not None and r["index"] is not None for r in rows if r["run_x"] == "b")
