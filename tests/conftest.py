"""Shared fixtures and the resource markers.

Markers skip themselves, with their reason, when the resource is absent:
``gpu`` (no CUDA device), ``neo4j`` (``NEO4J_URI`` unset). ``slow`` tests run by
default; ``-m "not slow"`` leaves them out.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from bolt_server import DATABASE, PASSWORD, arcade_bolt_server  # noqa: E402


def pytest_collection_modifyitems(config, items):
    has_neo4j = bool(os.environ.get("NEO4J_URI"))
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_gpu = False
    for item in items:
        if "neo4j" in item.keywords and not has_neo4j:
            item.add_marker(pytest.mark.skip(reason="NEO4J_URI is not set: no Neo4j server to test against"))
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="no CUDA device on this machine"))


@pytest.fixture(scope="session")
def bolt_uri(tmp_path_factory):
    """An ArcadeDB Bolt server for the whole session (the Neo4j stand-in here)."""
    with arcade_bolt_server(tmp_path_factory.mktemp("arcade-bolt")) as uri:
        yield uri


@pytest.fixture
def bolt_env(bolt_uri, monkeypatch):
    monkeypatch.setenv("NEO4J_USER", "root")
    monkeypatch.setenv("NEO4J_PASSWORD", PASSWORD)
    return bolt_uri, DATABASE


def _wipe(uri: str, database: str | None) -> None:
    """Empty the server's database with the bare driver (a store would check the schema)."""
    import neo4j

    auth = (os.environ.get("NEO4J_USER", "neo4j"), os.environ.get("NEO4J_PASSWORD", ""))
    with neo4j.GraphDatabase.driver(uri, auth=auth) as driver:
        driver.execute_query("MATCH (n) DETACH DELETE n", database_=database)


@pytest.fixture(params=["embedded", "bolt", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def store_factory(request, tmp_path, monkeypatch):
    """A callable opening a fresh, empty store of each backend (call it again to reopen)."""
    from compgraph.store.factory import open_store

    if request.param == "embedded":
        path = tmp_path / "kb"
        return lambda: open_store(path)
    if request.param == "bolt":
        uri, database = request.getfixturevalue("bolt_env")
    else:
        uri, database = os.environ["NEO4J_URI"], os.environ.get("NEO4J_DATABASE")
    _wipe(uri, database)
    return lambda: open_store(uri, database=database)


@pytest.fixture
def store(store_factory):
    with store_factory() as s:
        yield s
