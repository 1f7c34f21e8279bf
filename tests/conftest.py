"""Shared fixtures and the resource markers.

Markers skip themselves, with their reason, when the resource is absent:
``gpu`` (no CUDA device), ``neo4j`` (``NEO4J_URI`` unset). ``slow`` tests run by
default; ``-m "not slow"`` leaves them out. Where Neo4j was meant to run
(``COMPGRAPH_NEO4J_REQUIRED=1``, as ``.ci/run`` sets it), a missing ``NEO4J_URI`` fails
the ``neo4j`` tests instead of skipping them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.bolt_server import DATABASE, PASSWORD, arcade_bolt_server
from tests.helpers.models import build_small_llama, build_tiny_llama
from tests.helpers.stores import CYPHER_BACKENDS, server


def pytest_collection_modifyitems(config, items):
    has_neo4j = bool(os.environ.get("NEO4J_URI"))
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        has_gpu = False
    required = os.environ.get("COMPGRAPH_NEO4J_REQUIRED") == "1"
    for item in items:
        if "neo4j" in item.keywords and not has_neo4j and not required:
            item.add_marker(pytest.mark.skip(reason="NEO4J_URI is not set: no Neo4j server to test against"))
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="no CUDA device on this machine"))


def pytest_runtest_setup(item):
    required = os.environ.get("COMPGRAPH_NEO4J_REQUIRED") == "1"
    if required and "neo4j" in item.keywords and not os.environ.get("NEO4J_URI"):
        pytest.fail("Neo4j was meant to run (COMPGRAPH_NEO4J_REQUIRED=1) but NEO4J_URI is unset: "
                    "the server did not start (see neo4j.log)", pytrace=False)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """:func:`tests.helpers.models.build_tiny_llama`, saved once per session."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def small_model(tmp_path_factory) -> Path:
    """:func:`tests.helpers.models.build_small_llama` (a 320-token BPE vocabulary), once per session."""
    return build_small_llama(tmp_path_factory.mktemp("small-llama"))


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


def _factory(backend: str, request, tmp_path):
    from compgraph.store.factory import open_store

    if backend == "memory":
        from compgraph.store.memory import MemoryStore

        memory = MemoryStore()
        return lambda: memory
    if backend == "embedded":
        path = tmp_path / "kb"
        return lambda: open_store(path)
    uri, database = server(request, backend)
    return lambda: open_store(uri, database=database)


@pytest.fixture(params=["memory", *CYPHER_BACKENDS])
def store_factory(request, tmp_path):
    """A callable opening a fresh, empty store of each backend (call it again to reopen;
    the in-memory store hands back the same object)."""
    return _factory(request.param, request, tmp_path)


@pytest.fixture(params=CYPHER_BACKENDS)
def cypher_store_factory(request, tmp_path):
    """Like ``store_factory``, for the backends that run Cypher (not the in-memory store)."""
    return _factory(request.param, request, tmp_path)


@pytest.fixture
def store(store_factory):
    with store_factory() as s:
        yield s


@pytest.fixture
def cypher_store(cypher_store_factory):
    with cypher_store_factory() as s:
        yield s
