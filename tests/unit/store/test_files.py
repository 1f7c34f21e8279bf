"""File-system faults and store holders, answered by hand."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
import sys
import time

import pytest

from compgraph.errors import DiskWriteError
from compgraph.store import files


def test_each_refusal_has_one_line_naming_the_store_and_how_to_resume():
    assert files.disk_message(errno.ENOSPC, "/s") == (
        "no space left on device writing /s; free space and run the same command again to resume")
    assert files.disk_message(errno.EROFS, "/s") == (
        "the file system of /s is read-only; remount it read-write and run the same command again to resume")
    assert files.disk_message(errno.EDQUOT, "/s").startswith("disk quota exceeded writing /s;")
    assert files.disk_message(errno.ENOENT, "/s") is None


def test_disk_error_reads_the_engine_chain_or_the_free_space(tmp_path, monkeypatch):
    chain = ["Error on commit", "java.io.IOException: No space left on device"]
    err = files.disk_error(chain, tmp_path)
    assert isinstance(err, DiskWriteError) and str(err).startswith(f"no space left on device writing {tmp_path};")
    assert "read-only" in str(files.disk_error(["Read-only file system"], tmp_path))
    assert files.disk_error(["syntax error"], tmp_path) is None  # plenty of room here
    monkeypatch.setattr(files, "free_bytes", lambda path: files.LOW_SPACE - 1)
    assert str(files.disk_error(["CREATE CONSTRAINT failed"], tmp_path)).startswith("no space left")
    # an error the engine explains (a syntax error, a duplicate key) stays itself on a full disk
    assert files.disk_error(["Cypher syntax error"], tmp_path, unexplained=False) is None


def test_free_bytes_asks_the_nearest_existing_folder(tmp_path):
    st = os.statvfs(tmp_path)
    assert files.free_bytes(tmp_path / "not" / "yet") == pytest.approx(st.f_bavail * st.f_frsize, rel=0.01)


def test_holder_names_the_process_holding_the_lock(tmp_path):
    lock = tmp_path / "database.lck"
    lock.touch()
    code = ("import fcntl, sys, time; f = open(sys.argv[1], 'r+'); fcntl.lockf(f, fcntl.LOCK_EX); "
            "print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        who = files.holder(lock)
        assert who is not None and who.pid == proc.pid
        assert who.command.startswith(f"{os.path.basename(sys.executable)} -c import fcntl") or \
            who.command.startswith(f"{sys.executable} -c import fcntl")
        message = files.in_use(tmp_path, lock)
        assert message.startswith(f"store {tmp_path} is in use by another process (pid {proc.pid}: ")
        assert message.endswith(f"compgraph serve --store {tmp_path}")
        (tmp_path / files.SERVED).write_text(json.dumps({"pid": proc.pid, "uri": "bolt://127.0.0.1:7000"}))
        assert files.in_use(tmp_path, lock).endswith("; use --store bolt://127.0.0.1:7000")
    finally:
        proc.kill()
        proc.wait()
    time.sleep(0.05)
    assert files.holder(lock) is None
    assert files.in_use(tmp_path, lock).startswith(f"store {tmp_path} is in use by another process; ")


def test_own_locks_are_not_another_holder(tmp_path):
    lock = tmp_path / "database.lck"
    with open(lock, "w") as f:
        fcntl.lockf(f, fcntl.LOCK_EX)
        assert files.holder(lock) is None


def test_shown_command_names_compgraph_and_fits_one_line():
    args = ["/venv/bin/python", "-m", "compgraph.cli", "ingest", "packaged:smollm2", "--name\nx"]
    assert files.shown_command(args) == "compgraph ingest packaged:smollm2 --name x"
    assert files.shown_command(args, limit=20) == "compgraph ingest pa…"
    assert files.shown_command(["/venv/bin/compgraph", "serve"]) == "compgraph serve"
    assert files.shown_command(["java", "-jar", "x.jar"]) == "java -jar x.jar"
