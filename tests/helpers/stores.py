"""Stores for the tests: the backends that answer Cypher, emptying a Bolt server, and a dump
of a store's graph to compare runs."""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import pytest

from compgraph import schema
from compgraph.store.factory import open_store

NEO4J = pytest.param("neo4j", marks=pytest.mark.neo4j)
CYPHER_BACKENDS = ["embedded", "bolt", NEO4J]
SERVERS = ["bolt", NEO4J]
"""The Bolt servers: ArcadeDB's (started by a session fixture) and a real Neo4j at
``NEO4J_URI`` (``.ci/run`` starts one: ``tests/helpers/neo4j_server.py``)."""


def server(request, backend: str) -> tuple[str, str | None]:
    """(uri, database) of an emptied server database of ``backend`` (``bolt``: ArcadeDB's,
    with its credentials set in the environment; ``neo4j``: the one at ``NEO4J_URI``)."""
    if backend == "bolt":
        uri, database = request.getfixturevalue("bolt_env")
    else:
        uri, database = os.environ["NEO4J_URI"], os.environ.get("NEO4J_DATABASE")
    wipe(uri, database)
    return uri, database


WIPE_BATCH = 10_000
"""Nodes deleted per transaction by :func:`wipe`: one transaction for a whole large graph
exceeds Neo4j's transaction memory (``dbms.memory.transaction.total.max``)."""


def wipe(uri: str, database: str | None, auth: tuple[str, str] | None = None) -> None:
    """Empty the server's database with the bare driver (a store would check the schema),
    ``WIPE_BATCH`` nodes (and their edges) a transaction."""
    import neo4j

    auth = auth or (os.environ.get("NEO4J_USER", "neo4j"), os.environ.get("NEO4J_PASSWORD", ""))
    statement = "MATCH (n) WITH n LIMIT $batch DETACH DELETE n RETURN count(*) AS deleted"
    with neo4j.GraphDatabase.driver(uri, auth=auth) as driver:
        deleted = None
        while deleted != 0:
            deleted = driver.execute_query(statement, batch=WIPE_BATCH, database_=database).records[0]["deleted"]


def dump(store: Path | str, database: str | None = None) -> tuple[list[str], list[str]]:
    """Every node but the :Run nodes (their timing is the run's own) and every edge, as
    sorted canonical JSON; asserts that no node uid and no edge identity occurs twice."""
    keys = {rel.type: tuple(rel.key) for rel in schema.REL_KINDS}
    with open_store(store, create=False, database=database) as graph:
        with graph.records(f"MATCH (n) WHERE NOT n:{schema.Label.RUN} "
                           "RETURN labels(n) AS labels, properties(n) AS props") as rows:
            nodes = [(sorted(r["labels"]), r["props"]) for r in rows]
        with graph.records("MATCH (a)-[e]->(b) RETURN a.uid AS src, type(e) AS type, b.uid AS dst, "
                           "properties(e) AS props") as rows:
            edges = list(rows)
    uids = collections.Counter(props["uid"] for _, props in nodes)
    assert not [u for u, n in uids.items() if n > 1], "a node uid occurs twice"
    identities = collections.Counter(
        (e["src"], e["type"], e["dst"], *(e["props"].get(k) for k in keys.get(e["type"], ()))) for e in edges)
    assert not [i for i, n in identities.items() if n > 1], "an edge identity occurs twice"
    canon = lambda value: json.dumps(value, sort_keys=True)  # noqa: E731
    return sorted(canon(n) for n in nodes), sorted(canon(e) for e in edges)


def digest(store: Path | str, *, database: str | None = None, runs: bool = True) -> dict[str, tuple[int, str]]:
    """(count, order-independent SHA-256 sum) of every node label set and every edge type,
    streamed (a store of millions of edges fits in little memory): two stores are equal
    when their digests are. :Run nodes are left out; with ``runs=False`` so are the run
    identities every node and edge carries (``run``, ``run_*``), to compare graphs written
    by two versions whose run identities differ."""
    import hashlib

    def canon(value: dict) -> dict:
        return value if runs else {k: v for k, v in value.items() if k != "run" and not k.startswith("run_")}

    sums: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])

    def add(key: str, value) -> None:
        text = json.dumps(value, sort_keys=True).encode()
        entry = sums[key]
        entry[0] += 1
        entry[1] = (entry[1] + int.from_bytes(hashlib.sha256(text).digest(), "big")) % (1 << 256)

    with open_store(store, create=False, database=database) as graph:
        with graph.records(f"MATCH (n) WHERE NOT n:{schema.Label.RUN} "
                           "RETURN labels(n) AS labels, properties(n) AS props") as rows:
            for r in rows:
                labels = ":".join(sorted(r["labels"]))
                add(labels, [labels, canon(r["props"])])
        with graph.records("MATCH (a)-[e]->(b) RETURN a.uid AS src, type(e) AS type, b.uid AS dst, "
                           "properties(e) AS props") as rows:
            for r in rows:
                add(r["type"], [r["src"], r["dst"], canon(r["props"])])
    return {key: (n, f"{total:064x}") for key, (n, total) in sorted(sums.items())}


if __name__ == "__main__":  # python -m tests.helpers.stores STORE_A STORE_B
    import sys

    a, b = (digest(path, runs=False) for path in sys.argv[1:3])
    for key in sorted(set(a) | set(b)):
        same = "equal" if a.get(key) == b.get(key) else "DIFFERENT"
        print(f"{key:28s} {a.get(key, (0, ''))[0]:>10,d} {b.get(key, (0, ''))[0]:>10,d}  "
              f"{a.get(key, (0, '-'))[1][:16]}  {b.get(key, (0, '-'))[1][:16]}  {same}")
    sys.exit(0 if a == b else 1)
