"""``python tests/neo4j_server.py DIR PORT``: assemble (once) and start the local Neo4j the
``neo4j`` tests run on — the command-line entry of :mod:`tests.helpers.neo4j_server`,
where the server, its pinned jars and the fixture's helpers live."""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.helpers.neo4j_server import main

    sys.exit(main(sys.argv[1:]))
