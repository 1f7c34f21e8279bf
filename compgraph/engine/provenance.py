"""Reading provenance back: the runs a store holds, as a frame."""

from __future__ import annotations

import polars as pl

from compgraph import schema
from compgraph.store.base import GraphStore

P = schema.Prop
RUN_COLUMNS = ("uid", P.MODEL, P.STAGE, P.SCOPE, P.STAGE_VERSION, P.STATUS, P.CONFIG, P.STARTED_AT, P.FINISHED_AT,
               P.SECONDS, P.COMPUTE_SECONDS, P.WRITE_SECONDS, P.PEAK_MB, P.ROWS_WRITTEN, P.SUPERSEDED_BY,
               P.CODE_VERSION)


def runs_frame(store: GraphStore, model: str | None = None) -> pl.DataFrame:
    """One row per :Run (newest first): uid, model, stage, scope (the task of an effects
    run, with its method), stage_version, status, config, started_at, finished_at, seconds
    (wall, start to finish), compute_seconds and write_seconds (summed over shards),
    peak_mb (the largest peak RSS of its shards, MiB: :mod:`compgraph.engine.profile`),
    rows_written, superseded_by, code_version."""
    found = store.nodes(schema.RUN, where={P.MODEL: model} if model else None)
    found = found.with_columns([pl.lit(None).alias(c) for c in RUN_COLUMNS if c not in found.columns])
    return found.select(RUN_COLUMNS).sort(P.STARTED_AT, descending=True, nulls_last=True)
