"""Per-shard profiles: the peak-memory reading follows an allocation and resets; the
runner stores one record per computed shard, kept across a resume."""

from __future__ import annotations

import json

import pytest

from compgraph import schema
from compgraph.engine import profile
from compgraph.engine.profile import ShardClock
from compgraph.ingest import IngestConfig, ingest
from compgraph.models import loading
from compgraph.store.memory import MemoryStore
from tests.helpers.jobs import kill_at

MB = 2**20


def _touch(size: int):
    """Fresh anonymous memory made resident (every page written): never memory the
    allocator already holds, so the process's RSS grows by ``size``."""
    import mmap

    block = mmap.mmap(-1, size)
    for i in range(0, size, mmap.PAGESIZE):
        block[i] = 1
    return block


def test_peak_follows_an_allocation_and_resets():
    if not profile.reset_peak():
        pytest.skip("this kernel refuses to reset the peak RSS (/proc/self/clear_refs)")
    before = profile.peak_mb()
    block = _touch(256 * MB)
    grown = profile.peak_mb()
    assert grown - before >= 250
    block.close()
    assert profile.reset_peak()
    assert profile.peak_mb() < grown - 200  # the 256 MB are gone and the peak forgot them


def test_a_shard_clock_times_its_phases():
    clock = ShardClock("L0")
    with clock.phase("compute"):
        _touch(8 * MB)
    for _ in range(2):  # a phase entered twice adds up
        with clock.phase("write"):
            _touch(MB).close()
    record = clock.record()
    assert clock.seconds["compute"] > 0 and clock.seconds["write"] > 0
    assert record["shard"] == "L0" and record["compute_s"] == round(clock.seconds["compute"], 3)
    assert record["peak_mb"] > 0 and record["peak_reset"] in (True, False)


def test_the_runner_stores_each_shards_profile_and_keeps_them_on_resume(tiny_dir):
    loaded = loading.load(str(tiny_dir), device="cpu")
    config = IngestConfig.of(str(tiny_dir), name="tiny", device="cpu", top_k=3, extract=("neurons",))

    store = MemoryStore()
    with pytest.raises(KeyboardInterrupt):
        ingest(store, config, loaded=loaded, progress=kill_at("neurons: activations"))
    report = ingest(store, config, loaded=loaded)
    assert [p["shard"] for p in report.stage("neurons").profile] == ["stats/L0-L1"]  # this job's shards
    run = store.nodes(schema.RUN, where={"stage": "neurons"}).row(0, named=True)
    stored = json.loads(run["profile"])
    assert [p["shard"] for p in stored] == ["decode/L0", "decode/L1", "stats/L0-L1"]
    assert run["peak_mb"] == max(p["peak_mb"] for p in stored)
    assert run["compute_seconds"] == pytest.approx(sum(p["compute_s"] for p in stored), abs=0.01)
