"""The ``neurons`` stage: MLP neurons of every dense layer with their LM-head decodings
(``DECODES_TO``), activation statistics (``act_mean``, ``act_max``, ``act_freq``) and top
activating tokens (``ACTIVATES_ON``); definitions in :mod:`compgraph.extract.neurons`.

Shards: ``decode/L{l}`` per layer, and ``stats/L{a}-L{b}``: one corpus pass per layer
group, the group sized to the job's memory budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from compgraph import schema
from compgraph.engine.registry import register
from compgraph.engine.stage import CorpusConfig, Frames, Stage, check_top_k
from compgraph.extract.neurons import neuron_decodings, neuron_stats
from compgraph.extract.stats import layers_per_pass, top_tokens, unit_stats
from compgraph.models.info import ModelInfo
from compgraph.stages import rows
from compgraph.stages.shared import TopKConfig, TrackedConfig


@dataclass(frozen=True, kw_only=True)
class NeuronsConfig(TopKConfig, TrackedConfig, CorpusConfig):
    """The corpus, ``top_k`` and ``tracked_tokens``."""


class NeuronsStage(Stage):
    name = "neurons"
    version = 2
    Config = NeuronsConfig
    inputs = ("weights", "corpus")
    requires = ("tokens",)
    description = "MLP neurons: weight decoding, activation statistics, top activating tokens."

    def skip_reason(self, info: ModelInfo) -> str | None:
        return "a MoE model has no dense MLP neurons" if info.is_moe else None

    def validate(self, info: ModelInfo, config: NeuronsConfig) -> None:
        check_top_k(info, config.top_k)

    def shards(self, info: ModelInfo, config: NeuronsConfig, execution) -> list[str]:
        per_pass = layers_per_pass(info.d_mlp, config.tracked_tokens, execution.memory_gb)
        return ([f"decode/L{layer}" for layer in range(info.n_layers)]
                + [f"stats/L{a}-L{b}" for a, b in info.layer_groups(per_pass)])

    def run(self, ctx, config: NeuronsConfig, shard: str) -> Frames:
        loaded, name = ctx.model(), ctx.info.name
        kind, layers = shard.split("/")
        if kind == "decode":
            layer = int(layers[1:])
            decodings = neuron_decodings(loaded.model, loaded.adapter, layer, config.top_k, ctx.n_tokens)
            uids = rows.neuron_uids(name, layer, decodings[0][1].top_ids.shape[0])
            edges = pl.concat([rows.decodes_rows(uids, decoded, ctx.tokenizer_id, via) for via, decoded in decodings])
            return Frames.of(nodes=[(schema.NEURON, rows.neuron_identity(name, layer, len(uids)))],
                             edges=[(schema.DECODES_TO, edges)])
        first, last = (int(x[1:]) for x in layers.split("-"))
        stream = ctx.tokens(seq_len=config.seq_len, max_tokens=config.max_tokens)
        advance = ctx.progress(f"neurons: activations L{first}-L{last}", stream.n_batches(ctx.execution.batch_size))
        got = neuron_stats(loaded.model, loaded.adapter, stream, range(first, last + 1), n_tokens=ctx.n_tokens,
                           special_ids=ctx.special_ids(), tracked_limit=config.tracked_tokens,
                           batch_size=ctx.execution.batch_size, progress=advance,
                           compute_dtype=ctx.stats_dtype())
        out = Frames()
        for layer in range(first, last + 1):
            acc = got.stats[layer]
            width = acc.total.shape[0]
            uids = rows.neuron_uids(name, layer, width)
            nodes = rows.neuron_identity(name, layer, width).with_columns(rows.stat_columns(unit_stats(acc, got.n_seen)))
            top = top_tokens(acc, got.tracked, got.counts, config.top_k)
            out += Frames.of(nodes=[(schema.NEURON, nodes)],
                             edges=[(schema.ACTIVATES_ON, rows.activates_rows(uids, top, ctx.tokenizer_id))])
        return out


STAGE = register(NeuronsStage())
