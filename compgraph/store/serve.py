"""An embedded store served over Bolt, so that a job and any number of readers share it.

The embedded store is one directory that one process holds at a time. :func:`serving`
runs the same engine as a local server with its Bolt plugin over that directory
(``<store>/db``, the database every connection gets unless it names another), so that
``compgraph ingest --store bolt://127.0.0.1:PORT`` writes while ``compgraph query``,
``report``, ``analyse`` and Python sessions read through the same URI. A reader sees
what has been committed: the runner commits shard by shard, so a query during a job
shows the shards written so far.

Clients authenticate as ``root`` with the password the server was started with
(``NEO4J_USER=root``, ``NEO4J_PASSWORD``; the engine wants at least 8 characters).
The server listens on 127.0.0.1 only. While it runs it leaves ``serving.json`` (its pid
and URI) in the store, so that a command that tries to open the directory itself is
told where to connect instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from compgraph.errors import ConfigError, StoreUnavailable
from compgraph.store import files
from compgraph.store.embedded import DATABASE_DIR, EmbeddedStore, open_error, start_engine

DEFAULT_PORT = 7687
USER = "root"
MIN_PASSWORD = 8


def _check_port(host: str, port: int) -> None:
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, not {port}")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds it
        try:
            sock.bind((host, port))
        except OSError as err:
            raise StoreUnavailable(f"cannot listen on {host}:{port}: {err.strerror}") from err


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serving(path: str | os.PathLike, *, port: int = DEFAULT_PORT, password: str,
            host: str = "127.0.0.1") -> Iterator[str]:
    """Serve the embedded store at ``path`` (created if missing) on ``bolt://host:port``
    until the block ends; yields the URI."""
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"the server's password (NEO4J_PASSWORD) needs at least {MIN_PASSWORD} characters")
    root = Path(path).expanduser().resolve()
    _check_port(host, port)
    EmbeddedStore(root).close()  # creates it, checks its schema version, makes the schema
    start_engine(root / "log")
    from arcadedb_embedded.server import ArcadeDBServer

    # The server's own files (users, settings) in a fresh folder each time: the engine takes
    # the root password only when it has no users file yet, so a kept one would pin the first.
    server_dir = tempfile.TemporaryDirectory(prefix="compgraph-serve-")
    server = ArcadeDBServer(
        root_path=server_dir.name, root_password=password,
        config={"host": host, "http_port": _free_port(host),
                "server_plugins": "Bolt:com.arcadedb.bolt.BoltProtocolPlugin", "bolt_port": port,
                "server_databaseDirectory": str(root), "server_databaseLoadAtStartup": False,
                "bolt_defaultDatabase": DATABASE_DIR},
    )
    try:
        server.start()
        server.get_database(DATABASE_DIR)  # open it now: a lock held elsewhere shows here
    except Exception as err:
        server.stop()
        server_dir.cleanup()
        raise open_error(err, root) from err
    uri = f"bolt://{host}:{port}"
    marker = root / files.SERVED
    try:
        marker.write_text(json.dumps({"pid": os.getpid(), "uri": uri}))
        yield uri
    finally:
        with contextlib.suppress(OSError):
            marker.unlink()
        server.stop()
        server_dir.cleanup()
