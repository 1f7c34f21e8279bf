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


def wipe(uri: str, database: str | None) -> None:
    """Empty the server's database with the bare driver (a store would check the schema)."""
    import neo4j

    auth = (os.environ.get("NEO4J_USER", "neo4j"), os.environ.get("NEO4J_PASSWORD", ""))
    with neo4j.GraphDatabase.driver(uri, auth=auth) as driver:
        driver.execute_query("MATCH (n) DETACH DELETE n", database_=database)


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
