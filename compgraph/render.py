"""Query results for people (tables) and for pipes (csv, json).

Everything renders from rows as the store returns them (:class:`~compgraph.store.rows.Records`,
or a frame's rows), never from an inferred schema, so no key and no value is lost:

- json: a list of objects, one per row, keys in column order; written row by row as
  the rows arrive (one row per line), so memory stays bounded. Nodes are
  ``{"labels": [...], "properties": {...}}``, relationships ``{"type": ..., "properties":
  {...}}``, paths ``{"nodes": [...], "relationships": [...]}``. Integers are exact
  (2**63-1 included); JSON has no NaN or infinities, so they are the strings ``"NaN"``,
  ``"Infinity"`` and ``"-Infinity"``; dates and times are ISO 8601 strings.
- csv: a header of the column names, then one line per row as it arrives; lists,
  maps, nodes, relationships and paths are JSON text (as above) in their cell; null is
  an empty cell; floats carry every digit; non-finite floats as in json.
- table: the text of each value verbatim (no markup, no emoji codes), floats to six
  significant digits, nested values as JSON text; at most ``limit`` rows (default
  :data:`TABLE_LIMIT`), then a note saying how many were left out.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import math
import sys
from decimal import Decimal
from typing import IO, Any, Iterable

FORMATS = ("table", "csv", "json")
"""The formats of rows (``compgraph query``, ``runs``)."""
REPORT_FORMATS = ("table", "json")
"""The formats of a command whose result is one document rather than rows (``info``, ``analyse``)."""
TABLE_LIMIT = 100
"""Rows a table shows unless ``--limit`` says otherwise (csv and json show every row)."""

_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _default(value: Any) -> Any:
    """What json.dumps cannot encode by itself."""
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


def _finite(value: Any) -> Any:
    """The value with NaN and the infinities as strings (JSON has neither)."""
    if type(value) is float and not math.isfinite(value):
        return "NaN" if value != value else _NON_FINITE[value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_finite(v) for v in value]
    return value


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=_default)


def json_text(value: Any) -> str:
    """One value (a row, a cell) as JSON text, by the rules in the module docstring."""
    try:
        return _ENCODER.encode(value)
    except ValueError:  # a NaN or an infinity somewhere inside
        return _ENCODER.encode(_finite(value))


def _rows(rows: Any) -> tuple[list[str], Iterable[dict[str, Any]]]:
    """Keys and rows of Records, or of a polars frame."""
    if hasattr(rows, "iter_rows"):  # a polars frame
        return list(rows.columns), rows.iter_rows(named=True)
    return list(rows.keys), rows


def _take(rows: Iterable[dict[str, Any]], limit: int | None) -> Iterable[dict[str, Any]]:
    return rows if limit is None else itertools.islice(rows, limit)


_FLUSH_ROWS = 1000  # rows per write to the output


def write_json(rows: Any, out: IO[str] | None = None, *, limit: int | None = None) -> int:
    """Stream rows as a JSON list (one row per line); how many were written."""
    out = out or sys.stdout
    _, it = _rows(rows)
    n = 0
    pending: list[str] = []
    out.write("[")
    for row in _take(it, limit):
        pending.append(json_text(row))
        n += 1
        if len(pending) == _FLUSH_ROWS:
            out.write((",\n" if n > _FLUSH_ROWS else "") + ",\n".join(pending))
            pending.clear()
    if pending:
        out.write((",\n" if n > len(pending) else "") + ",\n".join(pending))
    out.write("]\n")
    return n


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    t = type(value)
    if t is str or t is int:
        return value
    if t is bool:
        return "true" if value else "false"
    if t is float:
        return repr(value) if math.isfinite(value) else _finite(value)
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        return json_text(value)
    return _default(value)


def write_csv(rows: Any, out: IO[str] | None = None, *, limit: int | None = None) -> int:
    """Stream rows as CSV with a header line; how many rows were written."""
    out = out or sys.stdout
    keys, it = _rows(rows)
    writer = csv.writer(out, lineterminator="\n")
    n = 0
    pending: list[list[Any]] = []
    for row in _take(it, limit):
        if n == 0:
            keys = keys or list(row)
            writer.writerow(keys)
        pending.append([_csv_cell(row.get(k)) for k in keys])
        n += 1
        if len(pending) == _FLUSH_ROWS:
            writer.writerows(pending)
            pending.clear()
    writer.writerows(pending)
    if n == 0 and keys:
        writer.writerow(keys)
    return n


def _table_cell(value: Any) -> str:
    if value is None:
        return ""
    t = type(value)
    if t is str:
        return value
    if t is bool:
        return "true" if value else "false"
    if t is float:
        return f"{value:.6g}" if math.isfinite(value) else _finite(value)
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        return json_text(value)
    return str(value) if isinstance(value, int) else _default(value)


def print_table(rows: Any, title: str | None = None, *, limit: int = TABLE_LIMIT,
                out: IO[str] | None = None) -> int:
    """A table of at most ``limit`` rows, then a line saying how many rows there were
    and how many were left out; returns the number of rows in the result.

    The first ``limit`` rows are kept; the rest are read only to be counted."""
    from rich.console import Console

    console = Console(file=out or sys.stdout, markup=False, emoji=False, highlight=False)
    keys, it = _rows(rows)
    shown: list[dict[str, Any]] = []
    total = 0
    for row in it:
        total += 1
        if total <= limit:
            shown.append(row)
        elif total == limit + 1:  # print what fits now, then count the rest
            _print_rows(console, keys, shown, title)
            shown = []
    if total <= limit:
        _print_rows(console, keys, shown, title)
    if total > limit:
        console.print(f"{total} row(s), {total - limit} not shown (--limit {limit}; --limit N shows more, "
                      "--format csv or json prints every row)", style="dim", soft_wrap=True)
    else:
        console.print(f"{total} row(s)", style="dim", soft_wrap=True)
    return total


def _print_rows(console, keys: list[str], rows: list[dict[str, Any]], title: str | None) -> None:
    from rich.table import Table
    from rich.text import Text

    keys = keys or (list(rows[0]) if rows else [])
    if not keys:  # an empty result whose columns the store cannot name
        if title:
            console.print(Text(title, style="italic"))
        return
    table = Table(title=Text(title) if title else None, show_lines=False)
    for key in keys:
        table.add_column(Text(str(key)), overflow="fold")
    for row in rows:
        table.add_row(*(Text(_table_cell(row.get(k))) for k in keys))
    console.print(table)


def emit(rows: Any, fmt: str, *, title: str | None = None, limit: int | None = None,
         out: IO[str] | None = None) -> int:
    """Render Records (or a polars frame) as ``fmt``; tables default to :data:`TABLE_LIMIT` rows."""
    if fmt == "json":
        return write_json(rows, out, limit=limit)
    if fmt == "csv":
        return write_csv(rows, out, limit=limit)
    return print_table(rows, title, limit=TABLE_LIMIT if limit is None else limit, out=out)
