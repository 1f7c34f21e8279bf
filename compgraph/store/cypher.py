"""Cypher text for the store's own statements.

Only identifiers from :mod:`compgraph.schema` are spliced into the text (checked
by :func:`ident`); every value travels as a ``$parameter``.
"""

from __future__ import annotations

import re
from typing import Sequence

from compgraph.errors import QueryError
from compgraph.schema import EDGE_INDEXED, INDEXED, META, UNIQUE_KEY_LABELS, NodeKind, RelKind

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def ident(name: str) -> str:
    """Return ``name`` if it is a plain identifier, else raise (never splice user text)."""
    if not _IDENT.match(name):
        raise QueryError(f"not a plain identifier: {name!r}")
    return name


def labels(kind: NodeKind) -> str:
    return "".join(f":{ident(label)}" for label in kind.labels)


def schema_statements() -> list[str]:
    """Uniqueness constraints and indexes, each idempotent."""
    stmts = [
        f"CREATE CONSTRAINT {ident(label.lower() + '_uid')} IF NOT EXISTS "
        f"FOR (n:{ident(label)}) REQUIRE n.uid IS UNIQUE"
        for label in UNIQUE_KEY_LABELS
    ]
    stmts += [
        f"CREATE INDEX {ident(label.lower() + '_' + prop)} IF NOT EXISTS "
        f"FOR (n:{ident(label)}) ON (n.{ident(prop)})"
        for label, prop in INDEXED
    ]
    stmts += [
        f"CREATE INDEX {ident(rel.lower() + '_' + prop)} IF NOT EXISTS "
        f"FOR ()-[r:{ident(rel)}]-() ON (r.{ident(prop)})"
        for rel, prop in EDGE_INDEXED
    ]
    return stmts


READ_SCHEMA_VERSION = f"MATCH (m:{ident(META.key_label)} {{uid: $uid}}) RETURN m.schema_version AS v"
WRITE_SCHEMA_VERSION = (
    f"MERGE (m:{ident(META.key_label)} {{uid: $uid}}) SET m.schema_version = $v"
)


def lookup_uids(label: str) -> str:
    """Rows ``{uid}`` for the given uids that exist under ``label``."""
    return f"UNWIND $uids AS u MATCH (n:{ident(label)} {{uid: u}}) RETURN n.uid AS uid"


def lookup_rids(label: str) -> str:
    """Rows ``{uid, rid}``: ArcadeDB's record id (``#bucket:position``) of each existing uid.

    ``elementId`` is the RID there; it changes only when a node's labels change, which
    compgraph never does. (``id(n)`` is an encoded integer the bulk API does not take.)
    """
    return f"UNWIND $uids AS u MATCH (n:{ident(label)} {{uid: u}}) RETURN n.uid AS uid, elementId(n) AS rid"


def create_nodes(kind: NodeKind) -> str:
    return f"UNWIND $rows AS r CREATE (n{labels(kind)}) SET n = r.props, n.uid = r.uid"


def update_nodes(kind: NodeKind) -> str:
    return (
        f"UNWIND $rows AS r MATCH (n:{ident(kind.key_label)} {{uid: r.uid}}) "
        "SET n += r.props"
    )


def _key_map(rel: RelKind) -> str:
    if not rel.key:
        return ""
    return " {" + ", ".join(f"{ident(k)}: r.key.{ident(k)}" for k in rel.key) + "}"


def merge_edges(rel: RelKind) -> str:
    """MERGE each row's edge; returns how many rows found both endpoints."""
    return (
        f"UNWIND $rows AS r "
        f"MATCH (a:{ident(rel.source.key_label)} {{uid: r.src}}) "
        f"MATCH (b:{ident(rel.target.key_label)} {{uid: r.dst}}) "
        f"MERGE (a)-[e:{ident(rel.type)}{_key_map(rel)}]->(b) "
        "SET e += r.props RETURN count(e) AS n"
    )


def create_edges(rel: RelKind) -> str:
    return (
        f"UNWIND $rows AS r "
        f"MATCH (a:{ident(rel.source.key_label)} {{uid: r.src}}) "
        f"MATCH (b:{ident(rel.target.key_label)} {{uid: r.dst}}) "
        f"CREATE (a)-[e:{ident(rel.type)}]->(b) SET e = r.props RETURN count(e) AS n"
    )


def existing_edges(rel: RelKind) -> str:
    """Every edge of this type leaving the given sources: src, dst and all properties."""
    return (
        f"UNWIND $uids AS u MATCH (a:{ident(rel.source.key_label)} {{uid: u}})"
        f"-[e:{ident(rel.type)}]->(b:{ident(rel.target.key_label)}) "
        "RETURN u AS src, b.uid AS dst, properties(e) AS props"
    )


def _edge_by_identity(rel: RelKind) -> str:
    """``UNWIND $rows AS r MATCH`` the edge each row ``{src, dst, key}`` identifies, as ``e``."""
    where = " AND ".join(f"e.{ident(k)} = r.key.{ident(k)}" for k in rel.key)
    return (
        f"UNWIND $rows AS r "
        f"MATCH (a:{ident(rel.source.key_label)} {{uid: r.src}})"
        f"-[e:{ident(rel.type)}]->(b:{ident(rel.target.key_label)} {{uid: r.dst}}) "
        + (f"WHERE {where} " if where else "")
    )


def update_edges(rel: RelKind) -> str:
    return _edge_by_identity(rel) + "SET e += r.props"


# ---- typed reads and deletes ----------------------------------------------------------
# A filter is a dict {property: value}; a list, tuple or set value means "one of".

def where_clause(var: str, where: dict | None, prefix: str) -> tuple[str, dict]:
    """``WHERE var.p = $prefix0 AND var.q IN $prefix1`` and its parameters."""
    if not where:
        return "", {}
    parts, params = [], {}
    for i, (prop, value) in enumerate(sorted(where.items())):
        name = f"{prefix}{i}"
        if isinstance(value, (list, tuple, set, frozenset)):
            parts.append(f"{var}.{ident(prop)} IN ${name}")
            params[name] = list(value)
        elif value is None:
            parts.append(f"{var}.{ident(prop)} IS NULL")
        else:
            parts.append(f"{var}.{ident(prop)} = ${name}")
            params[name] = value
    return " AND ".join(parts), params


def _join(*conditions: str) -> str:
    kept = [c for c in conditions if c]
    return f" WHERE {' AND '.join(kept)}" if kept else ""


def read_nodes(kind: NodeKind, where: dict | None) -> tuple[str, dict]:
    """Rows ``{props}``: every property of the matching nodes (uid included)."""
    cond, params = where_clause("n", where, "w")
    return f"MATCH (n:{ident(kind.labels[-1])}){_join(cond)} RETURN properties(n) AS props", params


def read_nodes_by_uid(kind: NodeKind) -> str:
    return (f"UNWIND $uids AS u MATCH (n:{ident(kind.key_label)} {{uid: u}}) "
            f"WHERE n:{ident(kind.labels[-1])} RETURN properties(n) AS props")


def _edge_match(rel: RelKind, where: dict | None, source_where: dict | None,
                target_where: dict | None = None) -> tuple[str, dict]:
    """``MATCH`` the edges of ``rel`` with the filters, binding ``a``, ``e`` and ``b``. A filter on an
    indexed edge property (:data:`compgraph.schema.EDGE_INDEXED`) matches unlabelled ends first
    and checks the labels after a ``WITH``: ArcadeDB uses the edge index only so (an
    attribution graph's links in 35 ms instead of 6 s among 3.5 M)."""
    cond, params = where_clause("e", where, "w")
    src_cond, src_params = where_clause("a", source_where, "s")
    dst_cond, dst_params = where_clause("b", target_where, "t")
    params = {**params, **src_params, **dst_params}
    src, dst = ident(rel.source.labels[-1]), ident(rel.target.labels[-1])  # Feature ends: (a:Feature)
    if where and any((rel.type, p) in EDGE_INDEXED for p in where):
        return (f"MATCH (a)-[e:{ident(rel.type)}]->(b){_join(cond)} WITH a, e, b"
                f"{_join(f'a:{src}', f'b:{dst}', src_cond, dst_cond)}", params)
    return f"MATCH (a:{src})-[e:{ident(rel.type)}]->(b:{dst}){_join(cond, src_cond, dst_cond)}", params


def read_edges(rel: RelKind, where: dict | None, source_where: dict | None,
               target_where: dict | None = None, properties: Sequence[str] | None = None) -> tuple[str, dict]:
    """Rows ``{src, dst, props}`` of the matching edges; with ``properties``, rows ``{src,
    dst, p0, p1, …}``: those properties alone, ``p<i>`` the i-th (null where an edge has none)."""
    match, params = _edge_match(rel, where, source_where, target_where)
    if properties is None:
        return f"{match} RETURN a.uid AS src, b.uid AS dst, properties(e) AS props", params
    columns = "".join(f", e.{ident(p)} AS p{i}" for i, p in enumerate(properties))
    return f"{match} RETURN a.uid AS src, b.uid AS dst{columns}", params


def delete_edges(rel: RelKind, where: dict | None, source_where: dict | None, limit: int) -> tuple[str, dict]:
    """Delete up to ``limit`` matching edges; returns ``{n}``."""
    match, params = _edge_match(rel, where, source_where)
    return f"{match} WITH e LIMIT {int(limit)} DELETE e RETURN count(*) AS n", params


def delete_edge_rows(rel: RelKind) -> str:
    """Delete the edges named by rows ``{src, dst, key}`` (identity as in :func:`update_edges`)."""
    return _edge_by_identity(rel) + "DELETE e"


def remove_properties(kind: NodeKind, props: list[str], where: dict | None) -> tuple[str, dict]:
    """Remove ``props`` from the matching nodes; returns ``{n}``."""
    cond, params = where_clause("n", where, "w")
    removals = ", ".join(f"n.{ident(p)}" for p in props)
    return (f"MATCH (n:{ident(kind.labels[-1])}){_join(cond)} REMOVE {removals} RETURN count(n) AS n", params)
