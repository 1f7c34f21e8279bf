"""Computing for a model: ``ingest`` and ``effects`` (the job engine), ``stages`` and ``runs``.

Their options derive from the declarations: the job's own fields and the execution
settings (:class:`~compgraph.engine.job.IngestConfig`, :class:`~compgraph.engine.context.Execution`)
and every registered stage's config fields (:func:`compgraph.engine.registry.options`), so a
stage's option is declared once, on its config, and ``compgraph ingest --help`` lists it.
"""

from __future__ import annotations

import click

from compgraph.cli.common import DeclaredCommand, declared_options, emit, handle_errors, progress_bars, store_options
from compgraph.render import FORMATS


def _job_classes():
    from compgraph.engine import registry
    from compgraph.engine.context import Execution
    from compgraph.engine.job import IngestConfig

    return IngestConfig, Execution, registry


def _ingest_options() -> list[click.Option]:
    job, execution, registry = _job_classes()
    stage_configs = [s.Config for s in registry.stages().values()]
    return declared_options([job, *stage_configs, execution], skip=("model",))


def _effects_options() -> list[click.Option]:
    job, execution, registry = _job_classes()
    return declared_options([job, registry.get("effects").Config, execution],
                            skip=("model", "extract", "force", "batch_size", "memory_gb"), required=("tasks",))


def _run_job(model: str, options: dict, store, database) -> None:
    """Plan (every check, before the store is opened), run with progress bars, report per stage."""
    from compgraph.ingest import IngestConfig, ingest, plan
    from compgraph.store.factory import open_store

    job = plan(IngestConfig.of(model, **options))
    with open_store(store, database=database) as graph, progress_bars() as tick:
        report = ingest(graph, job, progress=tick)
    for stage in report.stages:
        if stage.status == "complete":
            detail = (f"{len(stage.shards_written)} shard(s) written, {stage.shards_skipped} already done, "
                      f"{stage.rows_written} rows")
        elif stage.status == "already complete":
            detail = "nothing written"
        else:
            detail = stage.reason or ""
        click.echo(f"{report.model}: {stage.stage} [{stage.status}] {stage.run}: {detail}")


@click.command(cls=DeclaredCommand, options=_ingest_options)
@click.argument("model")
@store_options
@handle_errors
def ingest(model, store, database, **options):
    """Compute MODEL's components into the store, stage by stage (resumable; a complete
    stage is skipped; a stage whose version, config or inputs changed is recomputed and
    replaces what it wrote before).

    MODEL: a .gguf file, a model directory, an org/name hub id, or packaged:smollm2.
    """
    _run_job(model, options, store, database)


@click.command(cls=DeclaredCommand, options=_effects_options)
@click.argument("model")
@click.option("--force", "force_effects", is_flag=True, help="Recompute even if complete.")
@store_options
@handle_errors
def effects(model, force_effects, store, database, **options):
    """Measure every component's causal effect on each task, and each task's node circuit
    (the effects stage of `ingest`, alone; one run per task)."""
    _run_job(model, {**options, "extract": ("effects",), "force": ("effects",) if force_effects else ()},
             store, database)


@click.command()
@click.option("--model", default=None, help="Only the runs of this model.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@store_options
@handle_errors
def runs(model, fmt, store, database):
    """Runs with their stage, status, config, timing and rows written (newest first)."""
    from compgraph.engine.provenance import runs_frame
    from compgraph.store.factory import open_store

    with open_store(store, database=database, create=False) as graph:
        frame = runs_frame(graph, model)
    emit(frame, fmt, "runs")


@click.command("stages")
@handle_errors
def list_stages():
    """The registered stages: name, version, inputs, what they compute."""
    import polars as pl

    from compgraph.engine.registry import stages

    rows = [{"stage": s.name, "version": s.version, "requires": ",".join(s.requires), "inputs": ",".join(s.inputs),
             "description": s.description} for s in stages().values()]
    emit(pl.DataFrame(rows), "table", "stages")


COMMANDS = (ingest, effects, runs, list_stages)
