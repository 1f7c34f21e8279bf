"""Where a stage's shards are computed: in this process (``local``) or on Ray actors (``ray``).

The runner (:mod:`compgraph.engine.runner`) hands an executor a stage, its config and the
shards still to do, and writes each :class:`Shard` as it comes back; only the runner
writes to the store, so resume, run identity, replacement and provenance do not depend on
where a shard ran.

* :class:`LocalExecutor` computes the shards one after the other with the job's
  :class:`~compgraph.engine.context.StageContext` (the weights loaded once per job).
* :class:`RayExecutor` (``--executor ray``; ``pip install 'compgraph[ray]'``) starts
  ``--workers`` actors (``--gpus-per-worker`` GPUs each) on the cluster at
  ``--ray-address`` (default: a local Ray started for the job, stopped after it). Each actor
  builds its own context from plain values (the model's info and spec, the execution
  settings, the corpus spec), so it loads the model once and keeps it for every shard it
  computes, with the cluster's CPUs shared among the actors (Ray sets each one's torch
  threads to its share) and its device resolved from its GPUs (:func:`worker_execution`).
  A shard's frames come back as Arrow IPC bytes and are written in completion order; the
  next shard is handed out before one is written. An actor whose process dies is restarted
  by Ray and its shard computed again (up to :data:`RETRIES` times each); should Ray give
  the actor up, the shard goes back on the queue for a fresh actor, and after
  :data:`RETRIES` such losses the job fails with a one-line error. An exception in a
  shard's own code is not retried: it ends the job as it would locally. Shards are
  deterministic functions of (model, config, shard key) and a stage's shards write
  disjoint (relationship, source) sets, so on the same device and dtype the graph equals
  a local run's (on another device, up to floating-point precision, as ``--dtype``).
"""

from __future__ import annotations

import io
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Iterator

import polars as pl

from compgraph.engine.context import StageContext
from compgraph.engine.profile import ShardClock
from compgraph.engine.stage import Frames
from compgraph.errors import ConfigError

EXECUTORS = ("local", "ray")


@dataclass
class Shard:
    """One computed shard: its key, its frames and its clock (compute seconds and peak memory
    of wherever it ran; the runner adds the write)."""

    key: str
    frames: Frames
    clock: ShardClock


class LocalExecutor:
    """Every shard in this process, in plan order."""

    def __init__(self, ctx: StageContext):
        self.ctx = ctx

    def compute(self, stage, config: Any, shards: list[str]) -> Iterator[Shard]:
        for shard in shards:
            clock = ShardClock(shard)
            with clock.phase("compute"):
                frames = stage.run(self.ctx, config, shard)
            yield Shard(shard, frames, clock)

    def close(self) -> None:
        pass


# ---- Ray ---------------------------------------------------------------------------------------

def require_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'compgraph[ray]'") from None
    return ray


def encode_frames(frames: Frames) -> dict:
    """Frames as plain values and Arrow IPC bytes (what crosses from a worker to the runner)."""
    def ipc(frame: pl.DataFrame) -> bytes:
        buffer = io.BytesIO()
        frame.write_ipc(buffer)
        return buffer.getvalue()

    return {"nodes": [(kind, ipc(frame)) for kind, frame in frames.nodes],
            "edges": [(rel, ipc(frame)) for rel, frame in frames.edges]}


def decode_frames(payload: dict) -> Frames:
    return Frames.of(nodes=[(kind, pl.read_ipc(io.BytesIO(data))) for kind, data in payload["nodes"]],
                     edges=[(rel, pl.read_ipc(io.BytesIO(data))) for rel, data in payload["edges"]])


class ShardWorker:
    """A Ray actor's body: one model copy, any number of shards of any stage of the job."""

    def __init__(self, info, execution, corpus_spec: str | None):
        self.ctx = StageContext(info, execution, corpus_spec=corpus_spec)

    def pid(self) -> int:
        return os.getpid()

    def compute(self, stage_name: str, config: Any, shard: str) -> dict:
        from compgraph.engine import registry

        clock = ShardClock(shard)
        with clock.phase("compute"):
            frames = registry.get(stage_name).run(self.ctx, config, shard)
        return {"frames": encode_frames(frames), "compute_s": clock.seconds["compute"],
                "peak_mb": clock.record()["peak_mb"], "peak_reset": clock.reset}


def _jvm_started() -> bool:
    jpype = sys.modules.get("jpype")
    return bool(jpype is not None and jpype.isJVMStarted())


def check_ray_can_start() -> None:
    """Refuse a Ray not yet connected in a process whose JVM runs (:func:`start_ray`)."""
    if _jvm_started() and not require_ray().is_initialized():
        raise ConfigError("--executor ray: Ray must start before an embedded store is opened in this process "
                          "(the JVM and Ray's crash handler share SIGSEGV): call "
                          "compgraph.engine.executors.start_ray first, or use a Bolt store")


def start_ray(execution) -> bool:
    """Join the cluster at ``--ray-address``, or start a local Ray for the job; False when
    this process is connected already. Ray's crash handler takes over SIGSEGV, which the JVM
    of an embedded store raises and handles as part of its normal work: Ray must start
    before the JVM does, and stop after the store's last use (the CLI starts it before it
    opens the store and stops it after the store is closed)."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    check_ray_can_start()
    if execution.ray_address:
        ray.init(address=execution.ray_address, log_to_driver=False)
    else:
        ray.init(num_cpus=max(execution.workers, os.cpu_count() or 1), include_dashboard=False,
                 log_to_driver=False, object_store_memory=256 * 2**20)
    return True


@contextmanager
def ray_session(execution):
    """Ray for the block when ``--executor ray`` (started here: stopped after), else nothing."""
    started = execution.executor == "ray" and start_ray(execution)
    try:
        yield
    finally:
        if started:
            require_ray().shutdown()


RETRIES = 3
"""How often a shard is computed again after its worker's process died, before the job fails."""


def worker_execution(execution, gpus: float):
    """The settings a worker runs with: its device resolved from its GPUs (``auto`` on a
    worker without one is the CPU, as Ray hides the GPUs from it), ``cuda`` refused there."""
    device = execution.device
    if gpus == 0:
        if str(device).startswith("cuda"):
            raise ConfigError(f"--device {device} with --executor ray needs --gpus-per-worker above 0")
        device = "cpu"
    return replace(execution, executor="local", device=device)


class RayExecutor:
    """Shards on Ray actors (module docstring)."""

    def __init__(self, ctx: StageContext):
        self.ray = ray = require_ray()
        execution = ctx.execution
        self.started = start_ray(execution)
        try:
            have = ray.cluster_resources()
            gpus, n = execution.gpus_per_worker, execution.workers
            if gpus * n > have.get("GPU", 0) or n > have.get("CPU", 0):
                raise ConfigError(f"--workers {n} --gpus-per-worker {gpus:g} asks for {n} CPU(s) and {gpus * n:g} "
                                  f"GPU(s); the Ray cluster has {have.get('CPU', 0):g} and {have.get('GPU', 0):g}")
            cpus = max(1, int(have.get("CPU", 1) // n))  # Ray sets each actor's torch threads to its CPUs
            settings = worker_execution(execution, gpus)
            worker = ray.remote(ShardWorker)
            self._make = lambda: worker.options(
                num_cpus=cpus, num_gpus=gpus, max_restarts=RETRIES, max_task_retries=RETRIES,
            ).remote(ctx.info, settings, ctx.corpus_spec)
            self.actors = [self._make() for _ in range(n)]
        except BaseException:
            if self.started:
                ray.shutdown()
            raise

    def pids(self) -> list[int]:
        """The actors' process ids (waits for each to finish what it is computing)."""
        return self.ray.get([a.pid.remote() for a in self.actors])

    def submitted(self, actor, shard: str) -> None:
        """Called as ``shard`` is handed to ``actor`` (a test kills that actor's process here)."""

    def compute(self, stage, config: Any, shards: list[str]) -> Iterator[Shard]:
        ray = self.ray
        queue, idle, pending = list(shards), list(self.actors), {}
        lost = dict.fromkeys(shards, 0)

        def hand_out() -> None:
            while queue and idle:
                actor, shard = idle.pop(0), queue.pop(0)
                pending[actor.compute.remote(stage.name, config, shard)] = (shard, actor)
                self.submitted(actor, shard)

        hand_out()
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            shard, actor = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError as err:  # Ray gave the actor up: a fresh one, the shard again
                lost[shard] += 1
                if lost[shard] > RETRIES:
                    raise ConfigError(f"{stage.name} shard {shard}: its Ray worker died {lost[shard]} times "
                                      f"(last: {str(err).splitlines()[0]})") from err
                ray.kill(actor, no_restart=True)
                self.actors[self.actors.index(actor)] = fresh = self._make()
                idle.append(fresh)
                queue.insert(0, shard)
                hand_out()
                continue
            idle.append(actor)
            hand_out()  # the next shard is computed while this one is written
            clock = ShardClock(shard)
            clock.seconds["compute"] = result["compute_s"]
            clock.worker_peak_mb, clock.reset = result["peak_mb"], result["peak_reset"]
            yield Shard(shard, decode_frames(result["frames"]), clock)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor, no_restart=True)
        self.actors = []
        if self.started:
            self.ray.shutdown()


def executor_for(ctx: StageContext):
    """The executor ``ctx.execution.executor`` names."""
    if ctx.execution.executor == "ray":
        return RayExecutor(ctx)
    return LocalExecutor(ctx)
