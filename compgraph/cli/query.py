"""Reading a store: ``query`` (Cypher, or a named query), ``info``, ``queries``, ``report`` and ``export``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from compgraph.cli.common import emit, handle_errors, require_model, store_options
from compgraph.errors import ConfigError
from compgraph.render import FORMATS, REPORT_FORMATS, TABLE_LIMIT


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


@click.command()
@click.argument("cypher", required=False)
@click.option("-n", "--named", default=None, metavar="NAME", help="Run a query of the named library instead.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A parameter; VALUE is read as JSON when it parses, else as a string.")
@click.option("--params-json", default=None, metavar="FILE", help="A JSON object of parameters ('-': stdin).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
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


@click.command()
@click.option("--format", "fmt", type=click.Choice(REPORT_FORMATS), default="table", show_default=True)
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


@click.command()
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
        require_model(graph, model_name)
        tasks = graph.edges(schema.EVALUATED_ON, source_where={"uid": model_name})
        for task in sorted(t.removeprefix("task:") for t in tasks["dst"].to_list()) if tasks.height else []:
            statements.append((named_query("top_effects").text, {"model": model_name, "task": task,
                                                                 "method": "activation", "limit": limit},
                               f"top components by activation-patching effect on {task} (the measured ones)"))
        for statement, params, title in statements:
            with graph.records(statement, params) as rows:
                emit(rows, "table", title)


@click.command("queries")
@handle_errors
def list_queries():
    """List the named Cypher library."""
    import polars as pl

    from compgraph.library import named_queries

    rows = [{"name": q.name, "params": q.params, "returns": q.returns, "description": q.description}
            for q in named_queries().values()]
    emit(pl.DataFrame(rows), "table", "named queries")


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["neo4j-import"]), required=True,
              help="neo4j-import: CSV files and arguments for `neo4j-admin database import full`.")
@store_options
@handle_errors
def export(directory, fmt, store, database):
    """Write the whole store into DIRECTORY (new or empty) for a bulk load elsewhere."""
    from compgraph.store.export import write_neo4j_import
    from compgraph.store.factory import open_store

    with open_store(store, database=database, create=False) as graph:
        summary = write_neo4j_import(graph, directory)
    for name, count in [*summary.nodes.items(), *summary.relationships.items()]:
        click.echo(f"{name:32s} {count:>12,d}")
    if summary.empty_lists:
        click.echo(f"note: {summary.empty_lists} list value(s) [] or [\"\"] are written as absent properties "
                   "(the importer has no spelling for them)")
    click.echo(f"load it into a stopped Neo4j 5 (empty database): {summary.command}")


COMMANDS = (query, info, list_queries, report, export)
