"""What the SmolLM2 effect benchmarks share: the model, each task's first examples encoded
with its metric, a timer and the machine load (imported by the scripts beside it)."""

from __future__ import annotations

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
