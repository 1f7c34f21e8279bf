"""Query results for people (tables) and for pipes (csv, json)."""

from __future__ import annotations

import json
from typing import Any

import polars as pl

FORMATS = ("table", "csv", "json")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def to_json(frame: pl.DataFrame) -> str:
    """A list of objects, one per row, keys in column order."""
    return json.dumps([_jsonable(row) for row in frame.iter_rows(named=True)], ensure_ascii=False)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(_jsonable(value), ensure_ascii=False)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def to_csv(frame: pl.DataFrame) -> str:
    """CSV; nested values (lists, maps) as JSON text in their cell."""
    flat = pl.DataFrame(
        {c: [_cell(v) if isinstance(v, (list, dict)) else v for v in frame[c].to_list()]
         for c in frame.columns},
        strict=False,
    ) if frame.height else frame
    return flat.write_csv()


def print_table(frame: pl.DataFrame, title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in frame.columns:
        table.add_column(column, overflow="fold")
    for row in frame.iter_rows():
        table.add_row(*(_cell(v) for v in row))
    console = Console()
    console.print(table)
    console.print(f"{frame.height} row(s)", style="dim")
