"""The ``features`` stage: the latents of sparse dictionaries (SAEs, transcoders) as components.

One scoped run per ``--dictionary PATH`` (scope: the dictionary's name, see
:func:`dictionary_name`); its input digest covers the dictionary's files. A path may hold
several dictionaries (a circuit-tracer transcoder set, a sparsify run folder): each gets
its own ``:Dictionary`` node. Definitions, for feature j of dictionary D reading site s of
layer l, with ``f_j(x)`` its activation (:meth:`~compgraph.dictionaries.base.Dictionary.encode`
of the site's value x at one token):

- ``(:Model)-[:HAS_DICTIONARY]->(:Dictionary {kind, site, layer, width, source, activation,
  k, format, d_in, d_out, output_site, output_layer, name, model})``.
- ``:Feature {model, dictionary, layer, index}`` (uid :func:`compgraph.schema.feature_uid`
  of the dictionary's uid and j) with, over corpus tokens (special tokens left out):
  ``act_mean`` = mean of f_j, ``act_max`` = max of f_j, ``act_freq`` (density) = fraction
  of tokens with f_j ≠ 0.
- ``DECODES_TO via "out"``: decoder row ``W_dec[j]`` times the final norm's gain, through
  the unembedding; top and bottom ``top_k`` tokens (the decoder of
  :mod:`compgraph.extract.decode`, ranks as for neurons). Only for dictionaries whose
  output is a residual-stream write of width d_model (``DECODES_SITES``).
- ``ACTIVATES_ON``: among the corpus's ``tracked_tokens`` most frequent tokens, the
  ``top_k`` with the largest mean f_j (``mean_act``, ``max_act``, ``count``) among those
  seen at least ``ACTIVATES_MIN_COUNT`` times (a sparse feature's mean over one or two
  occurrences is one activation, not a preference), computed by the streaming statistics
  of :mod:`compgraph.extract.neurons`.
- ``CONNECTS {kind: "transcoder"}``: for transcoders, feature → feature weights to every
  later transcoder of the job (:mod:`compgraph.dictionaries.connections`), the top
  ``connections_k`` per source feature.

Shards: ``nodes`` (dictionaries, HAS_DICTIONARY, feature identities), ``decode/{i}``,
``stats/{a}-{b}`` (one corpus pass for dictionaries a..b of the path, grouped to fit the
memory budget) and ``connections/{i}`` (transcoders), i indexing the path's dictionaries.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl
import torch

from compgraph import schema
from compgraph.dictionaries.base import Dictionary, check_against
from compgraph.engine.registry import register
from compgraph.engine.stage import CorpusConfig, Frames, ModelInfo, Stage, check_top_k
from compgraph.errors import ConfigError

P = schema.Prop

RESIDUAL_SITES = ("resid_pre", "resid_mid", "resid_post")
DECODES_SITES = ("embed", *RESIDUAL_SITES, "attn_out", "mlp_out")
"""Output sites whose decoder rows are residual-stream directions (decoded through the LM head)."""
_D_MODEL_SITES = (*DECODES_SITES, "mlp_in")
_D_MLP_SITES = ("mlp_pre_act", "mlp_hidden")
_FILE_SUFFIXES = (".json", ".yaml", ".yml", ".safetensors")


# ---- reading, naming, identity ------------------------------------------------------------

ACTIVATES_MIN_COUNT = 5
"""ACTIVATES_ON ranks only tokens the corpus pass saw at least this many times."""

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
    from compgraph.dictionaries.readers import read_dictionary

    return tuple(read_dictionary(path))


def _stamp(target: Path) -> tuple:
    folder = target if target.is_dir() else target.parent
    return tuple(sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*") if p.is_file()))


def load_dictionaries(spec: str) -> list[Dictionary]:
    """Every dictionary at ``spec`` (:func:`compgraph.dictionaries.readers.read_dictionary`),
    read once per content of its folder."""
    from compgraph.dictionaries.readers import resolve_path

    target = resolve_path(spec)
    if not target.exists():
        raise ConfigError(f"{spec}: no such file or folder")
    return list(_read(str(target), _stamp(target)))


def dictionary_digest(spec: str) -> str:
    """SHA-256 over the files a dictionary is read from (config and weights)."""
    from compgraph.dictionaries.readers import resolve_path
    from compgraph.engine import identity

    target = resolve_path(spec)
    files = _source_files(target, load_dictionaries(spec))
    root = target if target.is_dir() else target.parent
    return identity.files_digest([(_relative(p, root), p) for p in files])


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


# ---- checks ---------------------------------------------------------------------------------

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
    from compgraph.models.adapters.registry import adapter_for

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


# ---- the stage ------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class FeaturesConfig(CorpusConfig):
    dictionaries: tuple[str, ...]
    """In a run: the dictionary it is about first, then the job's other transcoder paths
    (targets of its CONNECTS; empty when it holds no transcoder)."""
    top_k: int
    """Tokens per feature and sign (DECODES_TO) and per feature (ACTIVATES_ON)."""
    tracked_tokens: int
    """ACTIVATES_ON candidates: the corpus's most frequent tokens, this many."""
    connections_k: int
    """Transcoder feature → feature connections kept per source feature."""


def _has_transcoder(spec: str) -> bool:
    return any(d.kind == "transcoder" for d in load_dictionaries(spec))


def stats_groups(widths: list[int], tracked: int, memory_gb: float) -> list[tuple[int, int]]:
    """Consecutive (first, last) dictionary indices whose accumulators fit ``memory_gb``
    together (each group at least one dictionary)."""
    from compgraph.extract.neurons import LayerStats

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


class FeaturesStage(Stage):
    name = "features"
    version = 2  # 2: ACTIVATES_ON among tokens seen >= ACTIVATES_MIN_COUNT times
    Config = FeaturesConfig
    inputs = ("weights", "corpus")
    requires = ("tokens",)
    description = "Dictionary features (SAE / transcoder): decoding, activation statistics, transcoder CONNECTS."

    def instances(self, config: FeaturesConfig) -> list[tuple[str, FeaturesConfig]]:
        names = [dictionary_name(p) for p in config.dictionaries]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise ConfigError(f"two --dictionary paths share the name {clash[0]!r} (the folder name names "
                              f"the run): rename one folder")
        transcoders = [p for p in config.dictionaries if _has_transcoder(p)]
        out = []
        for spec, name in zip(config.dictionaries, names):
            peers = tuple(p for p in transcoders if p != spec) if spec in transcoders else ()
            out.append((name, replace(config, dictionaries=(spec, *peers))))
        return out

    def digests(self, config: FeaturesConfig) -> dict[str, str]:
        return {f"dictionary:{dictionary_name(p)}": dictionary_digest(p) for p in config.dictionaries}

    def validate(self, info: ModelInfo, config: FeaturesConfig) -> None:
        check_top_k(info, config.top_k)
        for d in load_dictionaries(config.dictionaries[0]):
            check_dictionary(info, d)

    def shards(self, info: ModelInfo, config: FeaturesConfig, execution) -> list[str]:
        dicts = load_dictionaries(config.dictionaries[0])
        shards = ["nodes"]
        shards += [f"decode/{i}" for i, d in enumerate(dicts) if decodable(d, info.d_model)]
        shards += [f"stats/{a}-{b}" for a, b in stats_groups([d.width for d in dicts], config.tracked_tokens,
                                                            execution.memory_gb)]
        shards += [f"connections/{i}" for i, d in enumerate(dicts) if d.kind == "transcoder"]
        return shards

    def run(self, ctx, config: FeaturesConfig, shard: str) -> Frames:
        spec = config.dictionaries[0]
        dicts = load_dictionaries(spec)
        uids = dictionary_uids(ctx.info.name, spec, dicts)
        if shard == "nodes":
            return dictionary_nodes(ctx.info.name, spec, dicts, uids)
        kind, _, which = shard.partition("/")
        if kind == "decode":
            i = int(which)
            return decode_features(ctx, dicts[i], uids[i], config.top_k)
        if kind == "stats":
            first, last = (int(x) for x in which.split("-"))
            return feature_stats(ctx, config, dicts[first:last + 1], uids[first:last + 1])
        i = int(which)
        return transcoder_connections(ctx, config, dicts[i], uids[i])


def decodable(d: Dictionary, d_model: int) -> bool:
    """Whether the decoder rows are residual-stream directions (DECODES_TO applies)."""
    return (d.output_site or d.site) in DECODES_SITES and d.d_out == d_model


def feature_identity(model: str, uid: str, d: Dictionary) -> pl.DataFrame:
    return pl.DataFrame({
        "uid": [schema.feature_uid(uid, j) for j in range(d.width)], P.MODEL: model, P.DICTIONARY: uid,
        P.LAYER: pl.Series([d.layer] * d.width, dtype=pl.Int64), P.INDEX: list(range(d.width)),
    })


def dictionary_nodes(model: str, spec: str, dicts: list[Dictionary], uids: list[str]) -> Frames:
    rows = pl.DataFrame([{
        "uid": uid, P.MODEL: model, "name": dictionary_name(spec), "kind": d.kind, "site": d.site,
        P.LAYER: d.layer, "width": d.width, "source": d.source, "activation": d.activation, "k": d.k,
        "format": d.format, "d_in": d.d_in, "d_out": d.d_out, "output_site": d.output_site or d.site,
        "output_layer": d.output_layer if d.output_site else d.layer, "hook": d.hook,
    } for d, uid in zip(dicts, uids)], schema_overrides={P.LAYER: pl.Int64, "k": pl.Int64, "output_layer": pl.Int64})
    edges = pl.DataFrame({"src": schema.model_uid(model), "dst": uids})
    return Frames.of(nodes=[(schema.DICTIONARY, rows), *((schema.FEATURE, feature_identity(model, uid, d))
                                                         for d, uid in zip(dicts, uids))],
                     edges=[(schema.HAS_DICTIONARY, edges)])


@torch.no_grad()
def decode_features(ctx, d: Dictionary, uid: str, top_k: int) -> Frames:
    """DECODES_TO via ``out`` of every feature of ``d`` (module docstring)."""
    from compgraph.extract.decode import decode_topk
    from compgraph.extract.neurons import decoded_edges
    from compgraph.models import weights

    loaded = ctx.model()
    model, adapter = loaded.model, loaded.adapter
    w_u = weights.unembed(model, adapter)[:, :ctx.n_tokens]
    rows = d.W_dec.to(device=w_u.device, dtype=w_u.dtype)
    decoded = decode_topk(rows, w_u, top_k, gain=weights.final_gain(model, adapter))
    features = [schema.feature_uid(uid, j) for j in range(d.width)]
    return Frames.of(edges=[(schema.DECODES_TO, decoded_edges(features, decoded, ctx.tokenizer_id, "out"))])


def _feature_reader(dicts: list[Dictionary]):
    def read(got: dict) -> dict:
        out = {}
        for i, d in enumerate(dicts):
            x = got[(d.site, d.layer)][0]
            f = d.encode(x.reshape(-1, x.shape[-1]))
            out[i] = (f, f.abs())  # active where f != 0 (topk_raw keeps negative values)
        return out

    return read


def feature_stats(ctx, config: FeaturesConfig, dicts: list[Dictionary], uids: list[str]) -> Frames:
    """Feature rows with act_mean / act_max / act_freq and ACTIVATES_ON, from one corpus pass."""
    from compgraph.extract.neurons import stat_columns, stream_stats, top_tokens

    loaded = ctx.model()
    device = next(loaded.model.parameters()).device
    dicts = [to_model(d, device) for d in dicts]
    stream = ctx.tokens(seq_len=config.seq_len, max_tokens=config.max_tokens)
    sites = sorted({(d.site, d.layer) for d in dicts}, key=lambda s: (s[1] if s[1] is not None else -1, s[0]))
    last = max(d.layer if d.layer is not None else 0 for d in dicts)
    advance = ctx.progress(f"features: activations {dictionary_name(config.dictionaries[0])} "
                           f"({len(dicts)} dictionar{'y' if len(dicts) == 1 else 'ies'})",
                           stream.n_batches(ctx.execution.batch_size))
    got = stream_stats(loaded.model, loaded.adapter, stream, sites, last, _feature_reader(dicts),
                       n_tokens=ctx.n_tokens, special_ids=ctx.special_ids(), tracked_limit=config.tracked_tokens,
                       batch_size=ctx.execution.batch_size, progress=advance)
    out = Frames()
    for i, (d, uid) in enumerate(zip(dicts, uids)):
        acc = got.stats[i]
        features = [schema.feature_uid(uid, j) for j in range(d.width)]
        nodes = feature_identity(ctx.info.name, uid, d).with_columns(stat_columns(acc, got.n_seen))
        edges = top_tokens(features, acc, got.tracked, got.counts, ctx.tokenizer_id, config.top_k,
                           min_count=ACTIVATES_MIN_COUNT)
        out += Frames.of(nodes=[(schema.FEATURE, nodes)], edges=[(schema.ACTIVATES_ON, edges)])
    return out


def transcoder_targets(model: str, specs: tuple[str, ...]) -> list[tuple[str, Dictionary]]:
    """(uid, dictionary) of every transcoder at the given paths."""
    return [(uid, d) for spec in specs
            for uid, d in zip(dictionary_uids(model, spec, load_dictionaries(spec)), load_dictionaries(spec))
            if d.kind == "transcoder"]


@torch.no_grad()
def transcoder_connections(ctx, config: FeaturesConfig, d: Dictionary, uid: str) -> Frames:
    """CONNECTS from ``d``'s features to every later transcoder of the run (its own path and peers)."""
    from compgraph.dictionaries.connections import connection_rows

    loaded = ctx.model()
    targets = transcoder_targets(ctx.info.name, config.dictionaries)
    rows, reached = connection_rows(loaded.model, loaded.adapter, (uid, d), targets, config.connections_k)
    nodes = [(schema.FEATURE, feature_identity(ctx.info.name, t_uid, t)) for t_uid, t in targets
             if t_uid in reached]
    return Frames.of(nodes=nodes, edges=[(schema.CONNECTS, rows)])


STAGE = register(FeaturesStage())
