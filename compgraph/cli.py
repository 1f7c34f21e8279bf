"""The ``compgraph`` command: a thin layer over the Python API.

Any :class:`~compgraph.errors.CompgraphError` becomes a one-line message on stderr
and exit code 1 (``--debug`` shows the traceback). SIGINT, SIGTERM and SIGHUP raise
:class:`~compgraph.errors.Interrupted` wherever the command is: the open write
transaction rolls back, the store closes, one line says how to resume, and the exit
code is 128 + the signal (130, 143, 129); a second signal ends the process at once.
Heavy imports (torch, the JVM, the driver) happen inside the commands, never at
import time.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from compgraph.errors import CompgraphError, ConfigError, Interrupted
from compgraph.render import TABLE_LIMIT


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def handle_errors(fn):
    """Turn compgraph's own errors into one line and exit 1; a reader that went away
    (``| head``) ends the command quietly."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        try:
            return fn(*args, **kwargs)
        except CompgraphError as err:
            if ctx.find_root().params.get("debug"):
                raise
            _fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
        except KeyboardInterrupt:  # no handler of ours (not the main thread)
            _stopped(Interrupted(signal.SIGINT))
        except BrokenPipeError:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
            sys.exit(128 + 13)  # as if killed by SIGPIPE

    return wrapper


_RESUME = "run the same command again to resume"
STOP_GRACE_S = 5.0
"""How long a signal waits for Python to get control back (a statement running inside
the JVM holds it) before the process ends without cleaning up."""


def _stopped(stop: Interrupted) -> None:
    with contextlib.suppress(OSError, ValueError):  # a hung-up terminal may take stderr with it
        click.echo(f"error: {stop}; {_RESUME}", err=True)
    sys.exit(stop.exit_code)


def _stop_at_once(signum, frame) -> None:
    os._exit(128 + signum)


def _catch_signals(ctx: click.Context) -> None:
    """Make SIGINT, SIGTERM and SIGHUP raise Interrupted for the rest of the command
    (a signal ignored on entry, as under nohup, stays ignored); restored afterwards.

    Python runs a signal handler only between bytecodes, so one statement running inside
    the JVM would hold the stop back until it ends (minutes, for a large write). A watcher
    thread sees the signal at once (through the wakeup fd); if the handler has not run
    within STOP_GRACE_S, it ends the process without cleaning up: the open transaction
    was never committed, so the store keeps none of it, as after ``kill -9``, and the
    same command resumes."""
    if threading.current_thread() is not threading.main_thread():
        return
    previous: dict[int, Any] = {}
    handled = threading.Event()

    def stop(signum, frame):
        handled.set()
        for sig in previous:  # stopping now: a second signal ends the process at once
            signal.signal(sig, _stop_at_once)
        raise Interrupted(signum)

    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is None or signal.getsignal(sig) == signal.SIG_IGN:
            continue
        previous[sig] = signal.signal(sig, stop)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    previous_fd = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)

    def watch():
        while True:
            for signum in os.read(wake_read, 64):
                if signum == 0:  # the command is over
                    return
                if signum in previous and not handled.wait(STOP_GRACE_S):
                    with contextlib.suppress(OSError, ValueError):
                        click.echo(f"error: {Interrupted(signum)} (the engine was busy for {STOP_GRACE_S:g} s, "
                                   f"nothing uncommitted is kept); {_RESUME}", err=True)
                    os._exit(128 + signum)

    watcher = threading.Thread(target=watch, name="compgraph-signals", daemon=True)
    watcher.start()

    def restore():
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(previous_fd)
        os.write(wake_write, b"\0")
        watcher.join(timeout=STOP_GRACE_S + 1)
        os.close(wake_write)
        if not watcher.is_alive():
            os.close(wake_read)

    ctx.call_on_close(restore)


_LAZY = {"analyse": "compgraph.analysis.command"}
"""Commands defined in modules that import this one's decorators: loaded when named."""


class _Main(click.Group):
    """The command group: a signal anywhere in a command ends it with one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_LAZY])

    def get_command(self, ctx: click.Context, name: str):
        if name in _LAZY and name not in self.commands:
            import importlib

            self.add_command(getattr(importlib.import_module(_LAZY[name]), name))
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Interrupted as stop:
            _stopped(stop)


def store_options(fn):
    fn = click.option("--database", default=None, metavar="NAME",
                      help="Database on a Bolt server (default: the server's default).")(fn)
    fn = click.option("--store", "store", default=None, metavar="URI",
                      help="Directory of an embedded store, or a bolt:// / neo4j:// URI "
                           "[env COMPGRAPH_STORE; default ./compgraph-kb].")(fn)
    return fn


def effect_options(components_flag: str):
    """The options of the effects stage, shared by ``ingest`` and ``effects``; the command
    receives them as keyword arguments named like :class:`~compgraph.config.IngestConfig`'s
    fields (see :func:`_effect_fields`)."""
    options = [
        click.option("--method", "effect_method", default="activation", show_default=True,
                     help="Effects of heads and blocks: activation, attribution or eap-ig."),
        click.option("--ablation", default="corrupt", show_default=True, help="corrupt, zero, mean or resample."),
        click.option(components_flag, "effect_components", default="head,mlp,attn,neuron", show_default=True,
                     help="Component kinds whose effects are measured (neurons by attribution patching)."),
        click.option("--top-n", "--circuit-n", "circuit_n", type=int, default=20, show_default=True,
                     help="Components in each node circuit (top by |effect|)."),
        click.option("--top-n-edges", "--circuit-edges", "circuit_edges", type=int, default=200, show_default=True,
                     help="Edges in each edge circuit (top by |effect|, before pruning)."),
        click.option("--threshold", "circuit_threshold", type=float, default=None,
                     help="Circuits keep every member with |effect| >= X instead of a top-n."),
        click.option("--edges/--no-edges", "effect_edges", default=True, show_default=True,
                     help="Score causal edges (CAUSES) and build the edge circuit."),
        click.option("--examples", "task_examples", type=int, default=64, show_default=True,
                     help="Examples per task: the first N of the file (0: all)."),
    ]

    def apply(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


def _effect_fields(options: dict) -> dict:
    """The effects options as IngestConfig fields (comma lists split)."""
    return {**options, "effect_components": _split(options["effect_components"])}

def _parse_param(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise ConfigError(f"--param wants NAME=VALUE, got {text!r}")
    try:
        value = json.loads(raw)  # 3 -> int, 0.5 -> float, [1,2] -> list, "x" -> str
    except json.JSONDecodeError:
        value = raw  # anything that is not JSON is a plain string
    return name, value


def collect_params(params: tuple[str, ...], params_json: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if params_json:
        try:
            text = sys.stdin.read() if params_json == "-" else Path(params_json).read_text()
            loaded = json.loads(text)
        except OSError as err:
            raise ConfigError(f"cannot read {params_json}: {err.strerror}") from err
        except json.JSONDecodeError as err:
            raise ConfigError(f"{params_json} is not JSON: {err.msg} (line {err.lineno})") from err
        if not isinstance(loaded, dict):
            raise ConfigError(f"{params_json} must hold a JSON object of parameters")
        out.update(loaded)
    out.update(_parse_param(p) for p in params)
    return out


def emit(rows, fmt: str, title: str | None = None, *, limit: int | None = None) -> None:
    """Print Records or a polars frame as a table, csv or json (see compgraph.render)."""
    from compgraph import render

    render.emit(rows, fmt, title=title, limit=limit, out=sys.stdout)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="compgraph")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """compgraph: a graph-database knowledge base of model components."""
    _catch_signals(ctx)
    if not debug:  # the driver logs what its error says again ("Unable to retrieve routing ...")
        driver_log = logging.getLogger("neo4j")
        driver_log.addHandler(logging.NullHandler())
        driver_log.propagate = False


@main.command()
@click.argument("cypher", required=False)
@click.option("-n", "--named", default=None, metavar="NAME", help="Run a query of the named library instead.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A parameter; VALUE is read as JSON when it parses, else as a string.")
@click.option("--params-json", default=None, metavar="FILE", help="A JSON object of parameters ('-': stdin).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--limit", type=click.IntRange(min=0), default=None, metavar="N",
              help=f"Print at most N rows [tables: {TABLE_LIMIT}, then a note of what was left out; "
                   "csv and json: every row].")
@click.option("--write", is_flag=True, help="Allow the statement to write (and create the store if missing).")
@store_options
@handle_errors
def query(cypher, named, params, params_json, fmt, limit, write, store, database):
    """Run CYPHER (read-only unless --write) and print the rows as they arrive."""
    from compgraph.library import named_query
    from compgraph.store.factory import open_store

    if (cypher is None) == (named is None):
        raise ConfigError("give either a CYPHER statement or --named NAME")
    statement = named_query(named).text if named else cypher
    values = collect_params(params, params_json)
    with open_store(store, database=database, create=write) as graph:
        with graph.records(statement, values, write=write) as rows:
            emit(rows, fmt, limit=limit)


@main.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@store_options
@handle_errors
def info(fmt, store, database):
    """Counts per label and relationship type, schema version, location."""
    from compgraph.store.factory import open_store
    from compgraph.store.summary import store_info

    with open_store(store, database=database, create=False) as graph:
        summary = store_info(graph)
    if fmt == "json":
        click.echo(json.dumps({
            "location": summary.location, "schema_version": summary.schema_version,
            "labels": dict(summary.labels.iter_rows()), "relationships": dict(summary.relationships.iter_rows()),
        }))
        return
    click.echo(f"store: {summary.location}\nschema version: {summary.schema_version}")
    emit(summary.labels, "table", "nodes per label")
    emit(summary.relationships, "table", "relationships per type")


@main.command()
@click.argument("model")
@click.option("--name", default=None, help="The :Model node's name [default: derived from MODEL].")
@click.option("--extract", default="neurons,heads,experts", show_default=True,
              help="Comma list of stages (see `compgraph stages`); required stages are added.")
@click.option("--force", default="", metavar="STAGES", help="Comma list of stages to recompute even if complete.")
@click.option("--top-k", type=int, default=10, show_default=True, help="Tokens per component and sign.")
@click.option("--corpus", default=None, metavar="SPEC",
              help="packaged:pile, a .txt/.jsonl/.parquet file, or a cached dataset id [default: a small shipped sample].")
@click.option("--seq-len", type=int, default=128, show_default=True, help="Tokens per corpus sequence.")
@click.option("--max-tokens", type=int, default=None, help="Read at most this many corpus tokens.")
@click.option("--tracked-tokens", type=int, default=4096, show_default=True,
              help="ACTIVATES_ON ranks the corpus's most frequent tokens, this many.")
@click.option("--head-tokens", type=int, default=16384, show_default=True,
              help="Corpus tokens the text-based head scores average over.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of random test sequences.")
@click.option("--tasks", default="", metavar="TASKS",
              help="Comma list of tasks (shipped names or .jsonl paths): adds the effects stage.")
@effect_options("--effect-components")
@click.option("--connections-k", type=int, default=10, show_default=True,
              help="Weights-based connections kept per source component (stage connections).")
@click.option("--dictionary", "dictionaries", multiple=True, metavar="PATH",
              help="An SAE / transcoder (SAELens, sparsify, circuit-tracer) for the features stage; repeatable.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--dtype", default="auto", show_default=True, help="auto, float32, bfloat16 or float16.")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Sequences per forward pass.")
@click.option("--memory-gb", type=float, default=2.0, show_default=True,
              help="Budget for statistics accumulators (layers are grouped to fit).")
@store_options
@handle_errors
def ingest(model, name, extract, force, top_k, corpus, seq_len, max_tokens, tracked_tokens, head_tokens, seed,
           tasks, connections_k, dictionaries, device, dtype, batch_size, memory_gb, store, database, **effect):
    """Compute MODEL's components into the store, stage by stage (resumable; a complete
    stage is skipped; a stage whose version, config or inputs changed is recomputed and
    replaces what it wrote before).

    MODEL: a .gguf file, a model directory, an org/name hub id, or packaged:smollm2.
    """
    from compgraph.config import IngestConfig

    cfg = IngestConfig(model=model, name=name, extract=_split(extract), force=_split(force), top_k=top_k,
                       corpus=corpus, seq_len=seq_len, max_tokens=max_tokens, tracked_tokens=tracked_tokens,
                       head_tokens=head_tokens, seed=seed, tasks=_split(tasks), connections_k=connections_k,
                       dictionaries=tuple(dictionaries), device=device, dtype=dtype, batch_size=batch_size,
                       memory_gb=memory_gb, **_effect_fields(effect))
    _run_job(cfg, store, database)


def _split(text: str) -> tuple[str, ...]:
    return tuple(e.strip() for e in text.split(",") if e.strip())


def _run_job(cfg, store, database) -> None:
    """Plan (every check, before the store is opened), run with progress bars, report per stage."""
    from compgraph.ingest import ingest as run_ingest
    from compgraph.ingest import plan
    from compgraph.store.factory import open_store

    job = plan(cfg)
    with open_store(store, database=database) as graph, _progress() as tick:
        report = run_ingest(graph, job, progress=tick)
    for stage in report.stages:
        if stage.status == "complete":
            detail = (f"{len(stage.shards_written)} shard(s) written, {stage.shards_skipped} already done, "
                      f"{stage.rows_written} rows")
        elif stage.status == "already complete":
            detail = "nothing written"
        else:
            detail = stage.reason or ""
        click.echo(f"{report.model}: {stage.stage} [{stage.status}] {stage.run}: {detail}")


@main.command()
@click.argument("model")
@click.option("--tasks", required=True, metavar="TASKS", help="Comma list of tasks: shipped names or .jsonl paths.")
@click.option("--name", default=None, help="The :Model node's name [default: derived from MODEL].")
@effect_options("--components")
@click.option("--dictionary", "dictionaries", multiple=True, metavar="PATH",
              help="An SAE / transcoder whose features are measured (with --components feature); repeatable.")
@click.option("--force", is_flag=True, help="Recompute even if complete.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--dtype", default="auto", show_default=True, help="auto, float32, bfloat16 or float16.")
@store_options
@handle_errors
def effects(model, tasks, name, dictionaries, force, device, dtype, store, database, **effect):
    """Measure every component's causal effect on each task, and each task's node circuit
    (the effects stage of `ingest`, alone; one run per task)."""
    from compgraph.config import IngestConfig

    cfg = IngestConfig(model=model, name=name, extract=("effects",), force=("effects",) if force else (),
                       tasks=_split(tasks), dictionaries=tuple(dictionaries), device=device, dtype=dtype,
                       **_effect_fields(effect))
    _run_job(cfg, store, database)


@main.command("train-dictionary")
@click.argument("model")
@click.option("--layer", type=int, required=True, help="Block index the dictionary reads.")
@click.option("--site", default=None, help="SAE: resid (= resid_post), resid_pre, resid_mid, mlp_in, mlp_out, "
                                           "attn_out [resid]; transcoder: mlp_in (predicts mlp_out).")
@click.option("--kind", type=click.Choice(["topk-sae", "transcoder"]), default="topk-sae", show_default=True)
@click.option("--width", type=int, default=4096, show_default=True, help="Number of features.")
@click.option("--k", type=int, default=32, show_default=True, help="Active features per token.")
@click.option("--tokens", type=int, default=1_000_000, show_default=True, help="Training tokens (activations).")
@click.option("--eval-tokens", type=int, default=16_384, show_default=True, help="Held-out tokens for the final FVE.")
@click.option("--out", default=None, metavar="DIR", help="Folder to write (SAELens layout) [default: derived].")
@click.option("--corpus", default="packaged:pile", show_default=True, metavar="SPEC", help="Corpus spec.")
@click.option("--seq-len", type=int, default=128, show_default=True, help="Tokens per corpus sequence.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Sequences per forward pass.")
@click.option("--batch-tokens", type=int, default=1024, show_default=True, help="Tokens per optimiser step.")
@click.option("--lr", type=float, default=None, help="Adam learning rate [default: 2e-4 / sqrt(width / 2^14)].")
@click.option("--dead-tokens", type=int, default=100_000, show_default=True,
              help="A feature silent for this many training tokens is dead.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--dtype", default="auto", show_default=True,
              help="The model's forward pass: auto (bfloat16 where the hardware has it natively), float32, "
                   "bfloat16 or float16; the dictionary trains in float32.")
@handle_errors
def train_dictionary(model, layer, site, kind, width, k, tokens, eval_tokens, out, corpus, seq_len, batch_size,
                     batch_tokens, lr, dead_tokens, seed, device, dtype):
    """Train a TopK SAE or transcoder on MODEL's activations over a corpus and save it in the
    SAELens layout (read back by --dictionary)."""
    from compgraph.dictionaries.train import TrainConfig, TrainJob, train_dictionary as run_training

    job = TrainJob(model=model, layer=layer, site=site, out=out, corpus=corpus, tokens=tokens, eval_tokens=eval_tokens,
                   seq_len=seq_len, batch_size=batch_size, device=device, dtype=dtype,
                   train=TrainConfig(kind=kind, width=width, k=k, lr=lr, batch_tokens=batch_tokens,
                                     dead_tokens=dead_tokens, seed=seed))
    with _training_progress(tokens + eval_tokens) as (on_step, on_read):
        folder, result = run_training(job, progress=on_step, read_progress=on_read)
    if result.tokens < tokens:
        click.echo(f"note: the corpus ran out after {result.tokens} of {tokens} training tokens", err=True)
    click.echo(f"wrote {folder}: {result.tokens} tokens, {result.steps} steps, {result.seconds:.0f} s; "
               f"held-out FVE {result.fve:.4f} ({result.eval_tokens} tokens), "
               f"dead features {result.dead} of {width} (silent for {dead_tokens} tokens)")


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


@main.command()
@click.option("--model", default=None, help="Only the runs of this model.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@store_options
@handle_errors
def runs(model, fmt, store, database):
    """Runs with their stage, status, config, timing and rows written (newest first)."""
    from compgraph.engine.provenance import runs_frame
    from compgraph.store.factory import open_store

    with open_store(store, database=database, create=False) as graph:
        frame = runs_frame(graph, model)
    emit(frame, fmt, "runs")


@main.command("stages")
@handle_errors
def list_stages():
    """The registered stages: name, version, inputs, what they compute."""
    import polars as pl

    from compgraph.engine.registry import stages

    rows = [{"stage": s.name, "version": s.version, "requires": ",".join(s.requires), "inputs": ",".join(s.inputs),
             "description": s.description} for s in stages().values()]
    emit(pl.DataFrame(rows), "table", "stages")


@main.command()
@click.argument("model_name")
@click.option("--limit", type=click.IntRange(min=1), default=5, show_default=True, help="Rows per table.")
@store_options
@handle_errors
def report(model_name, limit, store, database):
    """A short report on an ingested model, through the named queries."""
    from compgraph import schema
    from compgraph.library import named_query
    from compgraph.schema import HEAD_SCORES
    from compgraph.store.factory import open_store

    queries = [("model_summary", {}, f"{model_name}")]
    queries += [("top_heads", {"score": str(score), "limit": limit}, f"top heads by {score}") for score in HEAD_SCORES]
    queries += [("neuron_tokens", {"limit": limit, "k": 5}, "neurons with the strongest token outputs (via out)")]
    queries += [("task_accuracy", {}, "tasks"), ("circuits", {}, "circuits (faithfulness measured)")]
    statements = [(named_query(name).text, {"model": model_name, **params}, title) for name, params, title in queries]
    with open_store(store, database=database, create=False) as graph:
        _require_model(graph, model_name)
        tasks = graph.edges(schema.EVALUATED_ON, source_where={"uid": model_name})
        for task in sorted(t.removeprefix("task:") for t in tasks["dst"].to_list()) if tasks.height else []:
            statements.append((named_query("top_effects").text, {"model": model_name, "task": task,
                                                                 "method": "activation", "limit": limit},
                               f"top components by activation-patching effect on {task}"))
        for statement, params, title in statements:
            with graph.records(statement, params) as rows:
                emit(rows, "table", title)


def _require_model(graph, name: str) -> None:
    """Refuse a model the store does not hold, naming the ones it does."""
    from compgraph import schema

    if graph.nodes(schema.MODEL, uids=[schema.model_uid(name)]).height:
        return
    models = graph.nodes(schema.MODEL)
    held = sorted(str(uid) for uid in models["uid"].to_list()) if "uid" in models.columns else []
    listed = ", ".join(held[:20]) + (f", ... ({len(held)} in all)" if len(held) > 20 else "")
    raise ConfigError(f"no model {name!r} in the store at {graph.location}; "
                      + (f"it holds: {listed}" if held else "it holds no models"))


@contextlib.contextmanager
def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=False) as bar:
        def tick(stage: str, total: int):
            task = bar.add_task(stage, total=total)
            return lambda: bar.advance(task)

        yield tick


@main.command("queries")
@handle_errors
def list_queries():
    """List the named Cypher library."""
    import polars as pl

    from compgraph.library import named_queries

    rows = [{"name": q.name, "params": q.params, "returns": q.returns, "description": q.description}
            for q in named_queries().values()]
    emit(pl.DataFrame(rows), "table", "named queries")


if __name__ == "__main__":  # pragma: no cover
    main()
