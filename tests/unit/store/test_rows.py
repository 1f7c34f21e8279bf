"""Frame validation and conversion shared by every store."""

from __future__ import annotations

import gc

import polars as pl
import pytest

from compgraph import schema
from compgraph.errors import ConfigError, QueryError
from compgraph.store import cypher
from compgraph.store.rows import edge_rows, gc_paused, node_rows, to_frame


def test_node_rows_dedupe_last_wins_and_drop_nulls():
    frame = pl.DataFrame({"uid": ["a", "b", "a"], "x": [1.0, None, 3.0], "v": [[1, 2], [3], [4]]})
    rows = node_rows(frame)
    assert sorted((r.uid, r.props) for r in rows) == [("a", {"x": 3.0, "v": [4]}), ("b", {"v": [3]})]


def test_nan_is_not_stored():
    assert node_rows(pl.DataFrame({"uid": ["a"], "x": [float("nan")]}))[0].props == {}


@pytest.mark.parametrize("bad", [
    pl.Series("p", [{"k": 1}]),
    pl.Series("p", [[1, "a"]], dtype=pl.Object),
    pl.Series("p", [[1.0, None]]),
])
def test_unstorable_values_are_rejected(bad):
    frame = pl.DataFrame({"uid": ["a"]}).with_columns(bad)
    with pytest.raises(ConfigError, match="'p'"):
        node_rows(frame)


def test_uid_required_and_not_null():
    with pytest.raises(ConfigError, match="uid"):
        node_rows(pl.DataFrame({"x": [1]}))
    with pytest.raises(ConfigError, match="nulls"):
        node_rows(pl.DataFrame({"uid": ["a", None]}))


def test_edge_rows_identity_includes_key():
    frame = pl.DataFrame({"src": ["a", "a", "a"], "dst": ["t", "t", "t"], "via": ["out", "in", "out"],
                          "logit": [1.0, 2.0, 3.0]})
    prepared = edge_rows(schema.DECODES_TO, frame)
    got = sorted((r.props["via"], r.props["logit"]) for r in prepared.rows)
    assert got == [("in", 2.0), ("out", 3.0)]
    assert prepared.sources == ["a"] and prepared.targets == ["t"]
    assert {prepared.identity(r) for r in prepared.rows} == {("a", "t", "in"), ("a", "t", "out")}
    with pytest.raises(ConfigError, match="via"):
        edge_rows(schema.DECODES_TO, frame.drop("via"))


def test_identifiers_only_from_vocabulary():
    assert cypher.ident("Neuron") == "Neuron"
    with pytest.raises(QueryError):
        cypher.ident("Neuron) DETACH DELETE (n")
    assert "$rows" in cypher.merge_edges(schema.DECODES_TO)


def test_to_frame_keeps_column_order_and_mixed_types():
    frame = to_frame([{"b": 1, "a": "x"}, {"b": "two", "a": None}])
    assert frame.columns == ["b", "a"] and frame["b"].to_list() == [1, "two"]
    assert to_frame([], ["x"]).columns == ["x"]
    assert to_frame([{"n": 1}, {"n": 2.5}])["n"].to_list() == [1.0, 2.5]


def test_schema_uids_and_kinds():
    assert schema.neuron_uid("m", 3, 7) == "m/L3/N7"
    assert schema.HEAD.key_label == "Component" and "Head" in schema.HEAD.labels
    assert len({k.type for k in schema.REL_KINDS}) == len(schema.REL_KINDS)
    tok_a = schema.tokenizer_uid("gpt2", {"a": 0, "b": 1})
    assert tok_a == schema.tokenizer_uid("gpt2", {"b": 1, "a": 0}) != schema.tokenizer_uid("gpt2", {"a": 1, "b": 0})


def test_gc_paused_restores_the_collector_and_leaves_it_as_the_caller_had_it():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()

    @gc_paused()
    def fails():
        assert not gc.isenabled()
        raise ValueError("inside")
    with pytest.raises(ValueError, match="inside"):
        fails()
    assert gc.isenabled()  # restored on an exception too
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the caller had it off: left off
    finally:
        gc.enable()
