"""A whole store as files for Neo4j's bulk importer (``neo4j-admin database import full``).

    summary = write_neo4j_import(graph, Path("kb-import"))   # then, on the Neo4j machine:
    # cd kb-import && neo4j-admin database import full neo4j @import.args

**Layout** (Neo4j 5's CSV import format). Nodes and relationships are streamed from the
store and written in parts of at most :data:`PART_ROWS` rows, each part a CSV file with its
own header line; memory holds at most one pending part per label set or relationship type,
however large the store:

- ``nodes-{Labels}-{n}.csv``: header ``uid:ID(KeyLabel)`` and one ``name:type`` column per
  property, where ``KeyLabel`` is the label the node's uid is unique under
  (``schema.NodeKind.key_label``: every component shares the ``Component`` id space).
- ``relationships-{TYPE}-{n}.csv``: ``:START_ID(SourceKeyLabel)``, ``:END_ID(TargetKeyLabel)``
  and the properties.
- ``import.args``: the importer's arguments, one per line, file names relative to the
  directory (``--nodes=Component:Neuron=nodes-Component-Neuron-0.csv`` ...), with
  ``--array-delimiter=U+001F``, ``--id-type=string`` and, only when some string spans
  lines, ``--multiline-fields=true`` (which makes the importer read on one thread).

**Types.** A property column's type is that of its values in the part: ``boolean``,
``long`` (64-bit: a larger integer is refused), ``double``, ``string``, or arrays of those
(``long[]`` ...; a list mixing integers and floats is ``double[]``) joined by U+001F
(:data:`ARRAY_DELIMITER`; a string element holding it is refused). Where a property is an
integer on some rows and a float on others, the part is split in two files, each typed
exactly, so no integer comes back as a float. Strings are always quoted, so an empty
string stays an empty string; absent properties are empty unquoted fields (the importer
stores nothing). Non-finite floats are written as Java spells them (``NaN``, ``Infinity``).
Two list values have no spelling the importer reads back: ``[]`` and ``[""]`` both become
an empty field, so the imported node or relationship lacks that property; the export counts
them (:attr:`ExportSummary.empty_lists`) and the command says so (a run's ``done`` list is
empty while it starts; compgraph reads a missing one as empty). Values of any other type, a
column mixing strings with numbers, a node or endpoint without a uid, a label set outside
the vocabulary (``schema.NODE_KINDS``) and a relationship type outside it
(``schema.REL_KINDS``) are refused with a one-line :class:`~compgraph.errors.ConfigError`
naming them; what was written is then removed.

What the importer does not make, compgraph makes on the first open of the imported
database: the uniqueness constraints and indexes (``cypher.schema_statements``).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
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
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
UID, PROPS = str(schema.Prop.UID), "props"


@dataclass
class ExportSummary:
    """Files written and rows per node label set / relationship type."""

    directory: Path
    nodes: dict[str, int] = field(default_factory=dict)
    relationships: dict[str, int] = field(default_factory=dict)
    arguments: list[str] = field(default_factory=list)
    empty_lists: int = 0
    """List values the importer reads back as absent: ``[]`` and ``[""]`` (module docstring)."""

    @property
    def command(self) -> str:
        return f"cd {self.directory} && neo4j-admin database import full neo4j @import.args"


def _scalar_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        if not LONG_MIN <= value <= LONG_MAX:
            raise ConfigError(f"the integer {value} does not fit the importer's 64-bit long: cannot export it")
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    return None


def value_type(name: str, value: Any) -> str | None:
    """The importer type of one property value (None for an absent value or an empty list;
    a list mixing integers and floats is ``double[]``)."""
    if value is None or value == []:
        return None
    items = value if isinstance(value, list) else [value]
    kinds = set()
    for item in items:
        kind = _scalar_type(item)
        if kind is None:
            raise ConfigError(f"property {name!r} holds {type(item).__name__} values: cannot export it")
        kinds.add(kind)
    if kinds == {"long", "double"}:
        kinds = {"double"}
    if len(kinds) > 1:
        raise ConfigError(f"property {name!r} holds a list of {' and '.join(sorted(kinds))}: cannot export it")
    return kinds.pop() + ("[]" if isinstance(value, list) else "")


def column_types(columns: list[str], rows: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Every type each column's values have in ``rows`` (an all-absent column: ``string``)."""
    found: dict[str, set[str]] = {c: set() for c in columns}
    for r in rows:
        for c, value in r[PROPS].items():
            if c in found and (kind := value_type(c, value)) is not None:
                found[c].add(kind)
    return {c: kinds or {"string"} for c, kinds in found.items()}


def _mixed(types: dict[str, set[str]], where: str) -> str | None:
    """The first column whose values are integers in some rows and floats in others (they
    go to separate files, each typed exactly); any other mix is refused."""
    for c, kinds in types.items():
        if len(kinds) > 1:
            if {k.removesuffix("[]") for k in kinds} == {"long", "double"} and len({k.endswith("[]") for k in kinds}) == 1:
                return c
            raise ConfigError(f"{where}: property {c!r} holds {' and '.join(sorted(kinds))} values: cannot export it")
    return None


def _cell(value: Any, kind: str) -> Any:
    if value is None or value == []:
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


def _lost(value: Any) -> bool:
    """A list the importer reads back as no property: ``[]`` and ``[""]`` (an empty field)."""
    return isinstance(value, list) and (value == [] or value == [""])


@dataclass
class _Part:
    """What one CSV file got: its name, rows, lost lists and whether a string spans lines."""

    name: str
    rows: int
    lost: int
    multiline: bool


def _write_part(directory: Path, stem: str, head: list[str], rows: list[dict[str, Any]],
                fixed: list[str], where: str) -> list[_Part]:
    """``stem.csv``: ``fixed`` leading columns (ids, untyped) then typed properties; rows
    whose integer and float values share a column are split into ``stem-a`` / ``stem-b``."""
    columns = sorted({k for r in rows for k in r[PROPS]} - set(fixed))
    types = column_types(columns, rows)
    split = _mixed(types, where)
    if split is not None:
        kind = lambda r: value_type(split, r[PROPS].get(split)) or ""  # noqa: E731
        longs = [r for r in rows if kind(r).startswith("long")]
        doubles = [r for r in rows if not kind(r).startswith("long")]
        return (_write_part(directory, f"{stem}a", head, longs, fixed, where)
                + _write_part(directory, f"{stem}b", head, doubles, fixed, where))
    typed = {c: types[c].pop() for c in columns}
    lost, multiline = 0, False
    with open(directory / f"{stem}.csv", "w", encoding="utf-8", newline="") as handle:
        handle.write(",".join(head + [f"{c}:{typed[c]}" for c in columns]) + "\n")
        for r in rows:
            props = r[PROPS]
            cells = [r[f] for f in fixed] + [_cell(props.get(c), typed[c]) for c in columns]
            line = ",".join(map(_field, cells))
            multiline = multiline or "\n" in line or "\r" in line
            lost += sum(1 for c in columns if _lost(props.get(c)))
            handle.write(line + "\n")
    return [_Part(f"{stem}.csv", len(rows), lost, multiline)]


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


def _by_end(record: dict[str, Any]) -> str:
    """A relationship record's part: its type and its target's key label (CONTAINS ends at
    components and at tokens, two id spaces)."""
    return f"{record['type']}:{_rel_kind(record['type'], record['dst_labels']).target.key_label}"


def _rel_kind(type_: str, target_labels=()) -> schema.RelKind:
    kind = schema.rel_kind(type_, target_labels)
    if kind is None:
        raise ConfigError(f"relationships of type {type_} are not in compgraph's vocabulary: cannot export")
    return kind


def write_neo4j_import(graph: GraphStore, directory: Path) -> ExportSummary:
    """Write every node and relationship of ``graph`` into ``directory`` (new or empty)."""
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ConfigError(f"{directory} exists and is not an empty directory: export into a new one")
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        return _write(graph, directory)
    except BaseException:
        if created:
            shutil.rmtree(directory, ignore_errors=True)
        else:  # the user's empty directory stays, emptied again
            for path in directory.iterdir():
                path.unlink()
        raise


def _uid(record: dict[str, Any], key: str, what: str) -> str:
    value = record[key]
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what} has no {UID}: cannot export it")
    return value


def _write(graph: GraphStore, directory: Path) -> ExportSummary:
    summary = ExportSummary(directory=directory.resolve())
    files: list[str] = []
    multiline = False

    def add(parts: list[_Part], option: str, group: str, counts: dict[str, int]) -> None:
        nonlocal multiline
        for part in parts:
            files.append(f"--{option}={group}={part.name}")
            counts[group] = counts.get(group, 0) + part.rows
            summary.empty_lists += part.lost
            multiline = multiline or part.multiline

    label_sets = f"labels(n) AS labels, properties(n) AS {PROPS}"
    with graph.records(f"MATCH (n) RETURN {label_sets}, n.{UID} AS {UID}") as stream:
        for key, number, rows in _parts(stream, lambda r: ":".join(_node_kind(r["labels"]).labels)):
            kind = _node_kind(key.split(":"))
            for r in rows:
                _uid(r, UID, f"a node labelled {key}")
            add(_write_part(directory, f"nodes-{key.replace(':', '-')}-{number}", [f"{UID}:ID({kind.key_label})"],
                            rows, [UID], f"nodes labelled {key}"), "nodes", key, summary.nodes)
    with graph.records(f"MATCH (a)-[e]->(b) RETURN type(e) AS type, a.{UID} AS src, b.{UID} AS dst, "
                       f"labels(b) AS dst_labels, properties(e) AS {PROPS}") as stream:
        for group, number, rows in _parts(stream, _by_end):
            type_, end = group.split(":")
            rel = _rel_kind(type_, (end,))
            for r in rows:
                _uid(r, "src", f"a {type_} relationship's source")
                _uid(r, "dst", f"a {type_} relationship's target")
            head = [f":START_ID({rel.source.key_label})", f":END_ID({rel.target.key_label})"]
            name = type_ if rel is schema.REL_KIND_BY_TYPE[type_] else f"{type_}-{end}"
            add(_write_part(directory, f"relationships-{name}-{number}", head, rows, ["src", "dst"],
                            f"{type_} relationships"), "relationships", type_, summary.relationships)
    options = ["--array-delimiter=U+001F", "--id-type=string"]
    if multiline:  # the importer reads multi-line fields on one thread only: asked for when needed
        options.insert(0, "--multiline-fields=true")
    summary.arguments = options + files
    (directory / "import.args").write_text("\n".join(summary.arguments) + "\n")
    return summary
