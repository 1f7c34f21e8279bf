"""An ArcadeDB Bolt server in a child process: the Bolt stand-in for Neo4j here.

    with arcade_bolt_server(tmp_path) as uri: ...   # bolt://127.0.0.1:PORT, database "kb"

Ready means the database exists (waiting for the port alone gave DatabaseNotFound).
The child exits when its stdin closes, so it cannot outlive the parent.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

PASSWORD = "compgraph-test-pw"
READY = "COMPGRAPH-BOLT-READY"
DATABASE = "kb"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def arcade_bolt_server(root: Path, timeout: float = 120.0):
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    http_port, bolt_port = _free_port(), _free_port()
    env = dict(os.environ, ARCADEDB_JVM_ARGS="-Xmx1g")
    log_path = root / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, __file__, str(root), str(http_port), str(bolt_port)],
            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env,
        )
    try:
        deadline = time.monotonic() + timeout
        while READY not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"ArcadeDB Bolt server did not start:\n{tail}")
            time.sleep(0.2)
        yield f"bolt://127.0.0.1:{bolt_port}"
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _serve(root: str, http_port: int, bolt_port: int) -> None:
    from arcadedb_embedded.server import ArcadeDBServer

    server = ArcadeDBServer(
        root_path=root, root_password=PASSWORD,
        config={"host": "127.0.0.1", "http_port": http_port,
                "server_plugins": "Bolt:com.arcadedb.bolt.BoltProtocolPlugin",
                "bolt_port": bolt_port},
        jvm_kwargs={"heap_size": "1g"},
    )
    server.start()
    if not (Path(root) / "databases" / DATABASE).exists():
        server.create_database(DATABASE)
    print("\n" + READY, flush=True)
    sys.stdin.read()  # until the parent closes the pipe
    server.stop()


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
