"""Turning polars frames into parameter rows, and query records into frames.

Both stores share this; neither engine sees a DataFrame.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, NamedTuple

import polars as pl

from compgraph.errors import ConfigError
from compgraph.schema import RelKind

SOURCE = "src"
TARGET = "dst"

_SCALAR = (bool, int, float, str)


class NodeRow(NamedTuple):  # NamedTuple, not a frozen dataclass: a million are built per call
    uid: str
    props: dict[str, Any]

    def param(self) -> dict[str, Any]:
        return {"uid": self.uid, "props": self.props}


class EdgeRow(NamedTuple):
    src: str
    dst: str
    props: dict[str, Any]  # every property, the key properties included


class EdgeRows(NamedTuple):
    """Validated edge rows with what the merge needs to know about them as a whole."""

    rows: list[EdgeRow]
    key: tuple[str, ...]
    sources: list[str]  # distinct
    targets: list[str]  # distinct

    def identity(self, row: EdgeRow) -> tuple:
        return (row.src, row.dst, *(row.props.get(k) for k in self.key))

    def param(self, row: EdgeRow) -> dict[str, Any]:
        return {"src": row.src, "dst": row.dst, "key": {k: row.props.get(k) for k in self.key},
                "props": row.props}


_SCALAR_DTYPES = (pl.Boolean, pl.String, pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16,
                  pl.UInt32, pl.UInt64, pl.Float32, pl.Float64)


def _check_value(column: str, value: Any) -> Any:
    """A property value a property graph can store: a scalar or a list of one scalar type."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is None or isinstance(value, _SCALAR):
        return value
    if isinstance(value, list):
        kinds = {float if type(v) is int else type(v) for v in value}  # ints mix with floats
        if len(kinds) > 1 or not kinds <= set(_SCALAR):
            raise ConfigError(
                f"column {column!r}: a list property must hold scalars of one type and no "
                f"nulls, got {sorted(k.__name__ for k in kinds)}"
            )
        return value
    raise ConfigError(
        f"column {column!r}: property values must be scalars or lists of scalars, "
        f"got {type(value).__name__}"
    )


def _clean(frame: pl.DataFrame, required: tuple[str, ...], identity: list[str]) -> pl.DataFrame:
    """Check columns, turn NaN into null, keep the last row of each identity."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ConfigError(f"frame lacks column(s) {', '.join(missing)}")
    for column in required:
        if frame[column].null_count():
            raise ConfigError(f"column {column!r} has nulls")
    fixes = []
    for name, dtype in frame.schema.items():
        if isinstance(dtype, _SCALAR_DTYPES) or dtype in _SCALAR_DTYPES:
            if dtype in (pl.Float32, pl.Float64):
                fixes.append(pl.col(name).fill_nan(None))
        elif isinstance(dtype, pl.List) and dtype.inner in _SCALAR_DTYPES:
            if frame[name].list.eval(pl.element().is_null().any()).list.first().any():
                raise ConfigError(f"column {name!r}: a list property must not hold nulls")
        elif dtype == pl.Null:
            continue
        else:  # structs, objects, nested lists: check value by value for a precise message
            for value in frame[name].to_list():
                _check_value(name, value)
    if fixes:
        frame = frame.with_columns(fixes)
    return frame.unique(subset=identity, keep="last", maintain_order=True)


def _prop_dicts(frame: pl.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    """One property dict per row, built column-wise; a null means "not measured" and is
    left out, so a merge never erases a stored value."""
    if not columns:
        return [{} for _ in range(frame.height)]
    dicts = frame.select(columns).to_dicts()
    if any(frame[c].null_count() for c in columns):
        dicts = [{k: v for k, v in d.items() if v is not None} for d in dicts]
    return dicts


def node_rows(frame: pl.DataFrame) -> list[NodeRow]:
    """Validated rows, one per uid (the last row of a uid wins)."""
    frame = _clean(frame, ("uid",), ["uid"]).with_columns(pl.col("uid").cast(pl.String))
    props = _prop_dicts(frame, [c for c in frame.columns if c != "uid"])
    return [NodeRow(uid, p) for uid, p in zip(frame["uid"].to_list(), props)]


def edge_rows(rel: RelKind, frame: pl.DataFrame) -> EdgeRows:
    """Validated rows, one per edge identity (the last row wins)."""
    key = tuple(str(k) for k in rel.key)
    identity = [SOURCE, TARGET, *key]
    frame = _clean(frame, tuple(identity), identity).with_columns(
        pl.col(SOURCE).cast(pl.String), pl.col(TARGET).cast(pl.String))
    props = _prop_dicts(frame, [c for c in frame.columns if c not in (SOURCE, TARGET)])
    rows = [EdgeRow(s, d, p) for s, d, p in zip(frame[SOURCE].to_list(), frame[TARGET].to_list(), props)]
    return EdgeRows(rows, key, frame[SOURCE].unique(maintain_order=True).to_list(),
                    frame[TARGET].unique(maintain_order=True).to_list())


def chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _series(name: str, values: list[Any]) -> pl.Series:
    try:
        return pl.Series(name, values)
    except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError):
        if all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
            return pl.Series(name, [None if v is None else float(v) for v in values], dtype=pl.Float64)
        return pl.Series(name, values, dtype=pl.Object)  # truly mixed: keep the values as they are


def to_frame(records: list[dict[str, Any]], columns: list[str] | None = None) -> pl.DataFrame:
    """Query records as a frame; keeps column order; a mixed column never loses values."""
    if not records:
        return pl.DataFrame({c: [] for c in columns or []})
    columns = columns or list(records[0].keys())
    return pl.DataFrame([_series(c, [r.get(c) for r in records]) for c in columns])
