"""``compgraph train-dictionary``: a TopK SAE or transcoder trained on a model's activations
(:mod:`compgraph.dictionaries.job`); its options derive from the declarations of
:class:`~compgraph.dictionaries.job.TrainJob` and :class:`~compgraph.dictionaries.training.TrainConfig`."""

from __future__ import annotations

import contextlib
import dataclasses

import click

from compgraph.cli.common import DeclaredCommand, declared_options, handle_errors


def _options() -> list[click.Option]:
    from compgraph.dictionaries.job import TrainJob
    from compgraph.dictionaries.training import TrainConfig

    return declared_options([TrainJob, TrainConfig], skip=("model", "train", "chunk_tokens"))


@contextlib.contextmanager
def _training_progress(total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("loss {task.fields[loss]}  FVE {task.fields[fve]}  dead {task.fields[dead]}")) as bar:
        task = bar.add_task("activations", total=total, loss="-", fve="-", dead="-")

        def on_step(state: dict) -> None:
            bar.update(task, loss=f"{state['loss']:.4f}", fve=f"{state['fve']:.4f}", dead=str(state["dead"]))
            if not bar.console.is_terminal:  # a log file gets one line per report instead of a live bar
                bar.console.print(f"step {state['steps']} tokens {state['tokens']} loss {state['loss']:.4f} "
                                  f"FVE {state['fve']:.4f} dead {state['dead']}")

        yield on_step, lambda n: bar.advance(task, n)


@click.command("train-dictionary", cls=DeclaredCommand, options=_options)
@click.argument("model")
@handle_errors
def train_dictionary(model, **options):
    """Train a TopK SAE or transcoder on MODEL's activations over a corpus and save it in the
    SAELens layout (read back by --dictionary)."""
    from compgraph.dictionaries.job import TrainJob, train_dictionary as run_training
    from compgraph.dictionaries.training import TrainConfig

    coder = {f.name for f in dataclasses.fields(TrainConfig)}
    job = TrainJob(model=model, **{k: v for k, v in options.items() if k not in coder},
                   train=TrainConfig(**{k: v for k, v in options.items() if k in coder}))
    with _training_progress(job.tokens + job.eval_tokens) as (on_step, on_read):
        folder, result = run_training(job, progress=on_step, read_progress=on_read)
    if result.tokens < job.tokens:
        click.echo(f"note: the corpus ran out after {result.tokens} of {job.tokens} training tokens", err=True)
    click.echo(f"wrote {folder}: {result.tokens} tokens, {result.steps} steps, {result.seconds:.0f} s; "
               f"held-out FVE {result.fve:.4f} ({result.eval_tokens} tokens), "
               f"dead features {result.dead} of {job.train.width} (silent for {job.train.dead_tokens} tokens)")


COMMANDS = (train_dictionary,)
