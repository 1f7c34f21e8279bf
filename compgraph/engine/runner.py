"""The runner: plan a job's stages, compute their pending shards, write, record, replace.

One runner serves every command that computes something for a model. For each
stage it

1. builds the stage's config from the job options and the run identity from
   (model, stage, version, config, input digests) — :mod:`compgraph.engine.identity`;
2. answers "already complete" when that run is complete (``--force STAGE`` recomputes);
3. otherwise marks the stage's other runs for this model ``superseded``, loads the
   model on first need, and computes each shard not yet done, writing its frames
   (nodes stamped ``run_{stage}``, edges ``run``; edges of the stage's earlier runs
   leaving the shard's sources and not written again are deleted) and recording the
   shard on the :Run node, so a killed job resumes where it stopped;
4. at the end sweeps what the superseded runs wrote and this one did not (their
   remaining edges, and node properties this run no longer sets), and marks the run
   complete with its duration, the rows it wrote, and the seconds spent computing
   shards and writing them (``compute_seconds``, ``write_seconds``; with ``--executor
   ray`` the compute seconds of shards computed at once add up, so they may exceed the
   run's duration), with every shard's
   profile and the largest peak memory (``profile``, ``peak_mb``:
   :mod:`compgraph.engine.profile`).

So the graph always equals a clean run of the latest configuration of each stage.
Planning (:func:`compgraph.engine.job.plan_job`) reads only configs and file digests:
every option is checked before a store is opened.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field

import polars as pl

from compgraph import __version__, schema
from compgraph.engine import identity
from compgraph.engine.context import Progress, StageContext, no_progress
from compgraph.engine.job import JobPlan, StagePlan
from compgraph.engine.executors import check_ray_can_start, executor_for
from compgraph.engine.stage import Frames
from compgraph.store.base import GraphStore

P = schema.Prop
_EDGES = "@edges"  # key of the edge types in a run's ``wrote`` record


@dataclass
class StageReport:
    stage: str  # the stage's name, with "/scope" for a scoped run
    run: str
    status: str  # complete | already complete | skipped
    shards_written: list[str] = field(default_factory=list)
    shards_skipped: int = 0
    rows_written: int = 0
    reason: str | None = None
    profile: list[dict] = field(default_factory=list)
    """The shards this job computed: shard, compute_s, write_s, peak_mb, peak_reset."""


@dataclass
class JobReport:
    model: str
    stages: list[StageReport]

    def stage(self, name: str) -> StageReport:
        return next(s for s in self.stages if s.stage == name)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


# ---- running ---------------------------------------------------------------------------------

def run_job(store: GraphStore, plan: JobPlan, *, loaded=None, progress: Progress = no_progress,
            executor=None) -> JobReport:
    """Run a planned job against ``store`` (module docstring); ``loaded``: a LoadedModel
    already in memory; ``executor``: where shards are computed (default: the one
    ``--executor`` names, :mod:`compgraph.engine.executors`, started on the first shard)."""
    ctx = StageContext(plan.info, plan.execution, corpus_spec=plan.options.option("corpus", None), progress=progress,
                       loaded=loaded)
    if executor is None and plan.execution.executor == "ray":
        check_ray_can_start()  # before anything of the job is written
    shards = _LazyExecutor(ctx, executor)
    reports = []
    try:
        runs = [None if step.skip else _StageRun(store, ctx, step, forced=step.stage.name in plan.options.force,
                                                 executor=shards)
                for step in plan.stages]
        for step, run in zip(plan.stages, runs):
            if run is not None and not run.complete:
                step.stage.check_inputs(ctx, step.config)  # before anything of the job is written
        wrote_model = False
        for step, run in zip(plan.stages, runs):
            if run is None:
                reports.append(StageReport(step.label, step.run, "skipped", reason=step.skip))
                continue
            if run.complete:
                reports.append(StageReport(step.label, step.run, "already complete",
                                           shards_skipped=len(run.done)))
                continue
            if not wrote_model:
                _write_model(store, ctx, plan)
                wrote_model = True
            reports.append(run.execute())
    finally:
        shards.close()
        ctx.close()
    return JobReport(plan.info.name, reports)


class _LazyExecutor:
    """The job's executor, made when a stage first has shards to compute (a complete job
    starts no Ray cluster)."""

    def __init__(self, ctx: StageContext, given):
        self.ctx, self.made, self.given = ctx, given, given

    def compute(self, stage, config, shards):
        if not shards:
            return iter(())
        if self.made is None:
            self.made = executor_for(self.ctx)
        return self.made.compute(stage, config, shards)

    def close(self) -> None:
        if self.made is not None and self.made is not self.given:  # one the caller gave is the caller's
            self.made.close()


def _write_model(store: GraphStore, ctx: StageContext, plan: JobPlan) -> None:
    info = ctx.info
    store.merge_nodes(schema.MODEL, pl.DataFrame([{
        P.UID: schema.model_uid(info.name), P.NAME: info.name, P.SOURCE: info.spec,
        P.ARCHITECTURE: info.architecture, P.MODEL_TYPE: info.model_type, P.N_LAYERS: info.n_layers,
        P.D_MODEL: info.d_model, P.N_HEADS: info.n_heads, P.N_KV_HEADS: info.n_kv_heads, P.D_HEAD: info.d_head,
        P.D_MLP: info.d_mlp, P.N_EXPERTS: info.n_experts, P.VOCAB_SIZE: info.vocab_size,
        P.N_TOKENS: ctx.n_tokens, P.TOKENIZER: ctx.tokenizer_id, P.WEIGHTS_DIGEST: plan.weights_digest,
    }]))


class _StageRun:
    """One stage's run against the store: its state, its shards, its provenance."""

    def __init__(self, store: GraphStore, ctx: StageContext, step: StagePlan, *, forced: bool, executor=None):
        self.store, self.ctx, self.step, self.executor = store, ctx, step, executor
        self.stage = step.stage
        found = store.nodes(schema.RUN, uids=[step.run])
        state = found.row(0, named=True) if found.height else None
        self.complete = bool(state) and state.get(P.STATUS) == schema.RunStatus.COMPLETE and not forced
        self.fresh = state is None or forced or state.get(P.STATUS) == schema.RunStatus.SUPERSEDED
        self.done: set[str] = set() if self.fresh else set(state.get(P.DONE) or [])
        self.rows = 0 if self.fresh else int(state.get(P.ROWS_WRITTEN) or 0)
        self.wrote: dict[str, list[str]] = {} if self.fresh else json.loads(state.get(P.WROTE) or "{}")
        self.started = (state or {}).get(P.STARTED_AT) if not self.fresh else None
        self.timing = {"compute": 0.0, "write": 0.0} if self.fresh else {
            "compute": float(state.get(P.COMPUTE_SECONDS) or 0.0), "write": float(state.get(P.WRITE_SECONDS) or 0.0)}
        self.had_superseded_by = bool(state) and state.get(P.SUPERSEDED_BY) is not None
        self.profile: list[dict] = [] if self.fresh else json.loads(state.get(P.PROFILE) or "[]")

    def execute(self) -> StageReport:
        stage, info = self.stage, self.ctx.info
        others = self.store.nodes(schema.RUN, where={P.MODEL: info.name, P.STAGE: stage.name,
                                                     P.SCOPE: [self.step.scope, *stage.replaces(self.step.scope)]})
        others = [r for r in others.to_dicts() if r["uid"] != self.step.run]
        for other in others:
            if other.get(P.STATUS) != schema.RunStatus.SUPERSEDED:
                self._set_run(other["uid"], **{P.STATUS: schema.RunStatus.SUPERSEDED, P.SUPERSEDED_BY: self.step.run})
        if self.had_superseded_by:
            self.store.remove_properties(schema.RUN, [P.SUPERSEDED_BY], where={"uid": self.step.run})
        self.started = self.started or now()
        self._set_run(self.step.run, **{
            P.MODEL: info.name, P.STAGE: stage.name, P.SCOPE: self.step.scope, P.STAGE_VERSION: stage.version,
            P.STATUS: schema.RunStatus.RUNNING, P.CONFIG: json.dumps(identity.config_dict(self.step.config)),
            P.INPUTS: json.dumps(self.step.inputs), P.STARTED_AT: self.started, P.CODE_VERSION: __version__,
            P.DONE: sorted(self.done), P.ROWS_WRITTEN: self.rows, P.WROTE: json.dumps(self.wrote),
        })
        shards = stage.shards(info, self.step.config, self.ctx.execution)
        replace = {self.step.run, *(o["uid"] for o in others)}
        advance = self.ctx.progress(self.step.label, len(shards))
        written, profiled = [], []
        todo = [shard for shard in shards if shard not in self.done]
        for _ in range(len(shards) - len(todo)):
            advance()
        for shard in self.executor.compute(stage, self.step.config, todo):  # in completion order
            clock = shard.clock
            with clock.phase("write"):
                self._write(shard.frames, replace)
            for phase, seconds in clock.seconds.items():
                self.timing[phase] += seconds
            profiled.append(clock.record())
            self.profile.append(profiled[-1])
            self.done.add(shard.key)
            written.append(shard.key)
            self._set_run(self.step.run, **{P.DONE: sorted(self.done), P.ROWS_WRITTEN: self.rows,
                                            P.WROTE: json.dumps(self.wrote),
                                            P.COMPUTE_SECONDS: self.timing["compute"],
                                            P.WRITE_SECONDS: self.timing["write"],
                                            P.PROFILE: json.dumps(self.profile),
                                            P.PEAK_MB: max(p["peak_mb"] for p in self.profile)})
            advance()
        skipped = len(shards) - len(todo)
        tick = time.perf_counter()
        self._sweep(others)
        self.timing["write"] += time.perf_counter() - tick
        finished = now()
        seconds = (dt.datetime.fromisoformat(finished) - dt.datetime.fromisoformat(self.started)).total_seconds()
        self._set_run(self.step.run, **{P.STATUS: schema.RunStatus.COMPLETE, P.FINISHED_AT: finished,
                                        P.SECONDS: seconds, P.WRITE_SECONDS: self.timing["write"]})
        return StageReport(self.step.label, self.step.run, "complete", written, skipped, self.rows, profile=profiled)

    def _set_run(self, uid: str, **props) -> None:
        self.store.merge_nodes(schema.RUN, pl.DataFrame([{"uid": uid, **props}]))

    def _write(self, frames: Frames, replace: set[str]) -> None:
        marker = schema.run_marker(self.stage.name)
        for kind, frame in frames.nodes:
            owned = set(frame.columns) - schema.IDENTITY_PROPS
            if owned:  # rows that only name their nodes (edge endpoints) set no property of theirs
                frame = frame.with_columns(pl.lit(self.step.run).alias(marker))
                self.wrote[kind.name] = sorted(set(self.wrote.get(kind.name, [])) | owned)
            if frame.height:
                self.store.merge_nodes(kind, frame)
        for rel, frame in frames.edges:
            self.store.merge_edges(rel, frame.with_columns(pl.lit(self.step.run).alias(P.RUN)), replace=replace)
            self.wrote[_EDGES] = sorted(set(self.wrote.get(_EDGES, [])) | {rel.type})
        self.rows += frames.rows

    def _sweep(self, others: list[dict]) -> None:
        """Remove what superseded runs of this stage wrote and this run did not write again."""
        if not others:
            return
        marker = schema.run_marker(self.stage.name)
        old_ids = [o["uid"] for o in others]
        old_wrote = [json.loads(o.get(P.WROTE) or "{}") for o in others]
        rel_types = set(self.wrote.get(_EDGES, [])).union(*(w.get(_EDGES, []) for w in old_wrote))
        models = self.stage.edge_models(self.ctx.info, self.step.config)
        for rel_type in sorted(rel_types):
            self.store.delete_edges(schema.REL_KIND_BY_TYPE[rel_type], where={P.RUN: old_ids},
                                    source_where={P.MODEL: list(models)})
        for uid, wrote in zip(old_ids, old_wrote):
            for kind_name, props in wrote.items():
                if kind_name == _EDGES:
                    continue
                kind = schema.NODE_KIND_BY_NAME[kind_name]
                owned = [p for p in props if p not in schema.IDENTITY_PROPS]
                self.store.remove_properties(kind, owned + [marker], where={marker: uid})
                dropped = [p for p in owned if p not in self.wrote.get(kind_name, [])]
                self.store.remove_properties(kind, dropped, where={marker: self.step.run})
