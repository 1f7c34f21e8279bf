"""What each shard of a run costs: compute seconds, write seconds and peak memory.

- ``compute_s``: wall seconds of the stage's ``run`` for the shard (loading the model on
  first need included); ``write_s``: wall seconds of writing its frames to the store;
- ``peak_mb``: the process's peak resident set size (``VmHWM`` in ``/proc/self/status``,
  MiB) while the shard was computed and written. The peak is reset before each shard by
  writing ``5`` to ``/proc/self/clear_refs`` (Linux ≥ 4.0); where that is refused, the
  figure is the process's peak so far (monotone over the job) and ``peak_reset`` is false.

A run stores the list of its shards' profiles (JSON, property ``profile``) and the largest
peak (``peak_mb``); ``compgraph runs`` shows the latter and ``compgraph ingest --profile``
prints both. GPU memory is not counted here.
"""

from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def reset_peak() -> bool:
    """Reset the process's peak RSS to its current RSS; False where the kernel refuses."""
    try:
        _CLEAR.write_text("5")
    except OSError:
        return False
    return True


def peak_mb() -> float:
    """The process's peak RSS in MiB (since the last :func:`reset_peak`, where it worked)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


class ShardClock:
    """Times one shard's two phases and reads its peak memory; :meth:`record` is the row stored."""

    def __init__(self, shard: str):
        self.shard = shard
        self.seconds = {"compute": 0.0, "write": 0.0}
        self.reset = reset_peak()
        self.worker_peak_mb: float | None = None
        """The peak of the process that computed the shard, where that was not this one (Ray):
        :meth:`record`'s ``peak_mb`` is then the larger of it and this process's."""

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start

    def record(self) -> dict:
        return {"shard": self.shard, "compute_s": round(self.seconds["compute"], 3),
                "write_s": round(self.seconds["write"], 3),
                "peak_mb": round(max(peak_mb(), self.worker_peak_mb or 0.0), 1),
                "peak_reset": self.reset}
