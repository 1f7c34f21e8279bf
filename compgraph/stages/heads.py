"""The ``heads`` stage: every query head with its pattern scores and OV copy score (one
shard); definitions in :mod:`compgraph.extract.heads`."""

from __future__ import annotations

from dataclasses import dataclass

from compgraph import schema
from compgraph.data.probes import head_probes
from compgraph.options import option
from compgraph.engine.registry import register
from compgraph.engine.stage import CorpusConfig, Frames, Stage
from compgraph.extract.heads import head_scores
from compgraph.models.info import ModelInfo
from compgraph.stages import rows


@dataclass(frozen=True, kw_only=True)
class HeadsConfig(CorpusConfig):
    head_tokens: int = option(16384, "Corpus tokens the text-based head scores average over.", minimum=8)
    """Corpus tokens the text-based scores average over."""
    seed: int = option(0, "Seed of random test sequences.")
    """Seed of the random repeated sequences and needles."""


class HeadsStage(Stage):
    name = "heads"
    version = 2
    Config = HeadsConfig
    inputs = ("weights", "corpus")
    description = "Attention heads: sink, previous-token, induction, duplicate, entropy, copy, retrieval."

    def shards(self, info: ModelInfo, config: HeadsConfig, execution) -> list[str]:
        return ["all"]

    def run(self, ctx, config: HeadsConfig, shard: str) -> Frames:
        loaded = ctx.model()
        stream = ctx.tokens(seq_len=config.seq_len, max_tokens=config.max_tokens)
        probes = head_probes(loaded.tokenizer, stream, batch_size=ctx.execution.batch_size,
                             max_rows=max(1, config.head_tokens // stream.seq_len), seed=config.seed)
        advance = ctx.progress("heads: corpus", len(probes.text))
        scores = head_scores(loaded.model, loaded.adapter, probes, advance)
        frame = rows.head_rows(ctx.info.name, scores, ctx.info.n_heads, ctx.info.n_kv_heads)
        return Frames.of(nodes=[(schema.HEAD, frame)])


STAGE = register(HeadsStage())
