"""Where compgraph's shipped data lives: ``ingest/`` (task files, corpora, job recipes) and
``queries/`` (the named Cypher library).

In a checkout the folders are read from the repository root; an installed wheel carries
them in ``compgraph/_data``.
"""

from __future__ import annotations

from pathlib import Path

from compgraph.errors import ConfigError

_PACKAGE = Path(__file__).resolve().parent.parent


def data_dir(name: str) -> Path:
    """``queries`` or ``ingest``: from the checkout, else from the installed package."""
    for candidate in (_PACKAGE.parent / name, _PACKAGE / "_data" / name):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"compgraph's {name}/ folder is missing from this installation")
