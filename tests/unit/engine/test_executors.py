"""Executors: frames across the process boundary exactly, a missing Ray refused at planning,
and a tiny-model job through Ray on a local cluster started here (2 CPUs, no GPU) equal to
the local executor's, also when a worker process is killed mid-job."""

from __future__ import annotations

import os
import signal

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from compgraph import schema
from compgraph.engine import executors
from compgraph.engine.context import Execution
from compgraph.engine.stage import Frames
from compgraph.errors import ConfigError
from compgraph.ingest import IngestConfig, ingest, plan
from compgraph.store.factory import open_store
from tests.helpers.stores import digest
from tests.unit.stages.test_effects import EXAMPLES, write_task

STAGES = ("tokens", "neurons", "heads", "connections", "effects")


def test_frames_cross_as_arrow_and_come_back_equal():
    nodes = pl.DataFrame({"uid": ["a", "b"], "layer": [0, 1], "act_mean": [0.5, None], "tags": [["x"], []]})
    edges = pl.DataFrame({"src": ["a"], "dst": ["t"], "weight": [1.25], "via": ["out"]})
    frames = Frames.of(nodes=[(schema.NEURON, nodes)], edges=[(schema.DECODES_TO, edges)])
    back = executors.decode_frames(executors.encode_frames(frames))
    assert [k for k, _ in back.nodes] == [schema.NEURON] and [r for r, _ in back.edges] == [schema.DECODES_TO]
    assert_frame_equal(back.nodes[0][1], nodes)
    assert_frame_equal(back.edges[0][1], edges)
    assert isinstance(executors.encode_frames(frames)["nodes"][0][1], bytes)


def test_ray_missing_is_one_line_before_anything_runs(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^--executor ray needs Ray: pip install 'compgraph\[ray\]'$"):
        Execution(executor="ray")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return write_task(tmp_path_factory.mktemp("task") / "capitals.jsonl", EXAMPLES)


def _job(tiny_dir, task, **execution):
    return plan(IngestConfig.of(str(tiny_dir), name="tiny", extract=STAGES, tasks=(task,), device="cpu", top_k=4,
                                **execution))


def _ingest(path, job, executor=None):
    with open_store(path) as store:
        return ingest(store, job, executor=executor)


@pytest.fixture(scope="module")
def local_graph(tiny_dir, task, tmp_path_factory):
    path = tmp_path_factory.mktemp("local") / "kb"
    _ingest(path, _job(tiny_dir, task))
    return digest(path)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 2**20)
    yield ray
    ray.shutdown()
    assert not ray.is_initialized()


def test_a_job_through_ray_equals_the_local_one(ray_cluster, tiny_dir, task, tmp_path, local_graph):
    path = tmp_path / "kb"
    report = _ingest(path, _job(tiny_dir, task, executor="ray", workers=2))
    assert all(s.status == "complete" for s in report.stages)
    assert sum(len(s.shards_written) for s in report.stages) > 4
    assert digest(path) == local_graph


class _KillOne(executors.RayExecutor):
    """SIGKILLs the process of the worker the third shard of the job was just handed to: that
    shard is in flight (or queued on the worker) when its process dies."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.pid_of = dict(zip(map(id, self.actors), self.pids()))
        self.handed, self.killed = 0, None

    def submitted(self, actor, shard):
        self.handed += 1
        if self.handed == 3:
            self.killed = (self.pid_of[id(actor)], shard)
            os.kill(self.killed[0], signal.SIGKILL)


def test_a_worker_killed_mid_shard_still_ends_in_the_local_graph(ray_cluster, tiny_dir, task, tmp_path,
                                                                   local_graph):
    from compgraph.engine.context import StageContext

    job = _job(tiny_dir, task, executor="ray", workers=2)
    killer = _KillOne(StageContext(job.info, job.execution))
    try:
        report = _ingest(tmp_path / "kb", job, executor=killer)
        pid, shard = killer.killed
        assert pid not in killer.pids()  # Ray restarted that worker, and its shard ran again
    finally:
        killer.close()
    assert any(shard in s.shards_written for s in report.stages)
    assert digest(tmp_path / "kb") == local_graph
