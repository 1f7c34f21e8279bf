"""A real `compgraph ingest` subprocess stopped at seeded moments, then resumed.

SIGTERM, SIGINT and SIGHUP must stop it cleanly (exit 128 + signal, one line saying how
to resume, the store closed, no JVM crash file); ``kill -9`` may stop it anywhere. Either
way, running the same command again must end in the graph an uninterrupted run writes:
every node's and edge's properties equal, no node or edge identity twice.

The model is a tiny Llama with a 320-token BPE vocabulary trained here, so a whole run
is mostly interpreter and JVM start-up.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compgraph.store.factory import open_store
from tests.helpers.stores import dump

SEED = 7

def ingest_command(model: Path, store: Path | str) -> list[str]:
    return [sys.executable, "-m", "compgraph.cli", "ingest", str(model), "--name", "small", "--top-k", "4",
            "--store", str(store)]


def start(model: Path, store: Path) -> subprocess.Popen:
    # SIGINT as the default disposition even if this test runs in a background job
    return subprocess.Popen(ingest_command(model, store), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, COMPGRAPH_JVM_HEAP="1g"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def lock(store: Path) -> Path:
    return store / "db" / "database.lck"  # ArcadeDB's: there while the store is open, gone when it closes


def wait_open(proc: subprocess.Popen, store: Path, timeout: float = 120) -> float:
    """Seconds until the subprocess has the store open (or has ended)."""
    t0 = time.monotonic()
    while not lock(store).exists() and proc.poll() is None:
        assert time.monotonic() - t0 < timeout, "the ingest never opened its store"
        time.sleep(0.02)
    return time.monotonic() - t0


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    out, err = proc.communicate(timeout=300)
    return out, err


@pytest.fixture(scope="module")
def clean_run(small_model, tmp_path_factory):
    """An uninterrupted run: its graph, when it opened its store and how long it took."""
    store = tmp_path_factory.mktemp("clean") / "kb"
    proc = start(small_model, store)
    t0 = time.monotonic()
    opened = wait_open(proc, store)
    out, err = finish(proc)
    assert proc.returncode == 0, err[-2000:]
    return dump(store), opened, time.monotonic() - t0


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:") or "Traceback" in line]


def no_crash_files(store: Path) -> None:
    assert not list((store / "log").glob("hs_err*")), "the JVM crashed"
    assert not list(Path.cwd().glob("hs_err*"))


def test_signals_stop_cleanly_and_resume_to_the_clean_graph(small_model, clean_run, tmp_path):
    """Each signal at a seeded moment after the store opened: clean exit, then a resume."""
    graph, _, took = clean_run
    store = tmp_path / "kb"
    rng = random.Random(SEED)
    stopped = 0
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        proc = start(small_model, store)
        wait_open(proc, store)
        time.sleep(rng.uniform(0.2, 3.0))
        if proc.poll() is None:
            proc.send_signal(sig)
        out, err = finish(proc)
        if proc.returncode == 0:  # it had finished before the signal came: nothing to check
            continue
        stopped += 1
        assert proc.returncode == 128 + sig, (sig, proc.returncode, err[-2000:])
        assert error_lines(err) == [f"error: stopped by {sig.name}; run the same command again to resume"]
        assert not lock(store).exists(), "the store was not closed"
        no_crash_files(store)
    assert stopped >= 2, f"the runs ended before the signals (a clean run takes {took:.0f} s)"
    proc = start(small_model, store)
    out, err = finish(proc)
    assert proc.returncode == 0, err[-2000:]
    no_crash_files(store)
    assert dump(store) == graph


def test_kill_9_at_random_moments_then_resume(small_model, clean_run, tmp_path):
    """SIGKILL at three seeded moments of the run (each after the store opened), then a resume."""
    graph, opened, took = clean_run
    store = tmp_path / "kb"
    rng = random.Random(SEED + 1)
    for _ in range(3):
        moment = opened + rng.uniform(0.05, 0.9) * (took - opened)
        proc = start(small_model, store)
        t0 = time.monotonic()
        while proc.poll() is None and time.monotonic() - t0 < moment:
            time.sleep(0.02)
        proc.kill()
        finish(proc)
    proc = start(small_model, store)
    out, err = finish(proc)
    assert proc.returncode == 0, err[-2000:]
    assert dump(store) == graph


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_sigterm_stops_a_long_query(tmp_path, fmt):
    """SIGTERM while a long result is read and printed: exit 143 at once, the store closed."""
    store = tmp_path / "kb"
    open_store(store).close()
    proc = subprocess.Popen([sys.executable, "-m", "compgraph.cli", "query", "UNWIND range(1, 5000000) AS x RETURN x",
                             "--format", fmt, "--store", str(store)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_open(proc, store)
    time.sleep(1.5)
    assert proc.poll() is None, "the query ended before the signal"
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    _, err = finish(proc)
    assert time.monotonic() - t0 < 15
    assert proc.returncode == 143, err[-2000:]
    assert error_lines(err) == ["error: stopped by SIGTERM; run the same command again to resume"]
    assert not lock(store).exists()
    no_crash_files(store)


def test_sigterm_during_one_long_write_statement_keeps_nothing(tmp_path):
    """A single statement runs inside the JVM, where no Python handler can run: the stop
    comes after the grace period, without cleanup, and the uncommitted write is gone."""
    from compgraph.cli.common import STOP_GRACE_S

    store = tmp_path / "kb"
    open_store(store).close()
    proc = subprocess.Popen([sys.executable, "-m", "compgraph.cli", "query", "--write", "--store", str(store),
                             "UNWIND range(1, 5000000) AS x CREATE (:X {v: x})"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_open(proc, store)
    time.sleep(2)
    assert proc.poll() is None, "the write ended before the signal"
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    _, err = finish(proc)
    assert time.monotonic() - t0 < STOP_GRACE_S + 10
    assert proc.returncode == 143, err[-2000:]
    [line] = error_lines(err)
    assert line.startswith("error: stopped by SIGTERM") and line.endswith("run the same command again to resume")
    no_crash_files(store)
    with open_store(store, create=False) as graph:
        assert graph.query("MATCH (n:X) RETURN count(n) AS c")["c"].to_list() == [0]


# ---- a full disk ------------------------------------------------------------------------------

def _can_mount() -> bool:
    """Whether this process may mount a tmpfs (root with CAP_SYS_ADMIN): tried once."""
    if os.geteuid() != 0:
        return False
    import tempfile

    with tempfile.TemporaryDirectory() as probe:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", probe],
                                 capture_output=True).returncode == 0
        if mounted:
            subprocess.run(["umount", probe], check=False)
    return mounted


@contextlib.contextmanager
def small_filesystem(path: Path, size: str):
    """A tmpfs of ``size`` mounted at ``path`` (unmounted at the end)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def grow(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def progress(store: Path) -> tuple[tuple[str, str], ...]:
    """(stage, status) of every run the store holds."""
    with open_store(store, create=False) as graph:
        rows = graph.query("MATCH (r:Run) RETURN r.stage AS stage, r.status AS status")
    return tuple(sorted(rows.rows())) if len(rows) else ()


@pytest.mark.skipif(not _can_mount(), reason="mounting a small file system needs root (CAP_SYS_ADMIN)")
def test_a_full_disk_is_one_line_and_the_run_resumes_to_the_clean_graph(small_model, clean_run, tmp_path):
    """The store on a file system too small for it, at sizes that run out at different
    moments (the schema, the first stages, the last ones): one line naming the cause and the
    store, exit 1, no stack trace; once there is room, the same command ends in the clean
    graph."""
    graph, _, _ = clean_run
    moments = set()
    for i, size in enumerate(["7m", "13m", "14200k", "14600k", "15m"]):  # the run peaks near 15 MB (its WAL)
        with small_filesystem(tmp_path / f"fs{i}", size) as fs:
            store = fs / "kb"
            proc = start(small_model, store)
            out, err = finish(proc)
            if proc.returncode == 0:
                continue  # the run fit: nothing to check at this size
            assert proc.returncode == 1, err[-2000:]
            assert err.strip().splitlines()[-1:] == [
                f"error: no space left on device writing {store}; free space and run the same command again to resume"]
            assert "Exception" not in err and "\tat " not in err and "Traceback" not in err, err[-2000:]
            grow(fs, "300m")
            moments.add(progress(store))
            proc = start(small_model, store)
            out, err = finish(proc)
            assert proc.returncode == 0, err[-2000:]
            no_crash_files(store)
            assert dump(store) == graph
    assert len(moments) >= 2, f"the disk ran out at one moment only: {moments}"


def test_a_store_in_use_names_its_holder(small_model, tmp_path):
    """A second command on a store another process has open: one line naming that process
    and what to do; the first run goes on undisturbed."""
    store = tmp_path / "kb"
    proc = start(small_model, store)
    wait_open(proc, store)
    second = subprocess.run([sys.executable, "-m", "compgraph.cli", "query", "MATCH (n) RETURN count(n)",
                             "--store", str(store)], capture_output=True, text=True, timeout=120)
    running = proc.poll() is None
    out, err = finish(proc)
    assert proc.returncode == 0, err[-2000:]
    if second.returncode == 0 and not running:
        pytest.fail("the ingest ended before the second command asked for the store")
    assert second.returncode == 1
    [line] = second.stderr.strip().splitlines()
    assert line.startswith(f"error: store {store} is in use by another process (pid {proc.pid}: compgraph ingest "), line
    assert "compgraph serve --store" in line


# ---- queries during a job ---------------------------------------------------------------------

SERVE_PASSWORD = "compgraph-serve-pw"


@contextlib.contextmanager
def served(store: Path):
    """``compgraph serve`` on a free port; yields (uri, process)."""
    from tests.helpers.bolt_server import _free_port

    port = _free_port()
    env = dict(os.environ, NEO4J_PASSWORD=SERVE_PASSWORD, COMPGRAPH_JVM_HEAP="1g")
    proc = subprocess.Popen([sys.executable, "-m", "compgraph.cli", "serve", "--store", str(store), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(timeout=300), "compgraph serve printed nothing in 300 s"
        line = proc.stdout.readline().strip()
        assert line == f"ready bolt://127.0.0.1:{port}", (line, proc.stderr.read() if proc.poll() is not None else "")
        yield f"bolt://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)


def test_serve_lets_queries_read_the_shards_a_job_has_committed(small_model, clean_run, tmp_path, monkeypatch):
    """An ingest through `compgraph serve` while another connection reads: the reads see the
    runs' shards as they commit (some done, not all), the job's graph equals an embedded
    run's, an embedded open of the served directory is told the URI, and SIGINT stops the
    server cleanly."""
    graph, _, _ = clean_run
    store = tmp_path / "kb"
    monkeypatch.setenv("NEO4J_USER", "root")
    monkeypatch.setenv("NEO4J_PASSWORD", SERVE_PASSWORD)
    with served(store) as (uri, server):
        job = subprocess.Popen(ingest_command(small_model, uri), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        seen = set()
        with open_store(uri) as reader:
            while job.poll() is None:
                rows = reader.query("MATCH (r:Run) RETURN r.stage AS stage, r.status AS status, "
                                    "size(r.done) AS done")
                seen.add(tuple(sorted(rows.rows())) if len(rows) else ())
                time.sleep(0.2)
        out, err = job.communicate()
        assert job.returncode == 0, err[-2000:]
        partial = [s for s in seen if s and any(status != "complete" for _, status, _ in s)]
        assert partial, f"no read saw a job in progress: {sorted(seen)}"
        assert dump(uri) == graph
        refused = subprocess.run([sys.executable, "-m", "compgraph.cli", "query", "MATCH (n) RETURN count(n)",
                                  "--store", str(store)], capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines()[-1].endswith(f"; use --store {uri}")
    assert server.returncode == 0
    assert not (store / "serving.json").exists()
