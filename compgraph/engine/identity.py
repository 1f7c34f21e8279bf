"""Run identity: what makes two computations of a stage the same computation.

A run is keyed on (model name, stage, stage version, the stage's own configuration,
the digests of its inputs). Input digests are SHA-256 over file contents, so
replacing the weights behind the same path or name gives another run:

- ``weights``: every file of the model (the GGUF file, or the directory's config,
  weights and tokenizer files), by relative name and content.
- ``corpus``: the corpus content (see :mod:`compgraph.corpus`).
- later stages add their own (task files, dictionaries).

Hashing a multi-GB checkpoint takes seconds; digests are cached per file under
``$COMPGRAPH_CACHE`` (default ``~/.cache/compgraph``) keyed on (path, size, mtime),
so a file rewritten in place is hashed again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

_CHUNK = 1 << 22
_WEIGHT_SUFFIXES = (".gguf", ".safetensors", ".bin", ".json", ".model", ".txt", ".tiktoken", ".py")


def cache_dir() -> Path:
    return Path(os.environ.get("COMPGRAPH_CACHE") or Path.home() / ".cache" / "compgraph")


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


def model_files(location: str, gguf_file: str | None) -> list[tuple[str, Path]]:
    """The files whose content determines a model: its GGUF, or its directory's files."""
    root = Path(location)
    if gguf_file:
        return [(gguf_file, root / gguf_file)]
    return [(p.relative_to(root).as_posix(), p) for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in _WEIGHT_SUFFIXES and ".cache" not in p.parts]


def identity_hash(*, model: str, stage: str, version: int, config: Any, inputs: dict[str, str]) -> str:
    """The hash a run uid is built from; independent of option order and of execution
    settings (device, batch size), which are not part of a stage's configuration.

    Config fields whose value is empty (None, [], {}) are left out: an optional field
    added to a stage's config later, at its empty default, means "not used", so the
    runs made before it existed keep their identity and are not recomputed."""
    payload = {
        "model": model, "stage": stage, "version": version,
        "config": {k: v for k, v in config_dict(config).items() if v not in (None, [], {})},
        "inputs": dict(sorted(inputs.items())),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def config_dict(config: Any) -> dict[str, Any]:
    """A stage config as a plain dict (tuples as lists), for hashing and for the :Run node."""
    if config is None:
        return {}
    return json.loads(json.dumps(dataclasses.asdict(config), sort_keys=True, default=str))
