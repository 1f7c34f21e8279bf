"""Computing for a model: ``ingest``, ``effects`` and ``match`` (the job engine), ``stages`` and ``runs``.

Their options derive from the declarations: the job's own fields and the execution
settings (:class:`~compgraph.engine.job.IngestConfig`, :class:`~compgraph.engine.context.Execution`)
and every registered stage's config fields (:func:`compgraph.engine.registry.options`), so a
stage's option is declared once, on its config, and ``compgraph ingest --help`` lists it.
"""

from __future__ import annotations

import click

from compgraph.cli.common import (DeclaredCommand, declared_options, emit, handle_errors, progress_bars, require_model,
                                  store_options)
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


def _match_options() -> list[click.Option]:
    job, execution, registry = _job_classes()
    return declared_options([registry.get("match").Config, execution],
                            skip=("match_with", "match_source", "max_tokens", "memory_gb"))


def _run_job(model: str, options: dict, store, database, profile: bool = False) -> None:
    """Plan (every check, before the store is opened), run with progress bars, report per
    stage; with ``profile``, each computed shard's compute and write seconds and peak memory."""
    from compgraph.engine.executors import ray_session
    from compgraph.ingest import IngestConfig, ingest, plan
    from compgraph.store.factory import open_store

    job = plan(IngestConfig.of(model, **options))
    with ray_session(job.execution), open_store(store, database=database) as graph, progress_bars() as tick:
        report = ingest(graph, job, progress=tick)  # Ray before the store: see executors.start_ray
    _report(report, profile)


def _report(report, profile: bool) -> None:
    """One line per stage (status, run, what was written); with ``profile`` the shards' costs."""
    for stage in report.stages:
        if stage.status == "complete":
            detail = (f"{len(stage.shards_written)} shard(s) written, {stage.shards_skipped} already done, "
                      f"{stage.rows_written} rows")
        elif stage.status == "already complete":
            detail = "nothing written"
        else:
            detail = stage.reason or ""
        click.echo(f"{report.model}: {stage.stage} [{stage.status}] {stage.run}: {detail}")
    if profile:
        _print_profile(report)


def _print_profile(report) -> None:
    """Per stage and per shard: compute_s, write_s and peak_mb (stage rows: sums and the max)."""
    import polars as pl

    rows = [{"stage": s.stage, **p} for s in report.stages for p in s.profile]
    if not rows:
        click.echo("profile: no shard was computed", err=True)
        return
    shards = pl.DataFrame(rows).drop("peak_reset")
    stages = shards.group_by("stage", maintain_order=True).agg(
        pl.lit("(all)").alias("shard"), pl.col("compute_s").sum(), pl.col("write_s").sum(), pl.col("peak_mb").max())
    emit(stages, "table", "profile by stage (seconds summed over shards, peak memory the largest, MiB)")
    emit(shards, "table", "profile by shard")


_PROFILE = click.option("--profile", is_flag=True,
                        help="Print each stage's and shard's compute and write seconds and peak memory.")


@click.command(cls=DeclaredCommand, options=_ingest_options)
@click.argument("model")
@_PROFILE
@store_options
@handle_errors
def ingest(model, profile, store, database, **options):
    """Compute MODEL's components into the store, stage by stage (resumable; a complete
    stage is skipped; a stage whose version, config or inputs changed is recomputed and
    replaces what it wrote before).

    MODEL: a .gguf file, a model directory, an org/name hub id, or packaged:smollm2.
    """
    _run_job(model, options, store, database, profile)


@click.command(cls=DeclaredCommand, options=_effects_options)
@click.argument("model")
@click.option("--force", "force_effects", is_flag=True, help="Recompute even if complete.")
@_PROFILE
@store_options
@handle_errors
def effects(model, force_effects, profile, store, database, **options):
    """Measure every component's causal effect on each task, and each task's node circuit
    (the effects stage of `ingest`, alone; one run per task)."""
    _run_job(model, {**options, "extract": ("effects",), "force": ("effects",) if force_effects else ()},
             store, database, profile)


def _sources(store, database, names: tuple[str, str], moved: dict[str, str]) -> dict[str, str]:
    """Each model's MODEL spec: as ``--source`` gives it, else its :Model node's ``source``."""
    from compgraph import schema
    from compgraph.errors import ConfigError, ModelNotFound
    from compgraph.models import loading
    from compgraph.store.factory import open_store

    with open_store(store, database=database, create=False) as graph:
        found = {}
        for name in names:
            require_model(graph, name)
            node = graph.nodes(schema.MODEL, uids=[schema.model_uid(name)]).row(0, named=True)
            found[name] = moved.get(name) or node.get(schema.Prop.SOURCE)
    for name, spec in found.items():
        try:
            loading.resolve(spec)
        except ModelNotFound as err:
            raise ConfigError(f"{err}: model {name}'s weights have moved? give --source {name}=SPEC") from err
    return found


@click.command(cls=DeclaredCommand, options=_match_options)
@click.argument("model_a")
@click.argument("model_b")
@click.option("--source", "moved", multiple=True, metavar="NAME=SPEC",
              help="Where a model's weights are now, when not where its :Model node says; repeatable.")
@click.option("--force", "force_match", is_flag=True, help="Recompute even if complete.")
@_PROFILE
@store_options
@handle_errors
def match(model_a, model_b, moved, force_match, profile, store, database, **options):
    """Match the neurons (and, with --match-components head, the heads) of MODEL_A and
    MODEL_B, two models already in the store, and write MATCHES both ways: each unit's
    --match-top-k best in the other model, by the correlation of their activations over the
    same corpus text, and with --match-methods decoding by their decoded tokens (neurons).

    The pair is unordered: the run belongs to the name that sorts first.
    """
    pairs = dict(item.split("=", 1) for item in moved if "=" in item)
    bad = [item for item in moved if "=" not in item]
    if bad:
        raise click.UsageError(f"--source wants NAME=SPEC, not {bad[0]!r}")
    if model_a == model_b:
        raise click.UsageError(f"cannot match {model_a} with itself")
    from compgraph.engine.executors import ray_session

    first, second = sorted((model_a, model_b))
    with ray_session(_execution(options)):  # before the store is first opened (executors.start_ray)
        sources = _sources(store, database, (first, second), pairs)
        _run_job(sources[first], {**options, "name": first, "extract": ("match",), "match_with": second,
                                  "match_source": sources[second], "force": ("match",) if force_match else ()},
                 store, database, profile)


def _execution(options: dict):
    import dataclasses

    _, execution, _ = _job_classes()
    return execution(**{f.name: options[f.name] for f in dataclasses.fields(execution) if f.name in options})


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


@click.group("atlas")
def atlas() -> None:
    """Several models in one store, each ingested alike and every pair matched (a recipe)."""


@atlas.command("build")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N, for every job [default: the recipe's, else auto].")
@click.option("--dtype", default=None, help="auto, float32, bfloat16 or float16, for every job [default: the recipe's].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="For every job [default: the recipe's].")
@_PROFILE
@store_options
@handle_errors
def atlas_build(recipe, profile, store, database, **settings):
    """Build the atlas RECIPE describes (a TOML file such as ingest/atlas.toml): each model's
    ingest, then each pair's match; every job planned before any runs, what is complete
    skipped (run it again to resume)."""
    from compgraph import atlas as atlas_module
    from compgraph.store.factory import open_store

    given = {k: v for k, v in settings.items() if v is not None}
    loaded = atlas_module.load_recipe(recipe)
    planned = atlas_module.plan_all(loaded, **given)
    with open_store(store, database=database) as graph, progress_bars() as tick:
        for label, job in planned:
            click.echo(f"atlas: {label}")
            (_, report), = atlas_module.build(graph, loaded, progress=tick, planned=[(label, job)])
            _report(report, profile)


COMMANDS = (ingest, effects, match, runs, list_stages, atlas)
