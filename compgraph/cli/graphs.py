"""``compgraph import-graph`` and ``compgraph export-circuit``: attribution graphs in,
circuits out (:mod:`compgraph.attribution`)."""

from __future__ import annotations

from pathlib import Path

import click

from compgraph.data.attribution_summary import COOCCUR_MIN  # not compgraph.attribution: it imports torch
from compgraph.cli.common import handle_errors, progress_bars, require_model, store_options


@click.command("import-graph")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--model", default=None, metavar="NAME",
              help="The model the graphs are of [default: each file's metadata.scan].")
@click.option("--cooccur-min", type=int, default=None, metavar="N",
              help=f"Store COOCCURS between features found together in at least N of the model's graphs "
                   f"[default: the floor of the model's last import, else {COOCCUR_MIN}].")
@handle_errors
@store_options
def import_graph(path, model, cooccur_min, store, database):
    """Import attribution graphs (circuit-tracer / Neuronpedia JSON): FILE, or every *.json of DIR.

    Every file is checked before anything is written; importing a file again changes nothing.
    Then what the model's graphs share is summarised again (features' counts, RECURS, COOCCURS)."""
    from compgraph.attribution import import_graphs
    from compgraph.store.factory import open_store

    with open_store(store, database=database) as graph, progress_bars() as tick:
        report = import_graphs(graph, path, model=model, cooccur_min=cooccur_min, progress=tick)
    click.echo(f"{report.files} file(s): {report.imported} imported ({report.replaced} replacing an earlier "
               f"version), {report.unchanged} unchanged; {report.nodes:,} nodes, {report.links:,} links in "
               f"{report.seconds:.1f} s ({report.graphs_per_s:.1f} graphs/s, {report.links_per_s:,.0f} links/s); "
               f"summary {report.summary_seconds:.1f} s")


@click.command("export-circuit")
@click.argument("model")
@click.argument("task")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--level", type=click.Choice(["node", "edge"]), default="node", show_default=True)
@click.option("--method", default=None, help="The circuit's method, where the task has several.")
@click.option("--format", "fmt", type=click.Choice(["attribution-graph"]), default="attribution-graph",
              show_default=True, help="circuit-tracer's graph JSON (its viewer's format).")
@click.option("--source", default=None, metavar="SPEC",
              help="Where the model's tokenizer loads from [default: the source its :Model records].")
@handle_errors
@store_options
def export_circuit(model, task, out, level, method, fmt, source, store, database):
    """Write MODEL's circuit for TASK (a shipped name or its .jsonl) as an attribution graph OUT.json,
    and list it in the folder's graph-metadata.json (circuit-tracer's viewer index).

    The prompt shown is the task's first example that fits the model's tokenizer."""
    from compgraph import schema
    from compgraph.attribution import circuit_document, task_prompt, write_viewer_file
    from compgraph.store.factory import open_store

    with open_store(store, database=database, create=False) as graph:
        require_model(graph, model)
        spec = source or graph.nodes(schema.MODEL, uids=[schema.model_uid(model)])[schema.Prop.SOURCE][0]
        name = Path(task).stem if task.endswith(".jsonl") else task  # a task file names its task by its stem
        doc = circuit_document(graph, model, name, level=level, method=method, slug=out.stem,
                               **task_prompt(spec, task))
    write_viewer_file(doc, out)
    click.echo(f"wrote {out}: {len(doc['nodes'])} nodes, {len(doc['links'])} links")


COMMANDS = (import_graph, export_circuit)
