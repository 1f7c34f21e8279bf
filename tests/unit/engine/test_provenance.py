"""Reading provenance back: one row per run, newest first, every column present."""

from __future__ import annotations

import polars as pl

from compgraph import schema
from compgraph.engine.provenance import RUN_COLUMNS, runs_frame
from compgraph.store.memory import MemoryStore


def test_runs_frame_lists_the_runs_of_a_model_newest_first():
    store = MemoryStore()
    store.merge_nodes(schema.RUN, pl.DataFrame([
        {"uid": "run:a:heads:1", "model": "a", "stage": "heads", "started_at": "2026-01-01T00:00:00"},
        {"uid": "run:a:neurons:2", "model": "a", "stage": "neurons", "started_at": "2026-01-02T00:00:00",
         "seconds": 3.5},
        {"uid": "run:b:heads:3", "model": "b", "stage": "heads", "started_at": "2026-01-03T00:00:00"}]))
    frame = runs_frame(store, "a")
    assert frame.columns == list(RUN_COLUMNS)
    assert frame["uid"].to_list() == ["run:a:neurons:2", "run:a:heads:1"]
    assert frame["seconds"].to_list() == [3.5, None]
    assert runs_frame(store).height == 3
    assert runs_frame(MemoryStore()).height == 0
