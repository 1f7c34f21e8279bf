"""The job's shards on Ray actors against the local executor, in one process, on the real SmolLM2.

    python benchmarks/executor.py                                # effects on capitals: local, Ray 1 and 2 workers
    python benchmarks/executor.py --stages tokens,neurons,heads,connections --workers 1,2
    python benchmarks/executor.py --json out.json

Each setting runs the same job (``--stages``, default the effects stage on ``--task``'s
first ``--examples`` prompts, default method) into a fresh embedded store:

- ``local``: :class:`~compgraph.engine.executors.LocalExecutor` (torch's threads over every core);
- ``ray xN``: :class:`~compgraph.engine.executors.RayExecutor` with N actors on a local Ray
  started once at the beginning (before any store's JVM; its start is reported apart, not in
  a setting's time, and its idle daemons run beside the local setting too); an actor's start
  and model load are in it;
- ``seconds``: the job's wall time; ``speedup`` = local seconds / the setting's seconds;
  ``efficiency`` = speedup / N (1 is perfect scaling); ``shards``: how many shards the job
  computed (a stage run's shards are what its workers can share);
- ``equal``: whether the store's graph equals the local one's (every node's and edge's
  properties, :func:`tests.helpers.stores.digest`).

The machine load (1 minute) is printed before and after: timings on shared cores vary with it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compgraph.ingest import IngestConfig, ingest, plan  # noqa: E402
from compgraph.store.factory import open_store  # noqa: E402
from tests.helpers.stores import digest  # noqa: E402


def run(spec: str, stages: tuple[str, ...], task: str, examples: int, root: Path, **execution) -> dict:
    job = plan(IngestConfig.of(spec, name="smollm2", extract=stages, tasks=(task,) if "effects" in stages else (),
                               task_examples=examples, device="cpu", **execution))
    path = root / ("kb-" + "-".join(f"{k}{v}" for k, v in execution.items()) if execution else root / "kb-local")
    tick = time.perf_counter()
    with open_store(path) as store:
        report = ingest(store, job)
    seconds = time.perf_counter() - tick
    return {"seconds": seconds, "shards": sum(len(s.shards_written) for s in report.stages), "store": path}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="packaged:smollm2")
    parser.add_argument("--stages", default="effects")
    parser.add_argument("--task", default="capitals")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import ray

    stages = tuple(args.stages.split(","))
    root = Path(tempfile.mkdtemp(prefix="executor-bench-"))
    print(f"load before: {os.getloadavg()[0]:.2f}; {os.cpu_count()} cores; job: {','.join(stages)}"
          f"{' on ' + args.task if 'effects' in stages else ''}", flush=True)
    tick = time.perf_counter()  # before the first store opens its JVM (compgraph.engine.executors.start_ray)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, object_store_memory=256 * 2**20)
    print(f"ray start: {time.perf_counter() - tick:.1f} s", flush=True)
    try:
        rows = [{"setting": "local", "workers": 1, **run(args.model, stages, args.task, args.examples, root)}]
        print(f"local: {rows[0]['seconds']:.1f} s, {rows[0]['shards']} shards", flush=True)
        for n in (int(w) for w in args.workers.split(",")):
            row = {"setting": f"ray x{n}", "workers": n,
                   **run(args.model, stages, args.task, args.examples, root, executor="ray", workers=n)}
            rows.append(row)
            print(f"{row['setting']}: {row['seconds']:.1f} s", flush=True)
        base = digest(rows[0]["store"])
        for row in rows:
            row["speedup"] = rows[0]["seconds"] / row["seconds"]
            row["efficiency"] = row["speedup"] / row["workers"]
            row["equal"] = digest(row.pop("store")) == base
    finally:
        ray.shutdown()  # after the last store read: with Ray stopped, the JVM's SIGSEGV handling is gone too
    print(f"{'setting':10s} {'seconds':>8s} {'shards':>6s} {'speedup':>8s} {'efficiency':>10s} equal")
    for row in rows:
        print(f"{row['setting']:10s} {row['seconds']:8.1f} {row['shards']:6d} {row['speedup']:8.2f} "
              f"{row['efficiency']:10.2f} {row['equal']}")
    print(f"load after: {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
