"""A whole store as files for Neo4j's bulk importer (``neo4j-admin database import full``).

    summary = write_neo4j_import(graph, Path("kb-import"))   # then, on the Neo4j machine:
    # cd kb-import && neo4j-admin database import full neo4j @import.args

**Layout** (Neo4j 5's CSV import format). Nodes and relationships are streamed from the
store and written in parts of at most :data:`PART_ROWS` rows, each part a CSV file with its
own header line, so memory stays bounded by one part however large the store:

- ``nodes-{Labels}-{n}.csv``: header ``uid:ID(KeyLabel)`` and one ``name:type`` column per
  property, where ``KeyLabel`` is the label the node's uid is unique under
  (``schema.NodeKind.key_label``: every component shares the ``Component`` id space).
- ``relationships-{TYPE}-{n}.csv``: ``:START_ID(SourceKeyLabel)``, ``:END_ID(TargetKeyLabel)``
  and the properties.
- ``import.args``: the importer's arguments, one per line, file names relative to the
  directory (``--nodes=Component:Neuron=nodes-Component-Neuron-0.csv`` ...).

**Types.** A property column's type is that of its values in the part: ``boolean``,
``long``, ``double`` (any mix of integers and floats), ``string``, or arrays of those
(``long[]`` ...) joined by U+001F (:data:`ARRAY_DELIMITER`; a string element holding it is
refused). Absent properties are empty unquoted fields (the importer stores nothing). An
empty list has no spelling the importer reads back as an empty array: it is written as an
empty field too, so the imported graph lacks that property; the export counts such values
(:attr:`ExportSummary.empty_lists`) and the command says so.
strings are always quoted, so an empty string stays an empty string. Non-finite floats are
written as Java spells them (``NaN``, ``Infinity``). Values of any other type, a column
mixing strings with numbers, a label set outside the vocabulary (``schema.NODE_KINDS``) and a
relationship type outside it (``schema.REL_KINDS``) are refused with a one-line
:class:`~compgraph.errors.ConfigError` naming them; the directory is then removed.

What the importer does not make, compgraph makes on the first open of the imported
database: the uniqueness constraints and indexes (``cypher.schema_statements``).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compgraph import schema
from compgraph.errors import ConfigError
from compgraph.store.base import GraphStore

PART_ROWS = 200_000
"""Rows per CSV file: what one part holds in memory while it is written."""

ARRAY_DELIMITER = "\x1f"
"""Between the elements of an array value (the importer's ``--array-delimiter``)."""

_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


@dataclass
class ExportSummary:
    """Files written and rows per node label set / relationship type."""

    directory: Path
    nodes: dict[str, int] = field(default_factory=dict)
    relationships: dict[str, int] = field(default_factory=dict)
    arguments: list[str] = field(default_factory=list)
    empty_lists: int = 0
    """Empty list values written as absent (see the module docstring)."""

    @property
    def command(self) -> str:
        return f"cd {self.directory} && neo4j-admin database import full neo4j @import.args"


def _scalar_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    return None


def _merge_types(a: str | None, b: str) -> str | None:
    if a is None or a == b:
        return b
    if {a, b} == {"long", "double"}:
        return "double"
    return None


def column_type(name: str, values: Iterable[Any]) -> str:
    """The importer type of one property column (see the module docstring)."""
    found: str | None = None
    array: bool | None = None
    for value in values:
        if value is None:
            continue
        is_list = isinstance(value, list)
        if array is not None and array != is_list:
            raise ConfigError(f"property {name!r} holds both lists and single values: cannot export it")
        array = is_list
        for item in value if is_list else (value,):
            kind = _scalar_type(item)
            merged = _merge_types(found, kind) if kind else None
            if merged is None:
                raise ConfigError(f"property {name!r} holds {type(item).__name__} values"
                                  + (f" beside {found}" if found and kind else "") + ": cannot export it")
            found = merged
    if found is None:
        return "string"
    return found + ("[]" if array else "")


def _cell(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if value == []:
        return None
    if isinstance(value, list):
        items = [_cell(item, kind.removesuffix("[]")) for item in value]
        if kind == "string[]" and any(ARRAY_DELIMITER in item for item in items):
            raise ConfigError("a string list element holds U+001F, the export's array delimiter")
        return ARRAY_DELIMITER.join(str(item) for item in items)
    if isinstance(value, bool):
        return "true" if value else "false"
    if kind.startswith("double"):
        value = float(value)
        if math.isnan(value):
            return "NaN"
        return _NON_FINITE.get(value, value)
    return value


def _field(value: Any) -> str:
    """One CSV field: strings quoted (quotes doubled), numbers bare, absent values empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return '"' + value.replace('"', '""') + '"'
    return repr(value)


def _write_part(path: Path, head: list[str], columns: list[str], rows: list[dict[str, Any]],
                fixed: list[str]) -> int:
    """One CSV part: ``fixed`` leading columns (ids, untyped) then typed properties; returns
    how many empty lists it wrote as absent."""
    types = {c: column_type(c, (r["props"].get(c) for r in rows)) for c in columns}
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(",".join(head + [f"{c}:{types[c]}" for c in columns]) + "\n")
        for r in rows:
            props = r["props"]
            cells = [r[f] for f in fixed] + [_cell(props.get(c), types[c]) for c in columns]
            handle.write(",".join(map(_field, cells)) + "\n")
    return sum(1 for r in rows for c in columns if r["props"].get(c) == [])


def _parts(records: Iterator[dict[str, Any]], group) -> Iterator[tuple[str, int, list[dict[str, Any]]]]:
    """Group streamed records by ``group(record)``; yield (group, part number, rows) every PART_ROWS."""
    pending: dict[str, list[dict[str, Any]]] = {}
    numbers: dict[str, int] = {}
    for record in records:
        key = group(record)
        rows = pending.setdefault(key, [])
        rows.append(record)
        if len(rows) >= PART_ROWS:
            yield key, numbers.get(key, 0), rows
            numbers[key] = numbers.get(key, 0) + 1
            pending[key] = []
    for key, rows in pending.items():
        if rows:
            yield key, numbers.get(key, 0), rows


def _node_kind(labels: list[str]) -> schema.NodeKind:
    for kind in schema.NODE_KINDS:
        if set(kind.labels) == set(labels):
            return kind
    raise ConfigError(f"nodes labelled {':'.join(sorted(labels))} are not in compgraph's vocabulary: cannot export")


def _rel_kind(type_: str) -> schema.RelKind:
    kind = schema.REL_KIND_BY_TYPE.get(type_)
    if kind is None:
        raise ConfigError(f"relationships of type {type_} are not in compgraph's vocabulary: cannot export")
    return kind


def _property_columns(rows: list[dict[str, Any]], skip: set[str]) -> list[str]:
    return sorted({k for r in rows for k in r["props"]} - skip)


def write_neo4j_import(graph: GraphStore, directory: Path) -> ExportSummary:
    """Write every node and relationship of ``graph`` into ``directory`` (new or empty)."""
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ConfigError(f"{directory} exists and is not an empty directory: export into a new one")
    directory.mkdir(parents=True, exist_ok=True)
    try:
        return _write(graph, directory)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _write(graph: GraphStore, directory: Path) -> ExportSummary:
    summary = ExportSummary(directory=directory.resolve())
    args = ["--multiline-fields=true", "--array-delimiter=U+001F", "--id-type=string"]
    with graph.records("MATCH (n) RETURN labels(n) AS labels, properties(n) AS props") as stream:
        for key, number, rows in _parts(stream, lambda r: ":".join(_node_kind(r["labels"]).labels)):
            kind = _node_kind(key.split(":"))
            name = f"nodes-{key.replace(':', '-')}-{number}.csv"
            for r in rows:
                r["uid"] = r["props"]["uid"]
            summary.empty_lists += _write_part(directory / name, [f"uid:ID({kind.key_label})"],
                                               _property_columns(rows, {"uid"}), rows, ["uid"])
            args.append(f"--nodes={key}={name}")
            summary.nodes[key] = summary.nodes.get(key, 0) + len(rows)
    with graph.records("MATCH (a)-[e]->(b) RETURN type(e) AS type, a.uid AS src, b.uid AS dst, "
                       "properties(e) AS props") as stream:
        for type_, number, rows in _parts(stream, lambda r: _rel_kind(r["type"]).type):
            rel = _rel_kind(type_)
            name = f"relationships-{type_}-{number}.csv"
            head = [f":START_ID({rel.source.key_label})", f":END_ID({rel.target.key_label})"]
            summary.empty_lists += _write_part(directory / name, head, _property_columns(rows, set()), rows,
                                               ["src", "dst"])
            args.append(f"--relationships={type_}={name}")
            summary.relationships[type_] = summary.relationships.get(type_, 0) + len(rows)
    (directory / "import.args").write_text("\n".join(args) + "\n")
    summary.arguments = args
    return summary
