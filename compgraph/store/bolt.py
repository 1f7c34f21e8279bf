"""BoltStore: a graph server over Bolt through the official ``neo4j`` driver.

Production target: Neo4j 5 (``docker/``). Tested here against ArcadeDB's Bolt server.
Credentials come from ``NEO4J_USER`` (default ``neo4j``) and ``NEO4J_PASSWORD``;
they are never printed or logged.

Reads run in read-access sessions (Neo4j refuses any write there). ArcadeDB's
Bolt server, unlike Neo4j, runs a write inside a read transaction and answers
``EXPLAIN`` with query type "w" for every statement, so neither is a guard alone:
a statement given to :meth:`~BoltStore.records` without ``write=True`` is refused up
front when its text writes (CREATE, MERGE, SET, DELETE, REMOVE, DROP, FOREACH, admin
commands: :func:`~compgraph.store.rows.statement_writes`), and otherwise streams in
an explicit transaction that is rolled back, and refused, if the result summary
counts any update (a procedure that writes). Read procedures (``CALL db.labels()``,
``SHOW INDEXES``) run. Writes run in managed write transactions, which the driver
retries on transient errors.

A URI carrying a user or password is refused (they would show in process lists,
shell history and error messages): credentials come from the environment only.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator
from urllib.parse import urlsplit

import polars as pl

from compgraph import schema
from compgraph.errors import (
    ConfigError,
    QueryError,
    ReadOnlyViolation,
    StoreAuthError,
    StoreError,
    StoreUnavailable,
)
from compgraph.store import cypher
from compgraph.store.base import BaseStore, checked_schema_version
from compgraph.store.rows import Records, node_value, path_value, relationship_value, statement_writes

BOLT_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")
_READ_ONLY = "this statement writes; pass --write (write=True) to allow it"


def _first_line(text: str) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _store_error(err: Exception, location: str) -> StoreError:
    from neo4j import exceptions as nx

    message = _first_line(getattr(err, "message", None) or str(err))
    code = getattr(err, "code", "") or ""
    if isinstance(err, nx.AuthError) or code.endswith("Security.Unauthorized"):
        return StoreAuthError(f"authentication failed at {location} (check NEO4J_USER / NEO4J_PASSWORD)")
    if isinstance(err, (nx.ServiceUnavailable, nx.SessionExpired)):
        return StoreUnavailable(f"cannot reach {location}: {message}")
    # Neo4j files a parameter of the wrong type under SyntaxError too; its GQL status says
    # it is a data exception (class 22), as the message does
    data_error = str(getattr(err, "gql_status", "") or "").startswith("22") or message.startswith("Type mismatch")
    if isinstance(err, nx.CypherSyntaxError) and not data_error:
        return QueryError(f"Cypher syntax error: {message}")
    if code.endswith("Statement.ParameterMissing"):
        return QueryError(f"missing parameter: {message}")
    if "database" in message.lower() and "not" in message.lower() and "exist" in message.lower():
        return StoreUnavailable(f"{location}: {message}")
    if message.startswith("Error executing Cypher query"):  # ArcadeDB: the statement, not its cause
        kind = code.rsplit(".", 1)[-1] or type(err).__name__
        return QueryError(f"query failed: {kind} (the server gave no other reason)")
    return QueryError(f"query failed: {message or type(err).__name__}")


class BoltStore(BaseStore):
    """A Bolt server; one driver per store, sessions per call."""

    def __init__(self, uri: str, *, database: str | None = None,
                 user: str | None = None, password: str | None = None):
        refuse_credentials(uri)
        import neo4j

        self._neo4j = neo4j
        self.location = uri + (f" (database {database})" if database else "")
        self._database = database
        auth = (user or os.environ.get("NEO4J_USER", "neo4j"),
                password if password is not None else os.environ.get("NEO4J_PASSWORD", ""))
        try:
            self._driver = neo4j.GraphDatabase.driver(uri, auth=auth, connection_timeout=10,
                                                      max_transaction_retry_time=30)
            self._driver.verify_connectivity()
        except (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError, OSError) as err:
            self.close()
            raise _store_error(err, uri) from err
        except ValueError as err:  # malformed URI
            self.close()
            raise StoreUnavailable(f"cannot use {uri!r}: {err}") from err
        try:
            rows = self._read(cypher.READ_SCHEMA_VERSION, {"uid": schema.META_UID})
            checked_schema_version(self.location, rows[0]["v"] if rows else None)
            self._ensure_schema()
        except BaseException:
            self.close()
            raise

    def _session(self, read: bool = False):
        mode = self._neo4j.READ_ACCESS if read else self._neo4j.WRITE_ACCESS
        return self._driver.session(database=self._database, default_access_mode=mode)

    def _call(self, work, read: bool = False):
        neo4j = self._neo4j
        try:
            with self._session(read) as session:
                return work(session)
        except (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError) as err:
            raise _store_error(err, self.location) from err

    # ---- engine primitives --------------------------------------------------------------
    def _read(self, statement: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self._call(lambda s: s.execute_read(lambda tx: _records(tx.run(statement, params))[1]), read=True)

    def _write(self, statements: list[tuple[str, dict[str, Any]]]) -> None:
        def work(tx):
            for statement, params in statements:
                tx.run(statement, params).consume()

        self._call(lambda s: s.execute_write(work))

    def _schema_command(self, statement: str) -> None:
        # Neo4j refuses schema changes inside a transaction that also writes data.
        self._call(lambda s: s.run(statement).consume())

    # ---- public ---------------------------------------------------------------------------
    def records(self, statement: str, params: dict[str, Any] | None = None, *, write: bool = False) -> Records:
        """The rows of ``statement`` as the driver receives them (see :class:`Records`).

        A read streams from a read transaction that is rolled back when the rows end or
        the reader stops; a write runs in a managed write transaction (retried on
        transient errors) whose rows are collected before it commits."""
        params = dict(params or {})
        if write:
            keys, rows = self._call(lambda s: s.execute_write(lambda tx: _records(tx.run(statement, params))))
            return Records(keys, rows)
        if statement_writes(statement):
            raise ReadOnlyViolation(_READ_ONLY)
        stream = self._read_stream(statement, params)
        keys = next(stream)  # the statement runs here: its errors come before any row
        return Records.stream(stream, keys=keys, close=stream.close)

    def _read_stream(self, statement: str, params: dict[str, Any]) -> Iterator[Any]:
        """Yield the column names, then each row; refuse (after rolling back) a statement
        whose summary counts an update."""
        neo4j = self._neo4j
        try:
            with self._session(read=True) as session:
                tx = session.begin_transaction()
                try:
                    result = tx.run(statement, params)
                    yield list(result.keys())
                    for record in result:
                        yield {k: _plain(v) for k, v in record.items()}
                    counters = result.consume().counters
                    if counters.contains_updates or counters.contains_system_updates:
                        raise ReadOnlyViolation(_READ_ONLY)
                finally:
                    with contextlib.suppress(neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError):
                        tx.close()  # rolls back: a read has nothing to commit
        except (neo4j.exceptions.Neo4jError, neo4j.exceptions.DriverError) as err:
            raise _store_error(err, self.location) from err

    def query(self, statement: str, params: dict[str, Any] | None = None, *, write: bool = False) -> pl.DataFrame:
        """The rows of ``statement`` as a frame that loses nothing
        (:func:`~compgraph.store.rows.to_frame`)."""
        with self.records(statement, params, write=write) as rows:
            return rows.to_frame()

    def close(self) -> None:
        driver, self._driver = getattr(self, "_driver", None), None
        if driver is not None:
            driver.close()


def _records(result) -> tuple[list[str], list[dict[str, Any]]]:
    keys = list(result.keys())
    return keys, [{k: _plain(v) for k, v in record.items()} for record in result]


def refuse_credentials(uri: str) -> None:
    """Refuse a URI that carries a user or password, without repeating it."""
    if "@" in urlsplit(uri).netloc:
        raise ConfigError("the store URI must not carry a user or password: set NEO4J_USER and "
                          "NEO4J_PASSWORD in the environment instead")


def _plain(value: Any) -> Any:
    """The driver's values as plain Python: nodes, relationships and paths as
    :func:`~compgraph.store.rows.node_value` etc., temporal values as datetime objects."""
    from neo4j.graph import Node, Path, Relationship

    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, Node):
        return node_value(value.labels, {k: _plain(v) for k, v in value.items()})
    if isinstance(value, Relationship):
        return relationship_value(value.type, {k: _plain(v) for k, v in value.items()})
    if isinstance(value, Path):
        return path_value([_plain(n) for n in value.nodes], [_plain(r) for r in value.relationships])
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    to_native = getattr(value, "to_native", None)  # neo4j.time values
    if to_native is not None:
        try:
            return to_native()
        except (ValueError, OverflowError):  # beyond datetime's range or precision
            return value.iso_format() if hasattr(value, "iso_format") else str(value)
    return value
