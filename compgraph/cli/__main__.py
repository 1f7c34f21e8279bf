"""``python -m compgraph.cli``: the ``compgraph`` command."""

from compgraph.cli.main import main

main()
