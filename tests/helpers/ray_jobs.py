"""A tiny-model job four ways in a fresh process: the local executor, Ray, Ray with a worker's
process killed mid-shard (Ray restarts it), and Ray with a worker killed for good (its shard
re-queued); their graphs' digests as JSON.

    python -m tests.helpers.ray_jobs TINY_DIR TASK_FILE OUT_DIR

A process of its own because Ray must start before the JVM of an embedded store
(:func:`compgraph.engine.executors.start_ray`), and the test process has one running.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

STAGES = ("tokens", "neurons", "heads", "connections", "effects")


def job(tiny_dir: str, task: str, **execution):
    from compgraph.ingest import IngestConfig, plan

    return plan(IngestConfig.of(tiny_dir, name="tiny", extract=STAGES, tasks=(task,), device="cpu", top_k=4,
                                **execution))


def main(tiny_dir: str, task: str, out: Path) -> dict:
    import ray

    from compgraph.engine import executors
    from compgraph.engine.context import StageContext
    from compgraph.ingest import ingest
    from compgraph.store.factory import open_store
    from tests.helpers.stores import digest

    class KillOne(executors.RayExecutor):
        """SIGKILLs the worker the third shard was just handed to: it dies with that shard in flight."""

        def __init__(self, ctx):
            super().__init__(ctx)
            self.pid_of = dict(zip(map(id, self.actors), self.pids()))
            self.handed, self.killed = 0, None

        def submitted(self, actor, shard):
            self.handed += 1
            if self.handed == 3:
                self.killed = (self.pid_of[id(actor)], shard)
                os.kill(self.killed[0], signal.SIGKILL)

    class GiveUpOne(executors.RayExecutor):
        """Kills the worker the third shard was handed to so that Ray does not restart it: the
        shard goes back on the queue for a fresh worker."""

        def __init__(self, ctx):
            super().__init__(ctx)
            self.handed, self.lost = 0, None

        def submitted(self, actor, shard):
            self.handed += 1
            if self.handed == 3:
                self.lost = shard
                ray.kill(actor, no_restart=True)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 2**20)
    result = {}
    for name, execution in (("local", {}), ("ray", {"executor": "ray", "workers": 2})):
        with open_store(out / name) as store:
            report = ingest(store, job(tiny_dir, task, **execution))
        result[name] = digest(out / name)
        result[f"{name}_shards"] = sum(len(s.shards_written) for s in report.stages)
    plan = job(tiny_dir, task, executor="ray", workers=2)
    killer = KillOne(StageContext(plan.info, plan.execution))
    try:
        with open_store(out / "killed") as store:
            report = ingest(store, plan, executor=killer)
        pid, shard = killer.killed
        result["kill"] = {"shard": shard, "restarted": pid not in killer.pids(),
                          "written": any(shard in s.shards_written for s in report.stages)}
    finally:
        killer.close()
    result["killed"] = digest(out / "killed")
    giver = GiveUpOne(StageContext(plan.info, plan.execution))
    try:
        with open_store(out / "requeued") as store:
            report = ingest(store, plan, executor=giver)
        result["requeue"] = {"shard": giver.lost, "written": any(giver.lost in s.shards_written for s in report.stages)}
    finally:
        giver.close()
    result["requeued"] = digest(out / "requeued")
    ray.shutdown()
    result["ray_stopped"] = not ray.is_initialized()
    return result


if __name__ == "__main__":
    found = main(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
    print(json.dumps(found))
