"""compgraph: a graph-database knowledge base of neural-network model components.

Importing this package is cheap: no torch, no JVM, no store is touched until used.
Public surface: :func:`open_store` and the :mod:`compgraph.schema` vocabulary.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "open_store"]


def open_store(uri_or_path=None, **kwargs):
    """Open a graph store by URI (``bolt://``, ``neo4j://``, ...) or directory path."""
    from compgraph.store.factory import open_store as _open

    return _open(uri_or_path, **kwargs)
