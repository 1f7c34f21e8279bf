"""The ``compgraph`` command: a thin layer over the Python API.

Commands live one group per module: :mod:`~compgraph.cli.query` (query, info, queries,
report), :mod:`~compgraph.cli.ingest` (ingest, effects, stages, runs),
:mod:`~compgraph.cli.train` (train-dictionary), :mod:`~compgraph.cli.graphs` (import-graph,
export-circuit), :mod:`~compgraph.cli.analyse`
(analyse) and :mod:`~compgraph.cli.serve` (serve). Errors and signals: :mod:`compgraph.cli.common`. Heavy imports (torch, the
JVM, the driver) happen inside the commands, never at import time; the options ``ingest``
derives from the stage registry load only when it runs or shows its help.
"""

from __future__ import annotations

import logging

import click

from compgraph.allocator import keep_freed_memory
from compgraph.cli import analyse, graphs, ingest, query, serve, train
from compgraph.cli.common import catch_signals, received_stop, stopped
from compgraph.errors import Interrupted


COMPUTING = frozenset({"ingest", "effects", "match", "atlas", "train-dictionary", "analyse"})
"""The commands that set the C allocator for tensor work (:mod:`compgraph.allocator`)."""


class _Main(click.Group):
    """The command group: a signal anywhere in a command ends it with one line, even when
    the code it interrupted turned it into another error (:func:`received_stop`)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Interrupted as stop:
            stopped(stop)
        except Exception:
            if (stop := received_stop()) is None:
                raise
            stopped(stop)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="compgraph")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """compgraph: a graph-database knowledge base of model components."""
    catch_signals(ctx)
    if ctx.invoked_subcommand in COMPUTING:  # before any tensor: freed blocks reused (compgraph.allocator)
        keep_freed_memory()
    if not debug:  # the driver logs what its error says again ("Unable to retrieve routing ...")
        driver_log = logging.getLogger("neo4j")
        driver_log.addHandler(logging.NullHandler())
        driver_log.propagate = False


for _module in (query, ingest, graphs, train, analyse, serve):
    for _command in _module.COMMANDS:
        main.add_command(_command)
