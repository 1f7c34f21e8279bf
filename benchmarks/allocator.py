"""Edge attribution on SmolLM2 with glibc's malloc as it starts and as compgraph sets it.

    python benchmarks/allocator.py [--tasks induction] [--examples 64] [--repeats 2]

:mod:`compgraph.allocator` keeps freed blocks in the heap for reuse instead of unmapping
them, so that tensors stop faulting in fresh pages. The setting is process-wide and cannot
be undone, so the two sides cannot share a process: each task runs in two child processes
started one after the other on the same machine, ``COMPGRAPH_MALLOC=system`` (the baseline)
and the default, each loading the model, then timing ``repeats`` edge attributions (the
first one warms up, the rest are timed) and counting the minor page faults over them.
Prints both, the speed-up and the load before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

_CHILD = """
import json, resource, sys, time
sys.path.insert(0, {here!r})
from compgraph.allocator import keep_freed_memory
keep_freed_memory()
from compgraph.effects.edges import edge_attribution
from smollm2_tasks import batches, setup
loaded = setup()
for task in batches(loaded, {task!r}, {examples}):
    edge_attribution(loaded.model, loaded.adapter, task.batch, task.metric)
    faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    for _ in range({repeats} - 1):
        edge_attribution(loaded.model, loaded.adapter, task.batch, task.metric)
    print(json.dumps({{"seconds": (time.perf_counter() - start) / ({repeats} - 1),
                      "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults}}))
"""


def child(task: str, examples: int, repeats: int, mode: str) -> dict:
    env = dict(os.environ)
    env.pop("COMPGRAPH_MALLOC", None)
    if mode == "system":
        env["COMPGRAPH_MALLOC"] = "system"
    code = _CHILD.format(here=os.path.dirname(os.path.abspath(__file__)), task=task, examples=examples,
                         repeats=repeats)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="induction")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.repeats < 2:
        parser.error("--repeats must be at least 2 (the first run warms up)")
    print(f"load before: {os.getloadavg()[0]:.2f}", flush=True)
    for task in args.tasks.split(","):
        start = time.perf_counter()
        system = child(task, args.examples, args.repeats, "system")
        tuned = child(task, args.examples, args.repeats, "tuned")
        print(f"{task:16s} system {system['seconds']:6.1f} s {system['faults']:>10,} faults   "
              f"compgraph {tuned['seconds']:6.1f} s {tuned['faults']:>10,} faults   "
              f"speed-up {system['seconds'] / tuned['seconds']:4.2f}x   ({time.perf_counter() - start:.0f} s in all)",
              flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
