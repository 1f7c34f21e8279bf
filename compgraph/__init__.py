"""compgraph: a graph-database knowledge base of neural-network model components.

Importing this package is cheap: no torch, no JVM, no store is touched until used.
Public surface: :func:`open` (a :class:`~compgraph.kb.KB` over an existing store),
:class:`KB` (wrap a store already open), :func:`open_store` and the
:mod:`compgraph.schema` vocabulary.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["KB", "__version__", "open", "open_store"]


def open(uri_or_path=None, **kwargs):  # noqa: A001 - compgraph.open(...) is the public name
    """Open an existing store (directory, ``bolt://``/``neo4j://`` URI, or None for
    ``$COMPGRAPH_STORE`` / ``./compgraph-kb``) as a :class:`~compgraph.kb.KB`."""
    from compgraph.kb import open as _open

    return _open(uri_or_path, **kwargs)


def open_store(uri_or_path=None, **kwargs):
    """Open a graph store by URI (``bolt://``, ``neo4j://``, ...) or directory path."""
    from compgraph.store.factory import open_store as _open

    return _open(uri_or_path, **kwargs)


def __getattr__(name: str):
    if name == "KB":
        from compgraph.kb import KB

        return KB
    raise AttributeError(f"module 'compgraph' has no attribute {name!r}")
