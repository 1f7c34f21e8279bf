"""The ``compgraph`` command: a thin layer over the Python API.

Any :class:`~compgraph.errors.CompgraphError` becomes a one-line message on stderr
and exit code 1 (``--debug`` shows the traceback). Heavy imports (torch, the JVM,
the driver) happen inside the commands, never at import time.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from pathlib import Path
from typing import Any

import click

from compgraph.errors import CompgraphError, ConfigError


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def handle_errors(fn):
    """Turn compgraph's own errors into one line and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        try:
            return fn(*args, **kwargs)
        except CompgraphError as err:
            if ctx.find_root().params.get("debug"):
                raise
            _fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
        except KeyboardInterrupt:
            _fail("interrupted; re-run the same command to resume")

    return wrapper


def store_options(fn):
    fn = click.option("--database", default=None, metavar="NAME",
                      help="Database on a Bolt server (default: the server's default).")(fn)
    fn = click.option("--store", "store", default=None, metavar="URI",
                      help="Directory of an embedded store, or a bolt:// / neo4j:// URI "
                           "[env COMPGRAPH_STORE; default ./compgraph-kb].")(fn)
    return fn


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


def emit(frame, fmt: str, title: str | None = None) -> None:
    from compgraph import render

    if fmt == "json":
        click.echo(render.to_json(frame))
    elif fmt == "csv":
        click.echo(render.to_csv(frame), nl=False)
    else:
        render.print_table(frame, title)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="compgraph")
def main(debug: bool) -> None:
    """compgraph: a graph-database knowledge base of model components."""


@main.command()
@click.argument("cypher", required=False)
@click.option("-n", "--named", default=None, metavar="NAME", help="Run a query of the named library instead.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A parameter; VALUE is read as JSON when it parses, else as a string.")
@click.option("--params-json", default=None, metavar="FILE", help="A JSON object of parameters ('-': stdin).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--write", is_flag=True, help="Allow the statement to write.")
@store_options
@handle_errors
def query(cypher, named, params, params_json, fmt, write, store, database):
    """Run CYPHER (read-only unless --write) and print the rows."""
    from compgraph.library import named_query
    from compgraph.store.factory import open_store

    if (cypher is None) == (named is None):
        raise ConfigError("give either a CYPHER statement or --named NAME")
    statement = named_query(named).text if named else cypher
    values = collect_params(params, params_json)
    with open_store(store, database=database) as graph:
        frame = graph.query(statement, values, write=write)
    emit(frame, fmt)


@main.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@store_options
@handle_errors
def info(fmt, store, database):
    """Counts per label and relationship type, schema version, location."""
    from compgraph.store.factory import open_store
    from compgraph.store.summary import store_info

    with open_store(store, database=database) as graph:
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
              help="Comma list of extractors: neurons, heads, experts.")
@click.option("--top-k", type=int, default=10, show_default=True, help="Tokens per component and sign.")
@click.option("--corpus", default=None, metavar="FILE", help="JSONL ({\"text\": ...}) or text corpus.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--dtype", default="auto", show_default=True, help="auto, float32, bfloat16 or float16.")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Sequences per forward pass.")
@click.option("--seq-len", type=int, default=128, show_default=True, help="Tokens per corpus sequence.")
@click.option("--max-tokens", type=int, default=None, help="Read at most this many corpus tokens.")
@store_options
@handle_errors
def ingest(model, name, extract, top_k, corpus, device, dtype, batch_size, seq_len, max_tokens, store, database):
    """Extract MODEL's components into the store (resumable; re-running changes nothing).

    MODEL: a .gguf file, a model directory, an org/name hub id, or packaged:smollm2.
    """
    from compgraph.config import IngestConfig
    from compgraph.ingest import ingest as run_ingest
    from compgraph.models import loading
    from compgraph.store.factory import open_store

    cfg = IngestConfig(model=model, name=name, extract=tuple(e.strip() for e in extract.split(",") if e.strip()),
                       top_k=top_k, corpus=corpus, device=device, dtype=dtype, batch_size=batch_size,
                       seq_len=seq_len, max_tokens=max_tokens)
    from compgraph.extract.data import load_corpus

    load_corpus(cfg.corpus)  # a bad corpus fails before anything is opened
    loading.inspect(cfg.model)  # a bad model fails before the store is touched
    with open_store(store, database=database) as graph, _progress() as tick:
        report = run_ingest(graph, cfg, progress=tick)
    if report.status == "already complete":
        click.echo(f"{report.model}: run {report.run} is already complete; nothing written")
    else:
        click.echo(f"{report.model}: run {report.run} complete; {len(report.shards_written)} shard(s) written, "
                   f"{report.shards_skipped} already done")


@main.command()
@click.argument("model_name")
@click.option("--limit", type=int, default=5, show_default=True)
@store_options
@handle_errors
def report(model_name, limit, store, database):
    """A short report on an ingested model, through the named queries."""
    from compgraph.library import named_query
    from compgraph.schema import HEAD_SCORES
    from compgraph.store.factory import open_store

    with open_store(store, database=database) as graph:
        emit(graph.query(named_query("model_summary").text, {"model": model_name}), "table", f"{model_name}")
        for score in HEAD_SCORES:
            frame = graph.query(named_query("top_heads").text, {"model": model_name, "score": str(score), "limit": limit})
            emit(frame, "table", f"top heads by {score}")
        emit(graph.query(named_query("neuron_tokens").text, {"model": model_name, "limit": limit, "k": 5}),
             "table", "neurons with the strongest token outputs (via out)")


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
