"""The ``tokens`` stage: one :Token node per token id the model can read and decode.

``uid`` is ``{tokenizer}:{id}`` where the tokenizer is identified by its vocabulary,
so models sharing a tokenizer share token nodes. Ids range over the tokenizer's ids
that have an embedding row (``StageContext.n_tokens``): padding rows of a padded
embedding matrix are not tokens, and no stage decodes into them.
"""

from __future__ import annotations

from compgraph import schema
from compgraph.engine.registry import register
from compgraph.engine.stage import Frames, Stage
from compgraph.stages import rows


class TokensStage(Stage):
    name = "tokens"
    version = 2
    description = "Token nodes for every id the model can read and decode."

    def shards(self, info, config, execution) -> list[str]:
        return ["all"]

    def run(self, ctx, config, shard: str) -> Frames:
        frame = rows.token_rows(ctx.model().tokenizer, ctx.tokenizer_id, ctx.n_tokens)
        return Frames.of(nodes=[(schema.TOKEN, frame)])


STAGE = register(TokensStage())
