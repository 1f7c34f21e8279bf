"""Turning polars frames into parameter rows, and query records into frames.

Both stores share this; neither engine sees a DataFrame. Query rows travel as
:class:`Records` (a stream of plain dicts, nodes and relationships as
:func:`node_value` / :func:`relationship_value` / :func:`path_value`) and become a
frame only where one is asked for (:func:`to_frame`), without losing a key or a value.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
import re
from typing import Any, Callable, Iterable, Iterator, NamedTuple

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


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a read or a write turns millions of rows
    into dicts (none of them in a cycle): each collection walks every live container, so
    with it on reading SmolLM2's 2.3 M ``CONNECTS`` cost 44 s instead of 14 s and writing
    edges ran at 48k instead of 69k a second (``benchmarks/store_write.py``). Restored on the
    way out (left off when the caller had it off); a context manager or a decorator."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


# ---- query results -------------------------------------------------------------------
#
# Both stores hand query rows over as plain Python values: scalars, lists, dicts, and
# the graph values below. Nothing is inferred from the first rows, so every key and
# every value of every row comes through.

def node_value(labels: Iterable[str], properties: dict[str, Any]) -> dict[str, Any]:
    """A node in a query row: ``{"labels": [...sorted], "properties": {...}}``."""
    return {"labels": sorted(str(label) for label in labels), "properties": properties}


def relationship_value(rel_type: str, properties: dict[str, Any]) -> dict[str, Any]:
    """A relationship in a query row: ``{"type": "DECODES_TO", "properties": {...}}``."""
    return {"type": str(rel_type), "properties": properties}


def path_value(nodes: list[dict[str, Any]], relationships: list[dict[str, Any]]) -> dict[str, Any]:
    """A path in a query row: its nodes and relationships in order."""
    return {"nodes": nodes, "relationships": relationships}


class Records:
    """The rows of one statement, read as they arrive: ``with store.records(q) as rows``.

    ``keys`` are the column names in ``RETURN`` order (empty for an empty result of
    a store that learns them from the first row). Iterating yields one dict per row.
    The rows come from an open cursor: read them inside the ``with`` block; leaving it
    (or :meth:`close`) releases the cursor, and a read transaction is rolled back.
    """

    def __init__(self, keys: Iterable[str], rows: Iterable[dict[str, Any]],
                 close: Callable[[], None] | None = None):
        self.keys = list(keys)
        self._rows = iter(rows)
        self._close = close

    @classmethod
    def stream(cls, rows: Iterator[dict[str, Any]], keys: Iterable[str] | None = None,
               close: Callable[[], None] | None = None) -> "Records":
        """Read the first row now, so a failing statement fails here, before any output;
        without ``keys``, the first row's keys name the columns."""
        try:
            first = next(rows, None)
        except BaseException:
            if close is not None:
                close()
            raise
        if keys is None:
            keys = list(first) if first is not None else []
        return cls(keys, rows if first is None else itertools.chain((first,), rows), close)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        return next(self._rows)

    def to_frame(self) -> pl.DataFrame:
        """Every remaining row as a frame (see :func:`to_frame`)."""
        with gc_paused():
            return to_frame(list(self), self.keys)

    def close(self) -> None:
        close, self._close = self._close, None
        if close is not None:
            close()

    def __enter__(self) -> "Records":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_CONFLICT = object()  # values that share no polars type


def _kind(value: Any) -> Any:
    """The polars type a value needs: a dtype, ("list", inner), ("struct", {key: kind}),
    None for a null, or _CONFLICT."""
    if value is None:
        return None
    t = type(value)
    if t is bool:
        return pl.Boolean
    if t is int:
        return pl.Int64 if -2**63 <= value < 2**63 else _CONFLICT
    if t is float:
        return pl.Float64
    if t is str:
        return pl.String
    if t is list:
        inner = None
        for item in value:
            inner = _merge(inner, _kind(item))
            if inner is _CONFLICT:
                return _CONFLICT
        return ("list", inner)
    if t is dict:
        fields: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                return _CONFLICT
            fields[key] = _kind(item)
            if fields[key] is _CONFLICT:
                return _CONFLICT
        return ("struct", fields)
    return _CONFLICT  # dates, decimals, ...: kept as objects when nested


def _merge(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    if a is _CONFLICT or b is _CONFLICT:
        return _CONFLICT
    if not isinstance(a, tuple) and not isinstance(b, tuple):
        if a is b:
            return a
        return pl.Float64 if {a, b} == {pl.Int64, pl.Float64} else _CONFLICT
    if isinstance(a, tuple) and isinstance(b, tuple) and a[0] == b[0]:
        if a[0] == "list":
            inner = _merge(a[1], b[1])
            return _CONFLICT if inner is _CONFLICT else ("list", inner)
        fields = dict(a[1])
        for key, kind in b[1].items():
            fields[key] = _merge(fields.get(key), kind)
            if fields[key] is _CONFLICT:
                return _CONFLICT
        return ("struct", fields)
    return _CONFLICT


def _dtype(kind: Any) -> pl.DataType:
    if kind is None:
        return pl.Null
    if isinstance(kind, tuple):
        if kind[0] == "list":
            return pl.List(_dtype(kind[1]))
        return pl.Struct({key: _dtype(k) for key, k in kind[1].items()})
    return kind


def _same(sent: Any, back: Any) -> bool:
    """Whether a value came back from polars unchanged (a struct's added keys are null;
    an int may come back as the float that equals it exactly)."""
    if sent is None:
        return back is None
    t = type(sent)
    if t is float:
        return type(back) is float and (back == sent or (math.isnan(sent) and math.isnan(back)))
    if t is int:
        if type(back) is int:
            return back == sent
        return type(back) is float and abs(sent) <= 2**53 and back == sent
    if t is dict:
        return type(back) is dict and all(_same(v, back.get(k)) for k, v in sent.items()) and all(
            back[k] is None for k in back.keys() - sent.keys())
    if t is list:
        return type(back) is list and len(back) == len(sent) and all(map(_same, sent, back))
    return type(back) is t and back == sent


def _series(name: str, values: list[Any]) -> pl.Series:
    """A column that holds every value as given: one scalar type as is; maps as a struct
    with every key any row has (null where a row lacks it); ints mixed with floats as
    floats where exact; anything that shares no type (mixed lists, a key holding an
    int here and a string there) as an Object column of the values themselves."""
    try:  # strict: raises on mixed scalar types; lists and maps are checked below, value by value
        series = pl.Series(name, values)
        if not (series.dtype.is_nested() or series.dtype == pl.Object) or \
                not any(type(v) in (list, dict) for v in values):  # other sequences (tuples) as polars reads them
            return series
    except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError):
        pass
    kind = None
    for value in values:
        kind = _merge(kind, _kind(value))
        if kind is _CONFLICT:
            break
    if kind is not _CONFLICT:
        try:
            series = pl.Series(name, values, dtype=_dtype(kind), strict=False)
        except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError):
            series = None
        if series is not None and all(map(_same, values, series.to_list())):
            return series
    return pl.Series(name, values, dtype=pl.Object)


def to_frame(records: list[dict[str, Any]], columns: list[str] | None = None) -> pl.DataFrame:
    """Query records as a frame that loses nothing; keeps column order (see :func:`_series`)."""
    if not records:
        return pl.DataFrame({c: [] for c in columns or []})
    columns = columns or list(records[0].keys())
    return pl.DataFrame([_series(c, [r.get(c) for r in records]) for c in columns])


# ---- what a statement does, read from its text -------------------------------------------
# The engines are the guard (ArcadeDB refuses a non-idempotent statement in a query,
# Neo4j any write in a read session); these let a store refuse a write before it
# streams a single row, and recognise the read procedures an engine refuses by mistake.

_SKIP = re.compile(r"//[^\n]*|/\*.*?\*/|'(?:\\.|[^'\\])*'|\"(?:\\.|[^\"\\])*\"|`[^`]*`", re.DOTALL)
_WRITE = re.compile(
    r"(?<![\w.$:])(CREATE|MERGE|SET|DELETE|DETACH|REMOVE|DROP|FOREACH|ALTER|GRANT|DENY|REVOKE|RENAME"
    r"|TERMINATE|(?:START|STOP|ENABLE)\s+(?:DATABASE|SERVER))(?!\w)(?!\s*:)",
    re.IGNORECASE,
)
_CALL = re.compile(r"^\s*CALL\s+([A-Za-z_][\w.]*)\s*(\(.*?\))?\s*(YIELD\b.*)?;?\s*$", re.IGNORECASE | re.DOTALL)
READ_PROCEDURES = frozenset({
    "db.labels", "db.relationshiptypes", "db.propertykeys", "db.indexes", "db.indexdetails",
    "db.constraints", "db.schema.visualization", "db.schema.nodetypeproperties",
    "db.schema.reltypeproperties", "db.info", "db.ping", "dbms.components", "dbms.procedures",
    "dbms.functions", "dbms.info", "dbms.showcurrentuser", "dbms.listconfig", "dbms.clientconfig",
})
"""Procedures that only read (lower case), allowed by ``query`` without ``write``."""


def _code(statement: str) -> str:
    """The statement without comments, string literals and quoted names."""
    return _SKIP.sub(" ", statement)


def statement_writes(statement: str) -> bool:
    """Whether the text has a clause that writes data or schema (CREATE, MERGE, SET,
    DELETE, REMOVE, DROP, FOREACH, admin commands); procedures are not judged here."""
    return _WRITE.search(_code(statement)) is not None


def read_procedure_call(statement: str) -> str | None:
    """The name of the read-only procedure the statement only calls (``CALL db.indexes()``,
    optionally ``YIELD ...``), else None."""
    code = _code(statement)
    match = _CALL.match(code)
    if match is None or match.group(1).lower() not in READ_PROCEDURES or statement_writes(code):
        return None
    return match.group(1)
