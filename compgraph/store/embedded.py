"""EmbeddedStore: ArcadeDB in-process, a directory on disk, no server.

Layout of the store directory::

    <store>/db/        the ArcadeDB database
    <store>/log/       the engine's log (never the current working directory)

New nodes and edges go through the engine's bulk ``GraphBatch`` API (about five
times faster than Cypher ``CREATE`` for edges here); lookups and updates go
through Cypher. The JVM is one per process: its heap (``COMPGRAPH_JVM_HEAP``,
default 2g) and log location are fixed by the first store opened.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

import polars as pl

from compgraph import schema
from compgraph.errors import QueryError, ReadOnlyViolation, StoreError, StoreUnavailable
from compgraph.schema import NodeKind, RelKind
from compgraph.store import cypher
from compgraph.store.base import LOOKUP_BATCH, BaseStore
from compgraph.store.rows import EdgeRow, NodeRow, chunks, to_frame

DEFAULT_PATH = "./compgraph-kb"

_LOG_PROPERTIES = """\
handlers = java.util.logging.FileHandler
.level = WARNING
com.arcadedb.level = INFO
java.util.logging.FileHandler.level = INFO
java.util.logging.FileHandler.pattern = {log_dir}/arcadedb.%g.log
java.util.logging.FileHandler.limit = 10000000
java.util.logging.FileHandler.count = 3
java.util.logging.FileHandler.formatter = java.util.logging.SimpleFormatter
"""


@contextlib.contextmanager
def _quiet_stderr():
    """Hide what the JVM prints to file descriptor 2 while it starts (an incubator-module
    warning that would break the CLI's one-line errors)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _start_jvm(root: Path) -> None:
    """Start the JVM with the engine's logs and crash files inside the store."""
    import jpype

    if jpype.isJVMStarted():
        return
    log_dir = root / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    props = log_dir / "logging.properties"
    props.write_text(_LOG_PROPERTIES.format(log_dir=log_dir.as_posix()))
    heap = os.environ.get("COMPGRAPH_JVM_HEAP", "2g")
    os.environ["ARCADEDB_JVM_ARGS"] = " ".join([
        os.environ.get("ARCADEDB_JVM_ARGS", ""),
        f"-Xmx{heap}",
        f"-Djava.util.logging.config.file={props}",
    ]).strip()
    os.environ.setdefault("ARCADEDB_JVM_ERROR_FILE", str(log_dir / "hs_err_pid%p.log"))
    from arcadedb_embedded.jvm import start_jvm

    with _quiet_stderr():
        start_jvm(heap_size=None)


def _type_name(kind: NodeKind) -> str:
    """ArcadeDB stores a multi-label node in a type named by its sorted labels joined by ~."""
    return "~".join(sorted(kind.labels))


def _store_error(err: Exception) -> StoreError:
    """One line from the engine's message, in compgraph's error tree."""
    text = str(err)
    detail = text.split("Exception: ", 1)[-1].split(" (caused by", 1)[0].strip()
    if "QueryNotIdempotentException" in text:
        return ReadOnlyViolation("this statement writes; pass --write (write=True) to allow it")
    if "CommandParsingException" in text:
        return QueryError(f"Cypher syntax error: {detail}")
    if "CommandParameterMissingException" in text:
        return QueryError(f"missing parameter: {detail}")
    if "DuplicatedKeyException" in text:
        return QueryError(f"duplicate key: {detail}")
    return QueryError(detail or text)


class EmbeddedStore(BaseStore):
    """ArcadeDB in this process; the directory is locked while it is open."""

    def __init__(self, path: str | os.PathLike = DEFAULT_PATH):
        self.root = Path(path).expanduser().resolve()
        self.location = str(self.root)
        # What this process wrote itself (the directory lock keeps other writers out):
        self._rids: dict[str, dict[str, str]] = {}  # key label -> uid -> RID of nodes seen
        self._created: set[str] = set()  # nodes created here, so without edges not written here
        self._sources: dict[str, set[str]] = {}  # rel type -> uids given outgoing edges here
        if self.root.exists() and not self.root.is_dir():
            raise StoreUnavailable(f"store path {self.root} is a file, not a directory")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreUnavailable(f"cannot create store directory {self.root}: {err.strerror}") from err
        _start_jvm(self.root)
        import arcadedb_embedded as arcade

        self._arcade = arcade
        db_path = str(self.root / "db")
        try:
            exists = arcade.database_exists(db_path)
            self._db = arcade.open_database(db_path) if exists else arcade.create_database(db_path)
        except arcade.ArcadeDBError as err:
            raise StoreUnavailable(f"cannot open store {self.root}: {str(err).splitlines()[0]}") from err
        try:
            self._ensure_types()
            self._ensure_schema()
        except BaseException:
            self.close()
            raise

    # ---- engine primitives ------------------------------------------------------------
    def _ensure_types(self) -> None:
        """Vertex and edge types the bulk API needs to exist beforehand."""
        java_schema = self._db.get_java_database().getSchema()
        for kind in schema.NODE_KINDS:
            for label in kind.labels:
                java_schema.getOrCreateVertexType(label)
            if len(kind.labels) > 1:
                composite = java_schema.getOrCreateVertexType(_type_name(kind))
                have = {str(t.getName()) for t in composite.getSuperTypes()}
                for label in kind.labels:
                    if label not in have:
                        composite.addSuperType(label)
        for rel in schema.REL_KINDS:
            java_schema.getOrCreateEdgeType(rel.type)

    def _read(self, statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            return self._db.query("opencypher", statement, params).to_json_list()
        except self._arcade.ArcadeDBError as err:
            raise _store_error(err) from err

    def _write(self, statements: list[tuple[str, dict[str, Any]]]) -> None:
        self._run_in_transaction(statements)

    def _run_in_transaction(self, statements: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        try:
            with self._db.transaction():
                for statement, params in statements:
                    result = self._db.command("opencypher", statement, params)
                    rows = result.to_json_list() if result is not None else []
        except self._arcade.ArcadeDBError as err:
            raise _store_error(err) from err
        return rows

    def _create_nodes(self, kind: NodeKind, rows: list[NodeRow], batch_size: int) -> None:
        rids: list[str] = []
        try:
            with self._db.graph_batch(batch_size=max(batch_size, 10_000)) as batch:
                for part in chunks(rows, batch_size):
                    rids += batch.create_vertices(_type_name(kind), [{**r.props, "uid": r.uid} for r in part])
        except self._arcade.ArcadeDBError as err:
            raise _store_error(err) from err
        self._rids.setdefault(kind.key_label, {}).update(zip((r.uid for r in rows), rids))
        self._created.update(r.uid for r in rows)

    def _note_existing(self, label: str, uids: list[str]) -> set[str]:
        """Known RIDs answer without a query; the rest are looked up and remembered."""
        self._resolve_rids(label, uids)
        known = self._rids.get(label, {})
        return {u for u in uids if u in known}

    def _stored_edges(self, rel: RelKind, sources: list[str]) -> dict[tuple, dict[str, Any]]:
        """Sources created here and never given an edge of this type need no query."""
        given = self._sources.get(rel.type, set())
        unknown = [u for u in sources if u not in self._created or u in given]
        return super()._stored_edges(rel, unknown) if unknown else {}

    def _create_edges(self, rel: RelKind, rows: list[EdgeRow], batch_size: int) -> None:
        """One GraphBatch for the whole call: a flush per batch cost more than the edges.

        The endpoint check of the same merge resolved every endpoint's RID already.
        """
        src_rid, dst_rid = self._rids[rel.source.key_label], self._rids[rel.target.key_label]
        try:
            with self._db.graph_batch(batch_size=max(batch_size, 10_000)) as batch:
                for part in chunks(rows, batch_size):
                    src = [src_rid[r.src] for r in part]
                    dst = [dst_rid[r.dst] for r in part]
                    batch.new_edges(src, rel.type, dst, [r.props for r in part])
                    self._sources.setdefault(rel.type, set()).update(r.src for r in part)
        except self._arcade.ArcadeDBError as err:
            raise _store_error(err) from err

    def _resolve_rids(self, label: str, uids: list[str]) -> None:
        known = self._rids.setdefault(label, {})
        unknown = [u for u in dict.fromkeys(uids) if u not in known]
        for batch in chunks(unknown, LOOKUP_BATCH):
            for rec in self._read(cypher.lookup_rids(label), {"uids": batch}):
                known[rec["uid"]] = str(rec["rid"])

    # ---- public -------------------------------------------------------------------------
    def query(self, statement: str, params: dict[str, Any] | None = None, *, write: bool = False) -> pl.DataFrame:
        params = params or {}
        if write:
            # a user's write may delete or rewire anything: forget what this process knew
            self._rids.clear()
            self._created.clear()
            self._sources.clear()
            return to_frame(self._run_in_transaction([(statement, params)]))
        try:
            records = self._db.query("opencypher", statement, params).to_json_list()
        except self._arcade.ArcadeDBError as err:
            raise _store_error(err) from err
        return to_frame(records)

    def close(self) -> None:
        db, self._db = getattr(self, "_db", None), None
        if db is not None and db.is_open():
            db.close()
