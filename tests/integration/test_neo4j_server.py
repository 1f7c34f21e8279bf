"""The Maven-assembled Neo4j of :mod:`tests.helpers.neo4j_server`: its lock file and checksum
check (no network), and, against the server at ``NEO4J_URI``, that it is Neo4j 5 with GDS and
APOC loaded."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.helpers import neo4j_server
from tests.helpers.neo4j_server import AssemblyError, assemble, read_lock


@pytest.mark.neo4j
def test_server_is_neo4j_5_with_gds_and_apoc():
    import neo4j

    auth = (os.environ.get("NEO4J_USER", "neo4j"), os.environ.get("NEO4J_PASSWORD", ""))
    with neo4j.GraphDatabase.driver(os.environ["NEO4J_URI"], auth=auth) as driver:
        components = driver.execute_query("CALL dbms.components() YIELD name, versions "
                                          "RETURN name, versions").records
        kernel = [r["versions"] for r in components if r["name"] == "Neo4j Kernel"]
        assert kernel and kernel[0][0].startswith("5."), components
        versions = driver.execute_query("RETURN gds.version() AS gds, apoc.version() AS apoc").records[0]
        assert versions["gds"] and versions["apoc"], versions


def test_lock_file_lists_the_pinned_jars():
    lock = read_lock()
    assert all(name.startswith(("lib/", "plugins/")) for name in lock)
    for name in (f"lib/neo4j-kernel-{neo4j_server.NEO4J_VERSION}.jar",
                 f"lib/neo4j-bolt-{neo4j_server.NEO4J_VERSION}.jar",
                 f"plugins/proc-{neo4j_server.GDS_VERSION}.jar",
                 f"plugins/opengds-extension-{neo4j_server.GDS_VERSION}.jar",
                 f"plugins/apoc-core-{neo4j_server.APOC_VERSION}.jar"):
        assert name in lock, name
    assert neo4j_server.LAUNCHER_SOURCE.is_file()


def _fake_install(root: Path, jars: dict[str, bytes]) -> Path:
    """Jars under root and a lock that lists their true digests."""
    lines = []
    for name, content in jars.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
        lines.append(f"{hashlib.sha256(content).hexdigest()}  {name}")
    lock = root / "jars.sha256"
    lock.write_text("\n".join(lines) + "\n")
    return lock


def test_assemble_refuses_a_corrupted_jar(tmp_path, monkeypatch):
    def no_network(directory):
        raise AssertionError("the locked jars are all present: nothing to fetch")

    monkeypatch.setattr(neo4j_server, "_fetch", no_network)
    home = tmp_path / "home"
    lock = _fake_install(home, {"lib/a-1.0.jar": b"PK a", "plugins/b-2.0.jar": b"PK b"})
    (home / "plugins" / "b-2.0.jar").write_bytes(b"PK tampered")
    with pytest.raises(AssemblyError) as error:
        assemble(home, lock=lock)
    message = str(error.value)
    assert "\n" not in message
    assert "plugins/b-2.0.jar" in message and "sha256" in message
    assert "lib/a-1.0.jar" not in message


def test_assemble_refetches_when_the_jars_are_not_the_locked_set(tmp_path, monkeypatch):
    home = tmp_path / "home"
    lock = _fake_install(home, {"lib/a-1.0.jar": b"PK a"})
    (home / "lib" / "a-0.9.jar").write_bytes(b"PK stale")
    fetched = []
    monkeypatch.setattr(neo4j_server, "_fetch", fetched.append)
    with pytest.raises(AssemblyError, match="a-0.9.jar: jar not in the lock"):
        assemble(home, lock=lock)  # the fake fetch leaves the stale jar where it was
    assert fetched == [home.resolve()]


def test_a_malformed_lock_line_is_refused(tmp_path):
    lock = tmp_path / "jars.sha256"
    lock.write_text("abc  lib/x.jar\n")
    with pytest.raises(AssemblyError, match="jars.sha256:1"):
        read_lock(lock)
