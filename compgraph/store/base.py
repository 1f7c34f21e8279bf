"""The GraphStore interface and the write algorithm both implementations share.

A store merges node rows and edge rows (polars frames) and answers Cypher with a
polars frame. Writes are idempotent: nodes are keyed on ``uid``, edges on
(source, type, target, key properties).

Node merge: look the uids up under the key label, set properties on the existing
ones and create the new ones, in batches. (Two-label ``MERGE`` is two orders
of magnitude slower than this in ArcadeDB; on Neo4j the split costs nothing.)

Edge merge: every distinct endpoint is checked first, so rows naming a missing
node raise :class:`MissingEndpointError` before anything of the call is written
(or are skipped and counted, with ``on_missing="skip"``). The edges already leaving
the call's sources are read once; rows whose edge exists with the same properties
are left alone, changed ones are updated, new ones created in batches. With
``replace=runs``, edges of this type leaving the call's sources whose ``run`` is one
of ``runs`` and that the rows do not name are deleted: a recomputed shard replaces
what the earlier runs of its stage wrote there.

Typed reads (:meth:`GraphStore.nodes`, :meth:`GraphStore.edges`) and typed deletes
take filters ``{property: value}`` (a list value means "one of"), built into Cypher in
one place (:mod:`compgraph.store.cypher`); the job engine and the analysis layer read
through them, so they also work on the Cypher-less :class:`~compgraph.store.memory.MemoryStore`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Collection, Literal, NamedTuple, Protocol, Sequence, runtime_checkable

import polars as pl

from compgraph import schema
from compgraph.errors import ConfigError, MissingEndpointError, SchemaVersionError
from compgraph.schema import NodeKind, RelKind
from compgraph.store import cypher
from compgraph.store.rows import (
    EdgeRow, EdgeRows, NodeRow, Records, chunks, edge_rows, gc_paused, node_rows, to_frame,
)

OnMissing = Literal["error", "skip"]
Filter = dict[str, Any]

DEFAULT_BATCH = 10_000
LOOKUP_BATCH = 10_000


def checked_schema_version(location: str, value: Any) -> int | None:
    """The schema version a store records (None: none recorded), refusing a value that is
    not an integer and one newer than this code knows, before anything is written."""
    if value is None:
        return None
    whole = type(value) is int or (type(value) is float and value.is_integer())
    if not whole:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise SchemaVersionError(
            f"store at {location} records schema version {shown}, which is not an integer: "
            "it was not written by compgraph, or it is damaged")
    if int(value) > schema.SCHEMA_VERSION:
        raise SchemaVersionError(
            f"store at {location} has schema version {int(value)}; this compgraph "
            f"knows up to {schema.SCHEMA_VERSION}: upgrade compgraph")
    return int(value)


@dataclass(frozen=True)
class WriteResult:
    """What a merge call did. ``skipped`` counts edge rows dropped for a missing endpoint;
    ``deleted`` the stale edges a ``replace`` merge removed."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    deleted: int = 0

    @property
    def written(self) -> int:
        return self.created + self.updated

    def __add__(self, other: "WriteResult") -> "WriteResult":
        return WriteResult(self.created + other.created, self.updated + other.updated,
                           self.unchanged + other.unchanged, self.skipped + other.skipped,
                           self.deleted + other.deleted)


@runtime_checkable
class GraphStore(Protocol):
    """What every part of compgraph may ask of a graph store."""

    location: str

    def merge_nodes(self, kind: NodeKind, rows: pl.DataFrame, *, batch_size: int = DEFAULT_BATCH) -> WriteResult: ...

    def merge_edges(self, rel: RelKind, rows: pl.DataFrame, *, on_missing: OnMissing = "error",
                    batch_size: int = DEFAULT_BATCH, replace: Collection[str] = (),
                    known_new: bool = False) -> WriteResult:
        """... ``known_new``: the caller guarantees that no edge of these rows' identities is
        stored (it deleted them, or wrote none): the read of the sources' stored edges, which
        costs as many edges as the sources hold, is skipped and every row is created (an
        attribution graph's links, among sources every graph shares)."""
        ...

    def nodes(self, kind: NodeKind, *, uids: list[str] | None = None, where: Filter | None = None) -> pl.DataFrame:
        """Nodes of ``kind`` (by uid, or matching ``where``): one row each, a column per property."""
        ...

    def edges(self, rel: RelKind, *, where: Filter | None = None, source_where: Filter | None = None,
              target_where: Filter | None = None, properties: Sequence[str] | None = None) -> pl.DataFrame:
        """Edges of ``rel`` matching ``where`` (edge properties), ``source_where`` and
        ``target_where`` (the end nodes' properties): columns ``src``, ``dst`` and one per
        edge property; with ``properties``, one per property named there, in that order (null
        where an edge has none), and no other (a lean read of a large graph)."""
        ...

    def delete_edges(self, rel: RelKind, *, where: Filter | None = None, source_where: Filter | None = None) -> int:
        """Delete matching edges (in batches); how many were deleted."""
        ...

    def remove_properties(self, kind: NodeKind, props: list[str], *, where: Filter | None = None) -> int:
        """Remove ``props`` from the nodes of ``kind`` matching ``where``; how many nodes matched."""
        ...

    def query(self, cypher: str, params: dict[str, Any] | None = None, *, write: bool = False) -> pl.DataFrame: ...

    def records(self, cypher: str, params: dict[str, Any] | None = None, *, write: bool = False) -> Records:
        """Rows as they arrive (``.keys``, then one dict per row); a context manager that
        releases the cursor. Nodes, relationships and paths keep labels/type and properties."""
        ...

    def schema_version(self) -> int | None: ...

    def close(self) -> None: ...

    def __enter__(self) -> "GraphStore": ...

    def __exit__(self, *exc: object) -> None: ...


class BaseStore(ABC):
    """The shared algorithm; subclasses supply reads, write transactions and creation."""

    location: str

    # ---- engine primitives -----------------------------------------------------
    @abstractmethod
    def _read(self, statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Run a statement the store's own code knows to be read-only."""

    @abstractmethod
    def _write(self, statements: list[tuple[str, dict[str, Any]]]) -> None:
        """Run statements in one write transaction: all of them or none."""

    @abstractmethod
    def query(self, cypher: str, params: dict[str, Any] | None = None, *, write: bool = False) -> pl.DataFrame:
        ...

    @abstractmethod
    def records(self, cypher: str, params: dict[str, Any] | None = None, *, write: bool = False) -> Records:
        ...

    @abstractmethod
    def close(self) -> None:
        ...

    def _create_nodes(self, kind: NodeKind, rows: list[NodeRow], batch_size: int) -> None:
        """Create nodes known not to exist yet, one transaction per batch."""
        for batch in chunks(rows, batch_size):
            self._write([(cypher.create_nodes(kind), {"rows": [r.param() for r in batch]})])

    def _create_edges(self, rel: RelKind, rows: list[EdgeRow], batch_size: int) -> None:
        """Create edges known not to exist yet, one transaction per batch."""
        for batch in chunks(rows, batch_size):
            params = [{"src": r.src, "dst": r.dst, "props": r.props} for r in batch]
            self._write([(cypher.create_edges(rel), {"rows": params})])

    def _note_existing(self, label: str, uids: list[str]) -> set[str]:
        """Which of ``uids`` exist under ``label`` (subclasses may cache)."""
        found: set[str] = set()
        for batch in chunks(uids, LOOKUP_BATCH):
            found.update(r["uid"] for r in self._read(cypher.lookup_uids(label), {"uids": batch}))
        return found

    # ---- schema -------------------------------------------------------------------
    def _ensure_schema(self) -> None:
        """Create constraints and indexes (idempotent); refuse a newer schema version."""
        rows = self._read(cypher.READ_SCHEMA_VERSION, {"uid": schema.META_UID})
        found = checked_schema_version(self.location, rows[0]["v"] if rows else None)
        for statement in cypher.schema_statements():
            self._schema_command(statement)
        if found is None:  # a new store, or one whose schema creation was cut off (a full disk)
            self._schema_created()
        if found is None or found < schema.SCHEMA_VERSION:
            self._write([(cypher.WRITE_SCHEMA_VERSION, {"uid": schema.META_UID, "v": schema.SCHEMA_VERSION})])

    def _schema_command(self, statement: str) -> None:
        self._write([(statement, {})])

    def _schema_created(self) -> None:
        """Hook after the constraints and indexes of a store without a schema version exist."""

    def schema_version(self) -> int | None:
        rows = self._read(cypher.READ_SCHEMA_VERSION, {"uid": schema.META_UID})
        return checked_schema_version(self.location, rows[0]["v"] if rows else None)

    # ---- merges -------------------------------------------------------------------
    @gc_paused()
    def merge_nodes(self, kind: NodeKind, rows: pl.DataFrame, *, batch_size: int = DEFAULT_BATCH) -> WriteResult:
        _check_batch(batch_size)
        prepared = node_rows(rows)  # validates the whole frame before anything is written
        existing = self._note_existing(kind.key_label, [r.uid for r in prepared])
        old = [r for r in prepared if r.uid in existing]
        new = [r for r in prepared if r.uid not in existing]
        for batch in chunks(old, batch_size):
            self._write([(cypher.update_nodes(kind), {"rows": [r.param() for r in batch]})])
        if new:
            self._create_nodes(kind, new, batch_size)
        return WriteResult(created=len(new), updated=len(old))

    @gc_paused()
    def merge_edges(self, rel: RelKind, rows: pl.DataFrame, *, on_missing: OnMissing = "error",
                    batch_size: int = DEFAULT_BATCH, replace: Collection[str] = (),
                    known_new: bool = False) -> WriteResult:
        _check_batch(batch_size)
        if on_missing not in ("error", "skip"):
            raise ConfigError(f"on_missing must be 'error' or 'skip', not {on_missing!r}")
        prepared, skipped = self._drop_missing_endpoints(rel, edge_rows(rel, rows), on_missing)
        stored = {} if known_new else self._stored_edges(rel, prepared.sources)
        plan = plan_edge_merge(prepared, stored, replace)
        for batch in chunks(plan.stale, batch_size):
            self._write([(cypher.delete_edge_rows(rel), {"rows": batch})])
        for batch in chunks(plan.changed, batch_size):
            self._write([(cypher.update_edges(rel), {"rows": [prepared.param(r) for r in batch]})])
        if plan.new:
            self._create_edges(rel, plan.new, batch_size)
        return WriteResult(created=len(plan.new), updated=len(plan.changed), unchanged=plan.same,
                           skipped=skipped, deleted=len(plan.stale))

    # ---- typed reads and deletes --------------------------------------------------------
    @gc_paused()
    def nodes(self, kind: NodeKind, *, uids: list[str] | None = None, where: Filter | None = None) -> pl.DataFrame:
        if uids is not None:
            records = []
            for batch in chunks(list(dict.fromkeys(uids)), LOOKUP_BATCH):
                records += self._read(cypher.read_nodes_by_uid(kind), {"uids": batch})
            props = [r["props"] for r in records]
            if where:
                props = [p for p in props if matches(p, where)]
        else:
            statement, params = cypher.read_nodes(kind, where)
            props = [r["props"] for r in self._read(statement, params)]
        return props_frame(props, ["uid"])

    @gc_paused()
    def edges(self, rel: RelKind, *, where: Filter | None = None, source_where: Filter | None = None,
              target_where: Filter | None = None, properties: Sequence[str] | None = None) -> pl.DataFrame:
        properties = checked_properties(properties)
        statement, params = cypher.read_edges(rel, where, source_where, target_where, properties)
        if properties is not None:
            aliases = [f"p{i}" for i in range(len(properties))]
            return to_frame(self._read(statement, params), ["src", "dst", *aliases]).rename(
                dict(zip(aliases, properties)))
        return props_frame([{"src": r["src"], "dst": r["dst"], **(r["props"] or {})}
                            for r in self._read(statement, params)], ["src", "dst"])

    def delete_edges(self, rel: RelKind, *, where: Filter | None = None, source_where: Filter | None = None) -> int:
        statement, params = cypher.delete_edges(rel, where, source_where, DEFAULT_BATCH)
        total = 0
        while True:
            rows = self._write_returning(statement, params)
            n = int(rows[0]["n"]) if rows else 0
            total += n
            if n < DEFAULT_BATCH:
                return total

    def remove_properties(self, kind: NodeKind, props: list[str], *, where: Filter | None = None) -> int:
        if not props:
            return 0
        statement, params = cypher.remove_properties(kind, props, where)
        rows = self._write_returning(statement, params)
        return int(rows[0]["n"]) if rows else 0

    def _write_returning(self, statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """One write statement in its own transaction, with its rows."""
        return self.query(statement, params, write=True).to_dicts()

    def _stored_edges(self, rel: RelKind, sources: list[str]) -> dict[tuple, dict[str, Any]]:
        """Properties of the edges of this type already leaving ``sources``, by identity."""
        stored: dict[tuple, dict[str, Any]] = {}
        for uids in chunks(sources, LOOKUP_BATCH):
            for rec in self._read(cypher.existing_edges(rel), {"uids": uids}):
                props = rec["props"] or {}
                stored[(rec["src"], rec["dst"], *(props.get(k) for k in rel.key))] = props
        return stored

    def _drop_missing_endpoints(self, rel: RelKind, prepared: EdgeRows,
                                on_missing: OnMissing) -> tuple[EdgeRows, int]:
        """The rows whose endpoints both exist, and how many were dropped (or raise)."""
        have_src = self._note_existing(rel.source.key_label, prepared.sources)
        have_dst = self._note_existing(rel.target.key_label, prepared.targets)
        if len(have_src) == len(prepared.sources) and len(have_dst) == len(prepared.targets):
            return prepared, 0
        keep = [r for r in prepared.rows if r.src in have_src and r.dst in have_dst]
        dropped = len(prepared.rows) - len(keep)
        if on_missing == "error":
            missing = [u for u in prepared.sources if u not in have_src]
            missing += [u for u in prepared.targets if u not in have_dst]
            raise MissingEndpointError(
                f"{dropped} {rel.type} row(s) name nodes not in the store "
                f"(e.g. {', '.join(missing[:3])}); nothing was written",
                missing=missing[:10], count=dropped,
            )
        return EdgeRows(keep, prepared.key, list(dict.fromkeys(r.src for r in keep)),
                        list(dict.fromkeys(r.dst for r in keep))), dropped

    # ---- context manager ------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # the error in flight says what happened; one from closing must not replace it
            self.close()
        except Exception:  # noqa: BLE001
            pass


class EdgeMergePlan(NamedTuple):
    new: list[EdgeRow]
    changed: list[EdgeRow]
    same: int
    stale: list[dict[str, Any]]  # {src, dst, key} of edges to delete


def plan_edge_merge(prepared: EdgeRows, stored: dict[tuple, dict[str, Any]],
                    replace: Collection[str]) -> EdgeMergePlan:
    """Split rows into new / changed / unchanged against the stored edges of their
    sources, and name the stored edges a ``replace`` merge deletes. Shared by every store."""
    new, changed, same = [], [], 0
    for row in prepared.rows:
        before = stored.get(prepared.identity(row)) if stored else None
        if before is None:
            new.append(row)
        elif any(before.get(k) != v for k, v in row.props.items()):
            changed.append(row)
        else:
            same += 1
    stale = []
    if replace and stored:
        replace = set(replace)
        named = {prepared.identity(r) for r in prepared.rows}
        for identity, props in stored.items():
            if props.get(schema.Prop.RUN) in replace and identity not in named:
                stale.append({"src": identity[0], "dst": identity[1],
                              "key": dict(zip(prepared.key, identity[2:]))})
    return EdgeMergePlan(new, changed, same, stale)


def prepared(where: Filter | None) -> Filter | None:
    """A filter whose lists are sets where their values allow (membership in O(1) when
    :func:`matches` runs it over many rows)."""
    if not where:
        return where
    out = {}
    for prop, value in where.items():
        if isinstance(value, (list, tuple, set)):
            try:
                value = frozenset(value)
            except TypeError:  # unhashable values: compared one by one
                pass
        out[prop] = value
    return out


def matches(props: dict[str, Any], where: Filter | None) -> bool:
    """Whether a property dict passes a typed-read filter (the MemoryStore's WHERE)."""
    for prop, value in (where or {}).items():
        have = props.get(prop)
        if isinstance(value, (list, tuple, set, frozenset)):
            if have not in value:
                return False
        elif value is None:
            if have is not None:
                return False
        elif have != value:
            return False
    return True


def props_frame(records: list[dict[str, Any]], first: list[str]) -> pl.DataFrame:
    """Property dicts as a frame: one column per key found in any record (missing -> null),
    ``first`` columns leading; a column whose values do not share a type keeps them as objects."""
    columns = list(first)
    seen = set(columns)
    for record in records:
        for key in record:
            if key not in seen:
                seen.add(key)
                columns.append(key)
    return to_frame(records, columns)


def checked_properties(properties: Sequence[str] | None) -> list[str] | None:
    """The property names of a lean edge read, refused when one repeats or is ``src`` / ``dst``."""
    if properties is None:
        return None
    names = list(properties)
    if bad := sorted({p for p in names if names.count(p) > 1 or p in ("src", "dst")}):
        raise ConfigError(f"edge properties to read must be distinct and not src or dst: {', '.join(bad)}")
    return names


def _check_batch(batch_size: int) -> None:
    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive, not {batch_size}")
