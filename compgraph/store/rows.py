"""Turning polars frames into parameter rows, and query records into frames.

Both stores share this; neither engine sees a DataFrame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import polars as pl

from compgraph.errors import ConfigError
from compgraph.schema import RelKind

SOURCE = "src"
TARGET = "dst"

_SCALAR = (bool, int, float, str)


@dataclass(frozen=True)
class NodeRow:
    uid: str
    props: dict[str, Any]

    def param(self) -> dict[str, Any]:
        return {"uid": self.uid, "props": self.props}


@dataclass(frozen=True)
class EdgeRow:
    src: str
    dst: str
    key: dict[str, Any]
    props: dict[str, Any]

    @property
    def identity(self) -> tuple:
        return (self.src, self.dst, *self.key.values())

    def param(self) -> dict[str, Any]:
        return {"src": self.src, "dst": self.dst, "key": self.key, "props": self.props}

    def all_props(self) -> dict[str, Any]:
        return {**self.key, **self.props}


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


def _props(record: dict[str, Any], skip: Iterable[str]) -> dict[str, Any]:
    # a null means "not measured": never erase a stored value
    return {k: v for k, v in record.items() if v is not None and k not in skip}


def node_rows(frame: pl.DataFrame) -> list[NodeRow]:
    """Validated rows, one per uid (the last row of a uid wins)."""
    frame = _clean(frame, ("uid",), ["uid"]).with_columns(pl.col("uid").cast(pl.String))
    return [NodeRow(r["uid"], _props(r, ("uid",))) for r in frame.iter_rows(named=True)]


def edge_rows(rel: RelKind, frame: pl.DataFrame) -> list[EdgeRow]:
    """Validated rows, one per edge identity (the last row wins)."""
    identity = [SOURCE, TARGET, *rel.key]
    frame = _clean(frame, tuple(identity), identity).with_columns(
        pl.col(SOURCE).cast(pl.String), pl.col(TARGET).cast(pl.String))
    skip = set(identity)
    return [EdgeRow(r[SOURCE], r[TARGET], {str(k): r[k] for k in rel.key}, _props(r, skip))
            for r in frame.iter_rows(named=True)]


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
