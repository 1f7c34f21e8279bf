"""The ``experts`` stage: MoE experts with their routing load, most-routed tokens
(``ACTIVATES_ON``) and the decoding of their mean output (``DECODES_TO via "out"``);
definitions in :mod:`compgraph.extract.experts`. One shard per group of layers sized to
the memory budget."""

from __future__ import annotations

from dataclasses import dataclass

from compgraph import schema
from compgraph.engine.registry import register
from compgraph.engine.stage import CorpusConfig, Frames, Stage, check_top_k
from compgraph.extract.experts import expert_decodings, expert_stats, layers_per_pass, routed_tokens, routing_load
from compgraph.models.info import ModelInfo
from compgraph.stages import rows
from compgraph.stages.shared import TopKConfig


@dataclass(frozen=True, kw_only=True)
class ExpertsConfig(TopKConfig, CorpusConfig):
    """The corpus and ``top_k``."""


class ExpertsStage(Stage):
    name = "experts"
    version = 2
    Config = ExpertsConfig
    inputs = ("weights", "corpus")
    requires = ("tokens",)
    description = "MoE experts: routing load, routed tokens, decoding of the mean output."

    def skip_reason(self, info: ModelInfo) -> str | None:
        return None if info.is_moe else "a dense model has no experts"

    def validate(self, info: ModelInfo, config: ExpertsConfig) -> None:
        check_top_k(info, config.top_k)

    def shards(self, info: ModelInfo, config: ExpertsConfig, execution) -> list[str]:
        per_pass = layers_per_pass(info.n_experts, info.vocab_size, info.d_model, execution.memory_gb)
        return [f"L{a}-L{b}" for a, b in info.layer_groups(per_pass)]

    def run(self, ctx, config: ExpertsConfig, shard: str) -> Frames:
        loaded, name = ctx.model(), ctx.info.name
        first, last = (int(x[1:]) for x in shard.split("-"))
        stream = ctx.tokens(seq_len=config.seq_len, max_tokens=config.max_tokens)
        advance = ctx.progress(f"experts: routing L{first}-L{last}", stream.n_batches(ctx.execution.batch_size))
        stats = expert_stats(loaded.model, loaded.adapter, stream, range(first, last + 1), n_tokens=ctx.n_tokens,
                             special_ids=ctx.special_ids(), batch_size=ctx.execution.batch_size, progress=advance)
        out = Frames()
        for layer in range(first, last + 1):
            acc = stats[layer]
            uids = rows.expert_uids(name, layer, acc.load.shape[0])
            decoded = expert_decodings(loaded.model, loaded.adapter, acc, config.top_k, ctx.n_tokens)
            out += Frames.of(nodes=[(schema.EXPERT, rows.expert_rows(name, layer, routing_load(acc)))],
                             edges=[(schema.DECODES_TO, rows.decodes_rows(uids, decoded, ctx.tokenizer_id, "out")),
                                    (schema.ACTIVATES_ON, rows.routed_rows(uids, routed_tokens(acc, config.top_k),
                                                                           ctx.tokenizer_id))])
        return out


STAGE = register(ExpertsStage())
