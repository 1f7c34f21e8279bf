"""Content digests of input files: what makes two inputs the same input.

A digest is SHA-256 over file contents, so replacing the weights behind the same path
(or the files of a dictionary, a task) gives another digest. Hashing a multi-GB
checkpoint takes seconds; digests are cached per file under ``$COMPGRAPH_CACHE``
(default ``~/.cache/compgraph``) keyed on (path, size, mtime), so a file rewritten in
place is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from compgraph.cache import cache_dir

_CHUNK = 1 << 22


def _cache_file() -> Path:
    return cache_dir() / "digests.json"


def _load_cache() -> dict[str, Any]:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _save_cache(cache: dict[str, Any]) -> None:
    path = _cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(cache))
        tmp.replace(path)
    except OSError:  # a read-only home: digests are recomputed next time, nothing else changes
        pass


def file_digest(path: Path, cache: dict[str, Any] | None = None) -> str:
    """SHA-256 of a file's bytes, memoised on (resolved path, size, mtime_ns)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    if cache is not None and key in cache:
        return cache[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    value = digest.hexdigest()
    if cache is not None:
        cache[key] = value
    return value


def files_digest(files: list[tuple[str, Path]]) -> str:
    """One digest over (name, content digest) pairs, in name order."""
    cache = _load_cache()
    before = dict(cache)
    total = hashlib.sha256()
    for name, path in sorted(files):
        total.update(f"{name}\t{file_digest(path, cache)}\n".encode())
    if cache != before:
        _save_cache(cache)
    return total.hexdigest()
