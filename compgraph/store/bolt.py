"""BoltStore: a graph server over Bolt through the official ``neo4j`` driver.

Production target: Neo4j 5 (``docker/``). Tested here against ArcadeDB's Bolt server.
Credentials come from ``NEO4J_USER`` (default ``neo4j``) and ``NEO4J_PASSWORD``;
they are never printed or logged.

Reads run in read-access sessions (Neo4j refuses any write there). ArcadeDB's
Bolt server, unlike Neo4j, runs a write inside a read transaction and answers
``EXPLAIN`` with query type "w" for every statement, so neither is a guard alone:
a statement given to :meth:`query` without ``write=True`` runs in an explicit
transaction that is rolled back, and refused, if the result summary counts any
update; schema and admin commands (no data counters) are refused up front.
Writes run in managed write transactions, which the driver retries on transient
errors.
"""

from __future__ import annotations

import os
import re
from typing import Any

import polars as pl

from compgraph.errors import (
    QueryError,
    ReadOnlyViolation,
    StoreAuthError,
    StoreError,
    StoreUnavailable,
)
from compgraph.store.base import BaseStore
from compgraph.store.rows import to_frame

BOLT_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")
_ADMIN = re.compile(
    r"^\s*(CREATE|DROP|ALTER|GRANT|DENY|REVOKE|START|STOP|RENAME)\s+"
    r"(OR\s+REPLACE\s+)?(\w+\s+)?(INDEX|CONSTRAINT|DATABASE|ALIAS|USER|ROLE|PRIVILEGE|SERVER)",
    re.IGNORECASE,
)
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
    if isinstance(err, nx.CypherSyntaxError):
        return QueryError(f"Cypher syntax error: {message}")
    if code.endswith("Statement.ParameterMissing"):
        return QueryError(f"missing parameter: {message}")
    if "database" in message.lower() and "not" in message.lower() and "exist" in message.lower():
        return StoreUnavailable(f"{location}: {message}")
    return QueryError(message or type(err).__name__)


class BoltStore(BaseStore):
    """A Bolt server; one driver per store, sessions per call."""

    def __init__(self, uri: str, *, database: str | None = None,
                 user: str | None = None, password: str | None = None):
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
    def query(self, statement: str, params: dict[str, Any] | None = None, *, write: bool = False) -> pl.DataFrame:
        params = params or {}

        def read(session):
            if _ADMIN.match(statement):
                raise ReadOnlyViolation(_READ_ONLY)
            with session.begin_transaction() as tx:
                result = tx.run(statement, params)
                keys, records = _records(result)
                counters = result.consume().counters
                if counters.contains_updates or counters.contains_system_updates:
                    tx.rollback()
                    raise ReadOnlyViolation(_READ_ONLY)
                tx.rollback()  # a read has nothing to commit
            return keys, records

        def write_(session):
            return session.execute_write(lambda tx: _records(tx.run(statement, params)))

        keys, records = self._call(write_ if write else read, read=not write)
        return to_frame(records, keys)

    def close(self) -> None:
        driver, self._driver = getattr(self, "_driver", None), None
        if driver is not None:
            driver.close()


def _records(result) -> tuple[list[str], list[dict[str, Any]]]:
    keys = list(result.keys())
    return keys, [{k: _plain(v) for k, v in record.items()} for record in result]


def _plain(value: Any) -> Any:
    """Nodes and relationships as their property dicts, like the embedded store returns."""
    from neo4j.graph import Node, Path, Relationship

    if isinstance(value, (Node, Relationship)):
        return dict(value.items())
    if isinstance(value, Path):
        return [dict(n.items()) for n in value.nodes]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
