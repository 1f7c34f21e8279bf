"""MemoryStore: the GraphStore protocol over Python dicts, in this process.

For unit tests of stages and the job engine (no JVM, no server) and for small
throw-away graphs. Writes follow exactly the rules of the other stores (the same
row validation, the same merge plan, the same missing-endpoint errors); typed reads
and deletes work; raw Cypher does not: :meth:`query` raises :class:`CypherUnsupported`.
Nothing is persisted.
"""

from __future__ import annotations

from typing import Any, Collection, Sequence

import polars as pl

from compgraph import schema
from compgraph.errors import ConfigError, CypherUnsupported, MissingEndpointError
from compgraph.schema import NodeKind, RelKind
from compgraph.store.base import (
    DEFAULT_BATCH,
    Filter,
    OnMissing,
    WriteResult,
    prepared,
    _check_batch,
    checked_properties,
    matches,
    plan_edge_merge,
    props_frame,
)
from compgraph.store.rows import EdgeRows, edge_rows, node_rows, to_frame


class MemoryStore:
    """Nodes by key label and uid; edges by type and identity (src, dst, key values)."""

    def __init__(self, location: str = "memory"):
        self.location = location
        self._labels: dict[str, tuple[str, ...]] = {}  # uid -> labels
        self._nodes: dict[str, dict[str, dict[str, Any]]] = {}  # key label -> uid -> props
        self._edges: dict[str, dict[tuple, dict[str, Any]]] = {}  # rel type -> identity -> props
        self._nodes.setdefault(schema.META.key_label, {})[schema.META_UID] = {
            "uid": schema.META_UID, "schema_version": schema.SCHEMA_VERSION}

    # ---- writes ---------------------------------------------------------------------------
    def merge_nodes(self, kind: NodeKind, rows: pl.DataFrame, *, batch_size: int = DEFAULT_BATCH) -> WriteResult:
        _check_batch(batch_size)
        table = self._nodes.setdefault(kind.key_label, {})
        created = updated = 0
        for row in node_rows(rows):
            if row.uid in table:
                table[row.uid].update(row.props)
                updated += 1
            else:
                table[row.uid] = {**row.props, "uid": row.uid}
                self._labels[row.uid] = tuple(dict.fromkeys(self._labels.get(row.uid, ()) + kind.labels))
                created += 1
        return WriteResult(created=created, updated=updated)

    def merge_edges(self, rel: RelKind, rows: pl.DataFrame, *, on_missing: OnMissing = "error",
                    batch_size: int = DEFAULT_BATCH, replace: Collection[str] = (),
                    known_new: bool = False) -> WriteResult:
        _check_batch(batch_size)
        if on_missing not in ("error", "skip"):
            raise ConfigError(f"on_missing must be 'error' or 'skip', not {on_missing!r}")
        prepared = edge_rows(rel, rows)
        sources, targets = self._nodes.get(rel.source.key_label, {}), self._nodes.get(rel.target.key_label, {})
        keep = [r for r in prepared.rows if r.src in sources and r.dst in targets]
        dropped = len(prepared.rows) - len(keep)
        if dropped and on_missing == "error":
            missing = [u for u in prepared.sources if u not in sources]
            missing += [u for u in prepared.targets if u not in targets]
            raise MissingEndpointError(
                f"{dropped} {rel.type} row(s) name nodes not in the store "
                f"(e.g. {', '.join(missing[:3])}); nothing was written", missing=missing[:10], count=dropped)
        prepared = EdgeRows(keep, prepared.key, list(dict.fromkeys(r.src for r in keep)),
                            list(dict.fromkeys(r.dst for r in keep)))
        table = self._edges.setdefault(rel.type, {})
        wanted = set(prepared.sources)
        stored = {} if known_new else {identity: props for identity, props in table.items()
                                       if identity[0] in wanted and identity[1] in targets}
        plan = plan_edge_merge(prepared, stored, replace)
        for stale in plan.stale:
            del table[(stale["src"], stale["dst"], *(stale["key"][k] for k in prepared.key))]
        for row in plan.changed:
            table[prepared.identity(row)].update(row.props)
        for row in plan.new:
            table[prepared.identity(row)] = dict(row.props)
        return WriteResult(created=len(plan.new), updated=len(plan.changed), unchanged=plan.same,
                           skipped=dropped, deleted=len(plan.stale))

    # ---- typed reads and deletes ------------------------------------------------------------
    def _of_kind(self, kind: NodeKind):
        label = kind.labels[-1]
        for uid, props in self._nodes.get(kind.key_label, {}).items():
            if label in self._labels.get(uid, ()):
                yield props

    def nodes(self, kind: NodeKind, *, uids: list[str] | None = None, where: Filter | None = None) -> pl.DataFrame:
        if uids is not None:
            table = self._nodes.get(kind.key_label, {})
            label = kind.labels[-1]
            found = [table[u] for u in dict.fromkeys(uids) if u in table and label in self._labels.get(u, ())]
        else:
            found = list(self._of_kind(kind))
        return props_frame([dict(p) for p in found if matches(p, where)], ["uid"])

    def _matching_edges(self, rel: RelKind, where: Filter | None, source_where: Filter | None) -> list[tuple]:
        sources = self._nodes.get(rel.source.key_label, {})
        targets = self._nodes.get(rel.target.key_label, {})  # a type may end at several kinds (CONTAINS)
        where, source_where = prepared(where), prepared(source_where)
        return [identity for identity, props in self._edges.get(rel.type, {}).items()
                if identity[1] in targets and identity[0] in sources and matches(props, where)
                and self._is(identity[0], rel.source) and self._is(identity[1], rel.target)
                and (not source_where or matches(sources.get(identity[0], {}), source_where))]

    def _is(self, uid: str, kind: NodeKind) -> bool:
        """Whether ``uid`` carries ``kind``'s own label (an edge read of Feature ends skips sites)."""
        label = kind.labels[-1]
        return label == kind.key_label or label in self._labels.get(uid, ())

    def edges(self, rel: RelKind, *, where: Filter | None = None, source_where: Filter | None = None,
              target_where: Filter | None = None, properties: Sequence[str] | None = None) -> pl.DataFrame:
        table = self._edges.get(rel.type, {})
        targets = self._nodes.get(rel.target.key_label, {})
        target_where = prepared(target_where)
        properties = checked_properties(properties)
        found = [i for i in self._matching_edges(rel, where, source_where)
                 if not target_where or matches(targets.get(i[1], {}), target_where)]
        if properties is not None:
            return to_frame([{"src": i[0], "dst": i[1], **{p: table[i].get(p) for p in properties}} for i in found],
                            ["src", "dst", *properties])
        return props_frame([{"src": i[0], "dst": i[1], **table[i]} for i in found], ["src", "dst"])

    def delete_edges(self, rel: RelKind, *, where: Filter | None = None, source_where: Filter | None = None) -> int:
        doomed = self._matching_edges(rel, where, source_where)
        table = self._edges.get(rel.type, {})
        for identity in doomed:
            del table[identity]
        return len(doomed)

    def remove_properties(self, kind: NodeKind, props: list[str], *, where: Filter | None = None) -> int:
        hit = [p for p in self._of_kind(kind) if matches(p, where)]
        for node in hit:
            for prop in props:
                node.pop(prop, None)
        return len(hit)

    # ---- the rest of the protocol ------------------------------------------------------------
    def query(self, cypher: str, params: dict[str, Any] | None = None, *, write: bool = False) -> pl.DataFrame:
        raise CypherUnsupported("the in-memory store answers typed reads only, not Cypher; "
                                "open an embedded or Bolt store to run Cypher")

    def records(self, cypher: str, params: dict[str, Any] | None = None, *, write: bool = False):
        return self.query(cypher, params, write=write)

    def schema_version(self) -> int | None:
        return schema.SCHEMA_VERSION

    def close(self) -> None:
        """Nothing to release: the graph lives as long as the object."""

    def __enter__(self) -> "MemoryStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
