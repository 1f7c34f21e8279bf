"""What the SmolLM2 effect benchmarks share: the model, each task's first examples encoded
with its metric, a timer and the machine load (imported by the scripts beside it)."""

from __future__ import annotations

import argparse
import functools
import os
import time
from typing import Callable, Iterator, NamedTuple

from compgraph.data.tasks import TaskBatch, compute_metric, encode_task, load_task
from compgraph.models import loading


class Task(NamedTuple):
    name: str
    batch: TaskBatch
    metric: Callable


def setup(device: str = "cpu"):
    """The packaged SmolLM2-135M in float32."""
    return loading.load("packaged:smollm2", device=device, dtype="float32")


def start(doc: str, tasks: str):
    """The command line (``--tasks``, ``--examples``, ``--device``) parsed, the load printed
    and the model loaded: (args, loaded)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=tasks)
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print_load("before")
    return args, setup(args.device)


def batches(loaded, names: str, examples: int) -> Iterator[Task]:
    """Each task of the comma-separated ``names``: its first ``examples`` encoded, and its metric."""
    for name in names.split(","):
        task = load_task(name).head(examples)
        yield Task(name, encode_task(task, loaded.tokenizer), functools.partial(compute_metric, task.metric))


def timed(fn):
    """(seconds, fn())."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def print_load(when: str) -> None:
    print(f"load {when}: {os.getloadavg()[0]:.2f}", flush=True)
