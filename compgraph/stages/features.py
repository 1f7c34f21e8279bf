"""The ``features`` stage: the latents of sparse dictionaries (SAEs, transcoders) as components.

One scoped run per ``--dictionary PATH`` (scope: the dictionary's name, see
:func:`~compgraph.dictionaries.catalog.dictionary_name`); its input digest covers the dictionary's files. A path may hold
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
  output is a residual-stream write of width d_model (:func:`~compgraph.dictionaries.catalog.decodable`).
- ``ACTIVATES_ON``: among the corpus's ``tracked_tokens`` most frequent tokens, the
  ``top_k`` with the largest mean f_j (``mean_act``, ``max_act``, ``count``) among those
  seen at least ``ACTIVATES_MIN_COUNT`` times (a sparse feature's mean over one or two
  occurrences is one activation, not a preference), computed by the streaming statistics
  of :mod:`compgraph.extract.stats` (:mod:`compgraph.dictionaries.features`).
- ``CONNECTS {kind: "transcoder"}``: for transcoders, feature → feature weights to every
  later transcoder of the job (:mod:`compgraph.dictionaries.connections`), the top
  ``connections_k`` per source feature.

Shards: ``nodes`` (dictionaries, HAS_DICTIONARY, feature identities), ``decode/{i}``,
``stats/{a}-{b}`` (one corpus pass for dictionaries a..b of the path, grouped to fit the
memory budget) and ``connections/{i}`` (transcoders), i indexing the path's dictionaries.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from compgraph import schema
from compgraph.dictionaries.catalog import (
    check_dictionary, decodable, dictionary_digest, dictionary_name, dictionary_uids, has_transcoder,
    load_dictionaries, stats_groups, to_model, transcoders,
)
from compgraph.dictionaries.connections import connection_topk
from compgraph.dictionaries.features import ACTIVATES_MIN_COUNT, feature_decodings, feature_stats
from compgraph.engine.registry import register
from compgraph.engine.stage import CorpusConfig, Frames, Stage, check_top_k
from compgraph.errors import ConfigError
from compgraph.extract.stats import top_tokens, unit_stats
from compgraph.models.info import ModelInfo
from compgraph.stages import rows
from compgraph.stages.shared import ConnectionsKConfig, DictionariesConfig, TopKConfig, TrackedConfig


@dataclass(frozen=True, kw_only=True)
class FeaturesConfig(ConnectionsKConfig, TrackedConfig, TopKConfig, DictionariesConfig, CorpusConfig):
    """The corpus, the dictionaries (in a run: the dictionary it is about first, then the
    job's other transcoder paths, the targets of its CONNECTS; none when it holds no
    transcoder), ``top_k``, ``tracked_tokens`` and ``connections_k`` (transcoder feature →
    feature connections kept per source feature)."""


class FeaturesStage(Stage):
    name = "features"
    version = 2  # 2: ACTIVATES_ON among tokens seen >= ACTIVATES_MIN_COUNT times
    Config = FeaturesConfig
    inputs = ("weights", "corpus")
    requires = ("tokens",)
    description = "Dictionary features (SAE / transcoder): decoding, activation statistics, transcoder CONNECTS."

    def instances(self, config: FeaturesConfig) -> list[tuple[str, FeaturesConfig]]:
        if not config.dictionaries:
            raise ConfigError("the features stage needs --dictionary")
        names = [dictionary_name(p) for p in config.dictionaries]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise ConfigError(f"two --dictionary paths share the name {clash[0]!r} (the folder name names "
                              f"the run): rename one folder")
        with_transcoders = [p for p in config.dictionaries if has_transcoder(p)]
        out = []
        for spec, name in zip(config.dictionaries, names):
            peers = tuple(p for p in with_transcoders if p != spec) if spec in with_transcoders else ()
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
            return self._nodes(ctx, spec, dicts, uids)
        kind, _, which = shard.partition("/")
        if kind == "decode":
            i = int(which)
            return self._decode(ctx, dicts[i], uids[i], config.top_k)
        if kind == "stats":
            first, last = (int(x) for x in which.split("-"))
            return self._stats(ctx, config, dicts[first:last + 1], uids[first:last + 1])
        i = int(which)
        return self._connections(ctx, config, dicts[i], uids[i])

    @staticmethod
    def _nodes(ctx, spec: str, dicts, uids: list[str]) -> Frames:
        name = ctx.info.name
        nodes, has = rows.dictionary_rows(name, dictionary_name(spec), dicts, uids)
        return Frames.of(nodes=[(schema.DICTIONARY, nodes), *((schema.FEATURE, rows.feature_identity(name, uid, d))
                                                              for d, uid in zip(dicts, uids))],
                         edges=[(schema.HAS_DICTIONARY, has)])

    @staticmethod
    def _decode(ctx, d, uid: str, top_k: int) -> Frames:
        loaded = ctx.model()
        decoded = feature_decodings(loaded.model, loaded.adapter, d, top_k, ctx.n_tokens)
        edges = rows.decodes_rows(rows.feature_uids(uid, d.width), decoded, ctx.tokenizer_id, "out")
        return Frames.of(edges=[(schema.DECODES_TO, edges)])

    @staticmethod
    def _stats(ctx, config: FeaturesConfig, dicts, uids: list[str]) -> Frames:
        loaded = ctx.model()
        device = next(loaded.model.parameters()).device
        dicts = [to_model(d, device) for d in dicts]
        stream = ctx.tokens(seq_len=config.seq_len, max_tokens=config.max_tokens)
        advance = ctx.progress(f"features: activations {dictionary_name(config.dictionaries[0])} "
                               f"({len(dicts)} dictionar{'y' if len(dicts) == 1 else 'ies'})",
                               stream.n_batches(ctx.execution.batch_size))
        got = feature_stats(loaded.model, loaded.adapter, stream, dicts, n_tokens=ctx.n_tokens,
                            special_ids=ctx.special_ids(), tracked_limit=config.tracked_tokens,
                            batch_size=ctx.execution.batch_size, progress=advance)
        out = Frames()
        for i, (d, uid) in enumerate(zip(dicts, uids)):
            acc = got.stats[i]
            nodes = rows.feature_identity(ctx.info.name, uid, d).with_columns(rows.stat_columns(unit_stats(acc, got.n_seen)))
            top = top_tokens(acc, got.tracked, got.counts, config.top_k, min_count=ACTIVATES_MIN_COUNT)
            edges = rows.activates_rows(rows.feature_uids(uid, d.width), top, ctx.tokenizer_id)
            out += Frames.of(nodes=[(schema.FEATURE, nodes)], edges=[(schema.ACTIVATES_ON, edges)])
        return out

    @staticmethod
    @torch.no_grad()
    def _connections(ctx, config: FeaturesConfig, d, uid: str) -> Frames:
        """CONNECTS from ``d``'s features to every later transcoder of the run (its own path and peers)."""
        loaded = ctx.model()
        targets = transcoders(ctx.info.name, config.dictionaries)
        top = connection_topk(loaded.model, loaded.adapter, d, [t for _, t in targets], config.connections_k)
        edges, reached = rows.transcoder_rows(uid, d, top, targets)
        nodes = [(schema.FEATURE, rows.feature_identity(ctx.info.name, t_uid, t)) for t_uid, t in targets
                 if t_uid in reached]
        return Frames.of(nodes=nodes, edges=[(schema.CONNECTS, edges)])


STAGE = register(FeaturesStage())
