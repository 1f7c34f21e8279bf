"""EmbeddedStore: ArcadeDB in-process, a directory on disk, no server.

Layout of the store directory::

    <store>/db/        the ArcadeDB database
    <store>/log/       the engine's log (never the current working directory)

New nodes and edges go through the engine's bulk ``GraphBatch`` API (about five
times faster than Cypher ``CREATE`` for edges here), with its write-ahead log on: without
it a page flush that fails (a full disk) left edge lists pointing at records never
written, and the store could not resume; lookups and updates go through Cypher. The JVM is one per process: its heap (``COMPGRAPH_JVM_HEAP``,
default 2g) and log location are fixed by the first store opened. It runs with
``-Xrs``: SIGINT, SIGTERM and SIGHUP stay Python's (the CLI turns them into a clean
stop; the JVM's own handlers crashed it inside JPype's signal bridge).

Query rows stream from the engine in batches (:meth:`EmbeddedStore.records`), with
nodes, relationships and paths as plain values (:func:`~compgraph.store.rows.node_value`
...), NaN and infinities as floats. ``EmbeddedStore(path, create=False)`` opens an
existing store only: a path without one raises :class:`StoreNotFound` and nothing is
created there.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import polars as pl

from compgraph import schema
from compgraph.errors import (
    QueryError, ReadOnlyViolation, StoreError, StoreInUse, StoreNotFound, StoreUnavailable,
)
from compgraph.store import files
from compgraph.schema import NodeKind, RelKind
from compgraph.store import cypher
from compgraph.store.base import LOOKUP_BATCH, BaseStore, checked_schema_version
from compgraph.store.rows import (
    EdgeRow,
    NodeRow,
    Records,
    chunks,
    node_value,
    path_value,
    read_procedure_call,
    relationship_value,
    statement_writes,
)

DEFAULT_PATH = "./compgraph-kb"
DATABASE_DIR = "db"
"""The engine's database inside a store directory."""

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


def start_engine(log_dir: Path) -> None:
    """Start the JVM with the engine's logs and crash files in ``log_dir``, and with
    ``-Xrs``, so the process's signals stay Python's."""
    import jpype

    if jpype.isJVMStarted():
        return
    props = log_dir / "logging.properties"
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        props.write_text(_LOG_PROPERTIES.format(log_dir=log_dir.as_posix()))
    except OSError as err:
        raise StoreUnavailable(f"cannot write the engine's log in {log_dir}: {err.strerror}") from err
    heap = os.environ.get("COMPGRAPH_JVM_HEAP", "2g")
    args = [f"-Xmx{heap}", "-Xrs", f"-Djava.util.logging.config.file={props}"]
    # The bindings read the crash-file location from the environment only: set it for the
    # start, and leave the environment as it was (child processes must not inherit it).
    error_file = "ARCADEDB_JVM_ERROR_FILE"
    had_error_file = error_file in os.environ
    os.environ.setdefault(error_file, str(log_dir / "hs_err_pid%p.log"))
    from arcadedb_embedded.jvm import start_jvm

    try:
        with _quiet_stderr():
            start_jvm(heap_size=None, jvm_args=args)
    finally:
        if not had_error_file:
            os.environ.pop(error_file, None)
    _engine_stderr_to(log_dir / "engine.err")


def _engine_stderr_to(path: Path) -> None:
    """Send what the engine prints on ``System.err`` (the logger's own failures, as stack
    traces when the disk is full) to ``path``, or nowhere when it cannot be opened: the
    terminal gets compgraph's one-line errors only."""
    import jpype

    java_io = jpype.JPackage("java.io")
    try:
        stream = java_io.FileOutputStream(str(path), True)
    except jpype.JException:  # a full or read-only disk: drop it
        stream = jpype.JClass("java.io.OutputStream").nullOutputStream()
    jpype.JClass("java.lang.System").setErr(java_io.PrintStream(stream, True))


def _type_name(kind: NodeKind) -> str:
    """ArcadeDB stores a multi-label node in a type named by its sorted labels joined by ~."""
    return "~".join(sorted(kind.labels))


def _java_chain(err: BaseException) -> list[tuple[str, str]]:
    """(class name, first line of the message) of the Java exception behind ``err`` and
    of each of its causes, outermost first."""
    import jpype

    exc: Any = err
    while exc is not None and not isinstance(exc, jpype.JException):
        exc = exc.__cause__
    chain: list[tuple[str, str]] = []
    while exc is not None and len(chain) < 20:
        message = exc.getMessage()
        text = str(message).strip() if message is not None else ""
        chain.append((str(exc.getClass().getName()), text.splitlines()[0] if text else ""))
        exc = exc.getCause()
    return chain


def _reason(err: BaseException) -> tuple[str, str]:
    """The engine's own reason for a failure, in one line, and the Java class that gave it.

    Wrappers that only repeat the statement ("Error executing Cypher query: <the
    statement>") are skipped for the cause that says what went wrong."""
    for name, message in _java_chain(err):
        if message and not message.startswith("Error executing Cypher query"):
            return message, name
    text = str(err)
    detail = text.split(" (caused by ", 1)[-1].rstrip(")") if "Error executing Cypher query" in text else text
    detail = detail.split("Exception: ", 1)[-1].split(" (caused by", 1)[0].strip()
    return (detail.splitlines()[0] if detail else type(err).__name__), ""


def _store_error(err: BaseException) -> StoreError:
    """One line from the engine's message, in compgraph's error tree."""
    names = " ".join(name for name, _ in _java_chain(err)) or str(err)
    if "QueryNotIdempotentException" in names:
        return ReadOnlyViolation(_READ_ONLY)
    detail, source = _reason(err)
    if "CommandParsingException" in names:
        return QueryError(f"Cypher syntax error: {detail}")
    if "CommandParameterMissingException" in names:
        return QueryError(f"missing parameter: {detail}")
    if "DuplicatedKeyException" in names:
        return QueryError(f"duplicate key: {detail}")
    if source and not source.startswith("com.arcadedb."):  # java.lang.NumberFormatException, ...
        detail = f"{detail} ({source.rsplit('.', 1)[-1]})"
    return QueryError(f"query failed: {detail}")


def open_error(err: BaseException, root: Path) -> StoreError:
    """Why the store at ``root`` did not open, in one line: held by another process (named
    when it can be told), a file system that refuses writes, or the engine's reason."""
    chain = _java_chain(err)
    if any(name.endswith("LockException") for name, _ in chain):
        return StoreInUse(files.in_use(root, root / DATABASE_DIR / "database.lck"))
    return files.disk_error([m for _, m in chain], root) or \
        StoreUnavailable(f"cannot open store {root}: {_reason(err)[0]}")


_READ_ONLY = "this statement writes; pass --write (write=True) to allow it"
_BATCH_ROWS = 1000  # rows per crossing from the JVM while streaming


class _Graph:
    """The engine's Java classes that query rows may hold, looked up once."""

    def __init__(self) -> None:
        import jpype

        self.vertex = jpype.JClass("com.arcadedb.graph.Vertex")
        self.edge = jpype.JClass("com.arcadedb.graph.Edge")
        self.document = jpype.JClass("com.arcadedb.database.Document")
        self.rid = jpype.JClass("com.arcadedb.database.RID")
        try:
            self.path = jpype.JClass("com.arcadedb.query.opencypher.traversal.TraversalPath")
        except (TypeError, RuntimeError, ImportError):  # pragma: no cover - another engine build
            self.path = None
        self.jobject = jpype.JObject
        from arcadedb_embedded.type_conversion import convert_java_to_python

        self.convert = convert_java_to_python


_GRAPH: _Graph | None = None


def _graph() -> _Graph:
    global _GRAPH
    if _GRAPH is None:
        _GRAPH = _Graph()
    return _GRAPH


def _plain(value: Any) -> Any:
    """A query value with the engine's objects (nodes, relationships, paths, sets) as
    plain Python values."""
    t = type(value)
    if value is None or t is str or t is int or t is float or t is bool:
        return value
    if t is dict:
        return {str(k): _plain(v) for k, v in value.items()}
    if t in (list, tuple, set, frozenset):
        return [_plain(v) for v in value]
    g = _graph()
    if isinstance(value, g.jobject):
        return _java_value(g, value)
    return value  # date, datetime, Decimal: as the engine's bindings give them


def _java_value(g: _Graph, value: Any) -> Any:
    if isinstance(value, g.vertex):
        return node_value(str(value.getTypeName()).split("~"), _properties(g, value))
    if isinstance(value, g.edge):
        return relationship_value(str(value.getTypeName()), _properties(g, value))
    if g.path is not None and isinstance(value, g.path):
        return path_value([_java_value(g, v) for v in value.getVertices()],
                          [_java_value(g, e) for e in value.getEdges()])
    if isinstance(value, g.rid):  # procedures (algo.pagerank, ...) yield record ids
        record = value.getRecord()
        return str(value) if record is None else _java_value(g, record)
    if isinstance(value, g.document):
        return _properties(g, value)
    converted = g.convert(value)
    return str(value) if isinstance(converted, g.jobject) else _plain(converted)


def _properties(g: _Graph, element: Any) -> dict[str, Any]:
    return _plain(g.convert(element.toMap(False)))


def _typed_rows():
    """The engine bridge's batch reader (``TypedRows``) and its JSON hook, or None when
    this build of the bindings has none (rows are then read one by one)."""
    try:
        from arcadedb_embedded import results

        reader = results._bridge_class("TypedRows")
        hook = results._typed_hook
    except (ImportError, AttributeError):  # pragma: no cover - other bindings
        return None
    return None if reader is None else (reader, hook)


def _rows(result) -> Iterator[dict[str, Any]]:
    """The rows of an engine result set, batch by batch, as plain values; the result set
    is closed when the rows end or the reader stops early."""
    import jpype

    try:
        typed = _typed_rows()
        if typed is None:  # pragma: no cover - other bindings
            for row in result.iter_dicts():
                yield _plain(row)
            return
        reader, typed_hook = typed
        while True:
            batch = reader.nextRows(result._java_result_set, _BATCH_ROWS)
            text = str(batch[0])
            if "\x01" in text or "\\u0001" in text:  # values JSON cannot carry are tagged
                engine_hook = typed_hook(batch[1])

                def hook(obj, engine_hook=engine_hook):
                    out = engine_hook(obj)
                    return obj if out is obj else _plain(out)  # a tagged value: the engine's object

                yield from json.loads(text, object_hook=hook)
            else:
                yield from json.loads(text)
            if batch[2]:  # drained: the bridge closed the result set
                return
    except jpype.JException as err:
        raise _store_error(err) from err
    finally:
        result.close()


class EmbeddedStore(BaseStore):
    """ArcadeDB in this process; the directory is locked while it is open."""

    def __init__(self, path: str | os.PathLike = DEFAULT_PATH, *, create: bool = True):
        """Open the store at ``path``; with ``create`` (the default) make it if it does not
        exist, without it raise :class:`StoreNotFound` and leave the path untouched."""
        self.root = Path(path).expanduser().resolve()
        self.location = str(self.root)
        # What this process wrote itself (the directory lock keeps other writers out):
        self._rids: dict[str, dict[str, str]] = {}  # key label -> uid -> RID of nodes seen
        self._created: set[str] = set()  # nodes created here, so without edges not written here
        self._sources: dict[str, set[str]] = {}  # rel type -> uids given outgoing edges here
        db_dir = self.root / DATABASE_DIR
        if self.root.exists() and not self.root.is_dir():
            raise StoreUnavailable(f"store path {self.root} is a file, not a directory")
        if not create and not db_dir.is_dir():
            raise StoreNotFound(f"no store at {self.root}")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreUnavailable(f"cannot create store directory {self.root}: {err.strerror}") from err
        for folder in (self.root, db_dir, self.root / "log"):
            if folder.exists() and not os.access(folder, os.W_OK):
                raise StoreUnavailable(f"store {self.root} is read-only ({folder} is not writable); "
                                       "the engine needs write access to open a store, even to read it")
        start_engine(self.root / "log")
        import arcadedb_embedded as arcade

        self._arcade = arcade
        db_path = str(db_dir)
        try:
            exists = arcade.database_exists(db_path)
            self._created_now = not exists
            if not exists and not create:
                raise StoreNotFound(f"no store at {self.root}")
            self._db = arcade.open_database(db_path) if exists else arcade.create_database(db_path)
        except arcade.ArcadeDBError as err:
            raise open_error(err, self.root) from err
        try:
            rows = self._read(cypher.READ_SCHEMA_VERSION, {"uid": schema.META_UID})
            checked_schema_version(self.location, rows[0]["v"] if rows else None)
            self._ensure_types()
            self._ensure_schema()
        except BaseException:
            self.close()
            raise

    def _failed(self, err: BaseException) -> StoreError:
        """The error of a failed write: the file system's refusal when it was one (the
        engine may report it against whichever statement came next), else the engine's."""
        error = _store_error(err)
        unexplained = type(error) is QueryError and str(error).startswith("query failed")
        return files.disk_error([m for _, m in _java_chain(err)] + [str(err)], self.root,
                                unexplained=unexplained) or error

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

    def _schema_created(self) -> None:
        """Rebuild every index of a store whose schema was (re)created: a schema creation cut
        off by a full disk can leave an index registered only on the next open, blind to the
        records written in between (a second :CompgraphMeta node appeared: the uniqueness check
        did not see the first). A store created by this open has nothing to rebuild (and a
        rebuild would need room for every index twice)."""
        if self._created_now:
            return
        try:
            self._db.command("sql", "REBUILD INDEX *")
        except self._arcade.ArcadeDBError as err:
            raise self._failed(err) from err

    def _read(self, statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            return list(_rows(self._db.query("opencypher", statement, params)))
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
            raise self._failed(err) from err
        return rows

    def _create_nodes(self, kind: NodeKind, rows: list[NodeRow], batch_size: int) -> None:
        rids: list[str] = []
        try:
            with self._db.graph_batch(batch_size=max(batch_size, 10_000), use_wal=True) as batch:
                for part in chunks(rows, batch_size):
                    rids += batch.create_vertices(_type_name(kind), [{**r.props, "uid": r.uid} for r in part])
        except self._arcade.ArcadeDBError as err:
            raise self._failed(err) from err
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
            with self._db.graph_batch(batch_size=max(batch_size, 10_000), use_wal=True) as batch:
                for part in chunks(rows, batch_size):
                    src = [src_rid[r.src] for r in part]
                    dst = [dst_rid[r.dst] for r in part]
                    batch.new_edges(src, rel.type, dst, [r.props for r in part])
                    self._sources.setdefault(rel.type, set()).update(r.src for r in part)
        except self._arcade.ArcadeDBError as err:
            raise self._failed(err) from err

    def _resolve_rids(self, label: str, uids: list[str]) -> None:
        known = self._rids.setdefault(label, {})
        unknown = [u for u in dict.fromkeys(uids) if u not in known]
        for batch in chunks(unknown, LOOKUP_BATCH):
            for rec in self._read(cypher.lookup_rids(label), {"uids": batch}):
                known[rec["uid"]] = str(rec["rid"])

    # ---- public -------------------------------------------------------------------------
    def records(self, statement: str, params: dict[str, Any] | None = None, *, write: bool = False) -> Records:
        """The rows of ``statement`` as they come from the engine (see :class:`Records`).

        Without ``write`` a statement that writes is refused before it runs
        (:class:`ReadOnlyViolation`: its text writes, or the engine finds it is not
        idempotent, as a procedure that writes); read procedures the engine counts as
        writes (``CALL db.indexes()``, see ``READ_PROCEDURES``) run in a transaction
        that is rolled back. With ``write`` the statement runs in one transaction whose
        rows are all read before it commits, so the commit never waits on the reader."""
        params = dict(params or {})
        if write:
            # a user's write may delete or rewire anything: forget what this process knew
            self._rids.clear()
            self._created.clear()
            self._sources.clear()
            return Records.stream(iter(self._in_transaction(statement, params, commit=True)))
        if statement_writes(statement):  # refused the same way as by the Bolt store
            raise ReadOnlyViolation(_READ_ONLY)
        try:
            result = self._db.query("opencypher", statement, params)
        except self._arcade.ArcadeDBError as err:
            error = _store_error(err)
            if isinstance(error, ReadOnlyViolation) and read_procedure_call(statement):
                return Records.stream(iter(self._in_transaction(statement, params, commit=False)))
            raise error from err
        rows = _rows(result)
        return Records.stream(rows, close=rows.close)

    def _in_transaction(self, statement: str, params: dict[str, Any], *, commit: bool) -> list[dict[str, Any]]:
        """Run one statement in its own transaction and read all its rows; commit or roll back."""
        db = self._db
        try:
            db.begin()
            try:
                result = db.command("opencypher", statement, params)
                rows = list(_rows(result)) if result is not None else []
            except BaseException:
                db.rollback()
                raise
            if commit:
                db.commit()
            else:
                db.rollback()
        except self._arcade.ArcadeDBError as err:
            raise (self._failed(err) if commit else _store_error(err)) from err
        return rows

    def query(self, statement: str, params: dict[str, Any] | None = None, *, write: bool = False) -> pl.DataFrame:
        """The rows of ``statement`` as a frame that loses nothing
        (:func:`~compgraph.store.rows.to_frame`)."""
        with self.records(statement, params, write=write) as rows:
            return rows.to_frame()

    def close(self) -> None:
        db, self._db = getattr(self, "_db", None), None
        if db is not None and db.is_open():
            try:
                db.close()
            except self._arcade.ArcadeDBError as err:  # the last pages could not be flushed
                raise self._failed(err) from err
