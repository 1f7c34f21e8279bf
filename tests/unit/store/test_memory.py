"""The in-memory store, used directly: merges keyed on uid and edge identity, replacement of
a run's stale edges, typed reads with filters, and no Cypher."""

from __future__ import annotations

import polars as pl
import pytest

from compgraph import schema
from compgraph.errors import CypherUnsupported, MissingEndpointError
from compgraph.store.memory import MemoryStore


def test_merges_replace_stale_edges_and_read_back_with_filters():
    store = MemoryStore()
    store.merge_nodes(schema.HEAD, pl.DataFrame({"uid": ["m/L0/H0", "m/L1/H0"], "model": "m", "layer": [0, 1]}))
    again = store.merge_nodes(schema.HEAD, pl.DataFrame({"uid": ["m/L0/H0"], "layer": [0]}))
    assert (again.created, again.updated) == (0, 1)  # an existing uid: its properties set again
    rows = pl.DataFrame({"src": ["m/L0/H0"], "dst": ["m/L1/H0"], "kind": ["q_comp"], "weight": [0.5], "run": ["r1"]})
    assert store.merge_edges(schema.CONNECTS, rows).created == 1
    other = rows.with_columns(pl.lit("k_comp").alias("kind"), pl.lit("r2").alias("run"))
    result = store.merge_edges(schema.CONNECTS, other, replace={"r1", "r2"})  # r1's q_comp is not named: stale
    assert (result.created, result.deleted) == (1, 1)
    assert store.edges(schema.CONNECTS)["kind"].to_list() == ["k_comp"]
    assert store.nodes(schema.HEAD, where={"layer": 1})["uid"].to_list() == ["m/L1/H0"]
    assert store.nodes(schema.HEAD, where={"layer": [0, 1]}).height == 2
    assert store.edges(schema.CONNECTS, target_where={"layer": 0}).height == 0
    assert store.remove_properties(schema.HEAD, ["layer"], where={"uid": "m/L1/H0"}) == 1
    assert "layer" not in store.nodes(schema.HEAD, uids=["m/L1/H0"]).columns
    assert store.delete_edges(schema.CONNECTS, where={"run": "r2"}) == 1


def test_missing_endpoints_write_nothing_and_cypher_is_refused():
    store = MemoryStore()
    store.merge_nodes(schema.HEAD, pl.DataFrame({"uid": ["a"]}))
    rows = pl.DataFrame({"src": ["a", "a"], "dst": ["a", "zz"], "kind": ["v_comp", "q_comp"]})
    with pytest.raises(MissingEndpointError, match="nothing was written"):
        store.merge_edges(schema.CONNECTS, rows)
    assert store.edges(schema.CONNECTS).height == 0
    assert store.merge_edges(schema.CONNECTS, rows, on_missing="skip").skipped == 1
    with pytest.raises(CypherUnsupported):
        store.query("RETURN 1")
