"""Executors: frames across the process boundary exactly, a missing Ray refused at planning,
and a tiny-model job through Ray on a local cluster started here (2 CPUs, no GPU) equal to
the local executor's, also when a worker process is killed mid-job."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from compgraph import schema
from compgraph.engine import executors
from compgraph.engine.context import Execution
from compgraph.engine.stage import Frames
from compgraph.errors import ConfigError
from tests.helpers.ray_jobs import STAGES
from tests.helpers.stores import digest
from tests.unit.stages.test_effects import EXAMPLES, write_task


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


def _ray_processes() -> list[str]:
    import psutil

    names = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in ("raylet", "gcs_server"):
            names.append(proc.info["name"])
    return names


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    return write_task(tmp_path_factory.mktemp("task") / "capitals.jsonl", EXAMPLES)


@pytest.fixture(scope="module")
def three_ways(tiny_dir, task, tmp_path_factory):
    pytest.importorskip("ray", reason="the [ray] extra is not installed")
    out = tmp_path_factory.mktemp("ray-jobs")
    done = subprocess.run([sys.executable, "-m", "tests.helpers.ray_jobs", str(tiny_dir), task, str(out)],
                          capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_job_through_ray_equals_the_local_one(three_ways):
    assert three_ways["ray_shards"] == three_ways["local_shards"] > 4
    assert three_ways["ray"] == three_ways["local"]
    assert three_ways["ray_stopped"] and not _ray_processes()  # the cluster is gone with its job


def test_a_worker_killed_mid_shard_still_ends_in_the_local_graph(three_ways):
    assert three_ways["kill"]["restarted"] and three_ways["kill"]["written"], three_ways["kill"]
    assert three_ways["killed"] == three_ways["local"]


def test_a_worker_ray_gives_up_is_replaced_and_its_shard_requeued(three_ways):
    assert three_ways["requeue"]["shard"] and three_ways["requeue"]["written"], three_ways["requeue"]
    assert three_ways["requeued"] == three_ways["local"]


def test_cuda_without_gpus_per_worker_is_refused_at_planning():
    with pytest.raises(ConfigError, match="^--device cuda with --executor ray needs --gpus-per-worker above 0$"):
        Execution(executor="ray", device="cuda")
    assert executors.worker_execution(Execution(executor="ray"), 0).device == "cpu"
    assert executors.worker_execution(Execution(executor="ray"), 1).device == "auto"


def test_the_cli_starts_ray_before_the_store_and_stops_it_after(tiny_dir, task, tmp_path, three_ways):
    pytest.importorskip("ray", reason="the [ray] extra is not installed")
    done = subprocess.run([sys.executable, "-c", "from compgraph.cli.main import main; main()", "ingest", str(tiny_dir), "--name", "tiny",
                           "--extract", ",".join(STAGES), "--tasks", task, "--device", "cpu", "--top-k", "4",
                           "--executor", "ray", "--workers", "2", "--store", str(tmp_path / "kb")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(json.dumps(digest(tmp_path / "kb"))) == three_ways["local"] and not _ray_processes()
