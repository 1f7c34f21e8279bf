"""`compgraph ingest` end to end on the embedded store: a tiny Llama with SmolLM2's real
tokenizer (and a padded embedding), a stage module written here, `kill -9` and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from compgraph.cli.main import main
from compgraph.models import loading

from tests.helpers.models import TINY

N_NEURONS = TINY["layers"] * TINY["d_mlp"]


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPGRAPH_STORE", str(tmp_path / "kb"))
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args), catch_exceptions=False)


def counts(cli) -> dict:
    return json.loads(cli("info", "--format", "json").stdout)


def rows(cli, cypher: str) -> list[dict]:
    result = cli("query", cypher, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_ingest_counts_runs_and_rerun_changes_nothing(cli, tiny_dir):
    result = cli("ingest", str(tiny_dir), "--name", "tiny", "--top-k", "4", "--device", "cpu", "--profile")
    assert result.exit_code == 0, result.output
    # --profile: a table by stage, then one row per shard computed (neurons: 2 decode + 1 stats)
    by_stage, by_shard = result.stdout.split("profile by shard")
    assert "profile by stage" in by_stage and all(s in by_stage for s in ("tokens", "neurons", "heads"))
    assert by_shard.count("decode/L") == 2 and by_shard.count("stats/L0-L1") == 1
    first = counts(cli)
    assert first["labels"]["Neuron"] == N_NEURONS and first["labels"]["Head"] == TINY["layers"] * TINY["heads"]
    assert first["labels"]["Token"] == 49152 and first["labels"]["Model"] == 1 and first["labels"]["Run"] == 3
    per_via = rows(cli, "MATCH (n:Neuron {model: 'tiny'})-[d:DECODES_TO]->(:Token) "
                        "RETURN d.via AS via, count(*) AS c ORDER BY via")
    assert per_via == [{"via": v, "c": N_NEURONS * 8} for v in ("gate", "in", "out")]
    assert rows(cli, "MATCH ()-[d:DECODES_TO]->(t:Token) WHERE t.id >= 49152 RETURN count(*) AS c") == [{"c": 0}]
    unmarked = rows(cli, "MATCH (n:Neuron) WHERE n.run_neurons IS NULL OR n.act_mean IS NULL RETURN count(n) AS c")
    assert unmarked == [{"c": 0}]
    runs = json.loads(cli("runs", "--model", "tiny", "--format", "json").stdout)
    assert sorted((r["stage"], r["status"]) for r in runs) == [
        ("heads", "complete"), ("neurons", "complete"), ("tokens", "complete")]
    assert all(r["rows_written"] > 0 and r["seconds"] >= 0 and json.loads(r["config"]) is not None for r in runs)
    assert all(r["peak_mb"] > 0 and r["scope"] == "" for r in runs)
    again = cli("ingest", str(tiny_dir), "--name", "tiny", "--top-k", "4", "--device", "cpu")
    assert again.exit_code == 0 and again.output.count("already complete") == 3
    assert counts(cli) == first


def test_smaller_top_k_replaces_ranks_on_the_embedded_store(cli, tiny_dir):
    assert cli("ingest", str(tiny_dir), "--name", "tiny", "--top-k", "4", "--extract", "neurons").exit_code == 0
    assert cli("ingest", str(tiny_dir), "--name", "tiny", "--top-k", "2", "--extract", "neurons").exit_code == 0
    ranks = rows(cli, "MATCH (n:Neuron)-[d:DECODES_TO]->() WITH n, d.via AS via, collect(d.rank) AS r "
                      "RETURN count(*) AS pairs, min(size(r)) AS lo, max(size(r)) AS hi")
    assert ranks == [{"pairs": N_NEURONS * 3, "lo": 4, "hi": 4}]
    assert rows(cli, "MATCH ()-[d:DECODES_TO]->() WHERE d.rank >= 2 OR d.rank < -2 RETURN count(*) AS c") == [{"c": 0}]
    statuses = sorted(r["status"] for r in json.loads(cli("runs", "--format", "json").stdout) if r["stage"] == "neurons")
    assert statuses == ["complete", "superseded"]


def one_line_error(result):
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


def test_bad_input_fails_before_the_store_is_created(cli, tmp_path, tiny_dir):
    assert "hub" in one_line_error(cli("ingest", "not/a-model"))
    source = loading.resolve("packaged:smollm2")
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes((Path(source.location) / source.gguf_file).read_bytes()[:5_000_000])
    assert "truncated" in one_line_error(cli("ingest", str(truncated)))
    t5 = tmp_path / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 8}))
    assert "supported: " in one_line_error(cli("ingest", str(t5)))
    assert "no stage 'bogus'" in one_line_error(cli("ingest", str(tiny_dir), "--extract", "neurons,bogus"))
    assert "--dtype" in one_line_error(cli("ingest", str(tiny_dir), "--dtype", "foo"))
    assert "--device" in one_line_error(cli("ingest", str(tiny_dir), "--device", "tpu"))
    assert "--top-k" in one_line_error(cli("ingest", str(tiny_dir), "--top-k", "100000"))
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": ""}\n')
    assert "no text" in one_line_error(cli("ingest", str(tiny_dir), "--corpus", str(empty)))
    assert not (tmp_path / "kb").exists()  # the store was never opened


STAGE_MODULE = '''
"""A stage written outside compgraph: one module, one registration."""
import os, time
import polars as pl
from compgraph import schema
from compgraph.engine.registry import register
from compgraph.engine.stage import Frames, Stage

LOG = os.environ["PROBE_LOG"]


class SlowProbe(Stage):
    name, version = "slowprobe", 1

    def shards(self, info, config, execution):
        return [f"S{i}" for i in range(6)]

    def run(self, ctx, config, shard):
        time.sleep(0.6)
        with open(LOG, "a") as log:
            log.write(shard + "\\n")
        frame = pl.DataFrame({"uid": [schema.head_uid(ctx.info.name, 0, int(shard[1:]))], "model": ctx.info.name,
                              "layer": 0, "probe": int(shard[1:])})
        return Frames.of(nodes=[(schema.HEAD, frame)])


register(SlowProbe())
'''


def test_a_stage_module_runs_resumes_after_kill_9_and_is_skipped_when_complete(tmp_path, tiny_dir):
    (tmp_path / "mystage.py").write_text(textwrap.dedent(STAGE_MODULE))
    log = tmp_path / "shards.log"
    env = dict(os.environ, COMPGRAPH_STAGES="mystage", PROBE_LOG=str(log), COMPGRAPH_STORE=str(tmp_path / "kb"),
               PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "compgraph.cli", "ingest", str(tiny_dir), "--name", "tiny",
               "--extract", "slowprobe", "--device", "cpu"]
    job = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while (not log.exists() or len(log.read_text().split()) < 3) and time.monotonic() < deadline:
        assert job.poll() is None, job.stdout.read().decode()
        time.sleep(0.05)
    job.send_signal(signal.SIGKILL)
    job.wait()
    before = log.read_text().split()
    assert 3 <= len(before) < 6
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    after = log.read_text().split()[len(before):]
    # the shards recorded before the kill are not recomputed; at most the one in flight is
    assert sorted(set(before) | set(after)) == [f"S{i}" for i in range(6)]
    assert len(after) <= 6 - len(before) + 1 and before[0] not in after
    third = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert third.returncode == 0 and "already complete" in third.stdout
    assert len(log.read_text().split()) == len(before) + len(after)
    listing = subprocess.run([sys.executable, "-m", "compgraph.cli", "query", "MATCH (h:Head) RETURN h.probe AS p "
                              "ORDER BY p", "--format", "json"], env=env, capture_output=True, text=True)
    assert json.loads(listing.stdout) == [{"p": i} for i in range(6)]
