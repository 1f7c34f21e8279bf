"""What a store holds: counts per label and per relationship type."""

from __future__ import annotations

from typing import NamedTuple

import polars as pl

from compgraph.store.base import GraphStore

_LABELS = "MATCH (n) UNWIND labels(n) AS label RETURN label, count(*) AS count ORDER BY label"
_RELS = "MATCH ()-[r]->() RETURN type(r) AS type, count(*) AS count ORDER BY type"


class StoreInfo(NamedTuple):
    location: str
    schema_version: int | None
    labels: pl.DataFrame
    relationships: pl.DataFrame


def store_info(store: GraphStore) -> StoreInfo:
    """Counts per label and relationship type of any GraphStore that answers Cypher."""
    labels = store.query(_LABELS)
    rels = store.query(_RELS)
    if labels.is_empty():
        labels = pl.DataFrame({"label": [], "count": []}, schema={"label": pl.String, "count": pl.Int64})
    if rels.is_empty():
        rels = pl.DataFrame({"type": [], "count": []}, schema={"type": pl.String, "count": pl.Int64})
    return StoreInfo(store.location, store.schema_version(), labels, rels)
