"""Where compgraph keeps what it can recompute: ``$COMPGRAPH_CACHE``, default ``~/.cache/compgraph``.

It holds the memoised file digests (``digests.json``) and the packaged models assembled
from their parts (``packaged/<name>/``). Deleting it loses nothing but time.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("COMPGRAPH_CACHE") or Path.home() / ".cache" / "compgraph")
