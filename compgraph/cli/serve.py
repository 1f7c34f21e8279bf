"""``compgraph serve``: an embedded store as a local Bolt server, for queries during a job."""

from __future__ import annotations

import os
import time

import click

from compgraph.cli.common import handle_errors
from compgraph.errors import ConfigError, Interrupted


@click.command()
@click.option("--store", "store", default=None, metavar="DIR",
              help="Directory of the embedded store to serve (created if missing) "
                   "[env COMPGRAPH_STORE; default ./compgraph-kb].")
@click.option("--port", default=7687, show_default=True, type=int, help="Bolt port on 127.0.0.1.")
@handle_errors
def serve(store: str | None, port: int) -> None:
    """Serve an embedded store over Bolt until stopped (Ctrl-C), so that a job and any
    number of readers share it: ``compgraph ingest ... --store bolt://127.0.0.1:PORT`` in
    one terminal, ``compgraph query ... --store bolt://127.0.0.1:PORT`` in another.
    Clients log in as NEO4J_USER=root with the NEO4J_PASSWORD the server was started with."""
    from compgraph.store.factory import default_location
    from compgraph.store.serve import USER, serving

    target = store or default_location()
    if "://" in target and not target.startswith("file://"):
        raise ConfigError(f"compgraph serve serves an embedded store directory, not {target}")
    password = os.environ.get("NEO4J_PASSWORD")
    if not password:
        raise ConfigError("set NEO4J_PASSWORD: the password clients will log in with (user root)")
    try:
        with serving(target.removeprefix("file://"), port=port, password=password) as uri:
            click.echo(f"serving {os.path.abspath(target.removeprefix('file://'))} at {uri} "
                       f"(user {USER}, password from NEO4J_PASSWORD); Ctrl-C stops it", err=True)
            click.echo(f"ready {uri}")
            while True:  # a signal handler runs between sleeps
                time.sleep(0.5)
    except Interrupted as stop:
        click.echo(f"stopped serving ({stop})", err=True)


COMMANDS = [serve]
