"""Ingest from Python: plan the requested stages for a model and run them.

    from compgraph.ingest import IngestConfig, ingest
    with compgraph.open_store("./compgraph-kb") as store:
        ingest(store, IngestConfig.of("packaged:smollm2", extract=("neurons",), max_tokens=4096))

A thin layer over the job engine (:mod:`compgraph.engine`): :func:`plan` checks every
option, the model's files and config, and computes run identities, without weights
or a store; :func:`ingest` plans and runs.
"""

from __future__ import annotations

from compgraph.engine.context import Progress, no_progress
from compgraph.engine.job import IngestConfig, JobPlan, plan_job
from compgraph.engine.runner import JobReport, run_job
from compgraph.store.base import GraphStore

__all__ = ["IngestConfig", "JobPlan", "JobReport", "ingest", "plan"]


def plan(cfg: IngestConfig, *, loaded=None) -> JobPlan:
    """Plan a job (every check that needs neither weights nor a store)."""
    return plan_job(cfg, loaded=loaded)


def ingest(store: GraphStore, cfg: IngestConfig | JobPlan, *, progress: Progress | None = None,
           loaded=None, executor=None) -> JobReport:
    """Run the job. ``loaded``: a LoadedModel already in memory (tests, notebooks);
    ``executor``: where shards are computed (default: the one ``--executor`` names)."""
    job = cfg if isinstance(cfg, JobPlan) else plan_job(cfg, loaded=loaded)
    return run_job(store, job, loaded=loaded, progress=progress or no_progress, executor=executor)
