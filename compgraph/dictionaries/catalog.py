"""Dictionaries by path: read once per content of their folder, named, digested, and
checked against a model.

A ``--dictionary`` path (SAELens, sparsify, circuit-tracer; :mod:`compgraph.dictionaries.readers`)
may hold several dictionaries (a transcoder set, a sparsify run folder). Its *name* is its
folder's name (:func:`dictionary_name`); its *digest* covers the files it is read from.
"""

from __future__ import annotations

import functools
import re
from dataclasses import replace
from pathlib import Path

import torch

from compgraph import schema
from compgraph.data.digests import files_digest
from compgraph.dictionaries.base import Dictionary, check_against
from compgraph.dictionaries.readers import read_dictionary, resolve_path
from compgraph.errors import ConfigError
from compgraph.extract.stats import LayerStats
from compgraph.models.adapters.registry import adapter_for
from compgraph.models.info import ModelInfo

RESIDUAL_SITES = ("resid_pre", "resid_mid", "resid_post")
DECODES_SITES = ("embed", *RESIDUAL_SITES, "attn_out", "mlp_out")
"""Output sites whose decoder rows are residual-stream directions (decoded through the LM head)."""
_D_MODEL_SITES = (*DECODES_SITES, "mlp_in")
_D_MLP_SITES = ("mlp_pre_act", "mlp_hidden")
_FILE_SUFFIXES = (".json", ".yaml", ".yml", ".safetensors")


def dictionary_name(spec: str) -> str:
    """The scope name of a ``--dictionary`` spec: its folder's name (the parent folder for a
    ``cfg.json`` / ``config.yaml`` / weights file; the last part of a hub id), with every
    character outside ``[A-Za-z0-9._-]`` replaced by ``-``."""
    text = str(spec).split("@")[0].rstrip("/\\")
    path = Path(text)
    if path.suffix in _FILE_SUFFIXES:
        path = path.parent
    name = path.name or text
    return re.sub(r"[^A-Za-z0-9._-]", "-", name)


def _source_files(target: Path, dictionaries: list[Dictionary]) -> list[Path]:
    """Plain files next to the dictionaries: the path's own files and each dictionary's source."""
    places = [target] + [Path(d.source) for d in dictionaries]
    files: set[Path] = set()
    for place in places:
        if place.is_file():
            files.add(place)
        elif place.is_dir():
            files |= {p for p in place.iterdir() if p.is_file() and p.suffix in _FILE_SUFFIXES}
    return sorted(files)


@functools.lru_cache(maxsize=16)
def _read(path: str, stamp: tuple) -> tuple[Dictionary, ...]:
    return tuple(read_dictionary(path))


def _stamp(target: Path) -> tuple:
    folder = target if target.is_dir() else target.parent
    return tuple(sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*") if p.is_file()))


def load_dictionaries(spec: str) -> list[Dictionary]:
    """Every dictionary at ``spec`` (:func:`compgraph.dictionaries.readers.read_dictionary`),
    read once per content of its folder."""
    target = resolve_path(spec)
    if not target.exists():
        raise ConfigError(f"{spec}: no such file or folder")
    return list(_read(str(target), _stamp(target)))


def dictionary_digest(spec: str) -> str:
    """SHA-256 over the files a dictionary is read from (config and weights)."""
    target = resolve_path(spec)
    files = _source_files(target, load_dictionaries(spec))
    root = target if target.is_dir() else target.parent
    return files_digest([(_relative(p, root), p) for p in files])


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def dictionary_uids(model: str, spec: str, dictionaries: list[Dictionary]) -> list[str]:
    name = dictionary_name(spec)
    return [schema.dictionary_uid(model, name, d.site, d.layer) for d in dictionaries]


def to_model(d: Dictionary, device, dtype: torch.dtype = torch.float32) -> Dictionary:
    """The dictionary's tensors on ``device`` in ``dtype``."""
    moved = {name: getattr(d, name).to(device=device, dtype=dtype)
             for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold", "W_skip") if getattr(d, name) is not None}
    return replace(d, **moved)


def site_width(info: ModelInfo, site: str) -> int:
    """The width of a site's value per token (the last dimension)."""
    if site in _D_MODEL_SITES:
        return info.d_model
    if site in _D_MLP_SITES:
        return info.d_mlp
    if site == "attn_z":
        return info.n_heads * info.d_head
    raise ConfigError(f"a dictionary on site {site!r} is not supported")


def check_dictionary(info: ModelInfo, d: Dictionary) -> None:
    """Refuse (one-line ConfigError) a dictionary that does not fit the model: a site it lacks,
    a layer out of range, an input or output width other than the site's."""
    adapter = adapter_for(info.model_type)
    for site, layer, width, what in ((d.site, d.layer, d.d_in, "input"), (d.output_site or d.site,
                                                                          d.output_layer, d.d_out, "output")):
        if site not in adapter.sites:
            raise ConfigError(f"{d.source}: site {site!r} does not exist in a {adapter.name} model")
        if layer is None and site != "embed" or layer is not None and not 0 <= layer < info.n_layers:
            raise ConfigError(f"{d.source}: layer {layer} is out of range for {info.name} "
                              f"({info.n_layers} layers: 0..{info.n_layers - 1})")
        expected = site_width(info, site)
        if what == "input":
            check_against(d, expected)
        elif width != expected:
            raise ConfigError(f"{d.source}: dictionary output width {width} does not match the model's {site} "
                              f"width {expected} at layer {layer}")


def decodable(d: Dictionary, d_model: int) -> bool:
    """Whether the decoder rows are residual-stream directions (they decode through the LM head)."""
    return (d.output_site or d.site) in DECODES_SITES and d.d_out == d_model


def has_transcoder(spec: str) -> bool:
    return any(d.kind == "transcoder" for d in load_dictionaries(spec))


def transcoders(model: str, specs: tuple[str, ...]) -> list[tuple[str, Dictionary]]:
    """(uid, dictionary) of every transcoder at the given paths."""
    return [(uid, d) for spec in specs
            for uid, d in zip(dictionary_uids(model, spec, load_dictionaries(spec)), load_dictionaries(spec))
            if d.kind == "transcoder"]


def stats_groups(widths: list[int], tracked: int, memory_gb: float) -> list[tuple[int, int]]:
    """Consecutive (first, last) dictionary indices whose accumulators fit ``memory_gb``
    together (each group at least one dictionary)."""
    groups, start, used = [], 0, 0
    budget = memory_gb * 1e9
    for i, width in enumerate(widths):
        need = LayerStats.nbytes(width, tracked)
        if i > start and used + need > budget:
            groups.append((start, i - 1))
            start, used = i, 0
        used += need
    if widths:
        groups.append((start, len(widths) - 1))
    return groups
