"""What planning needs to know about a model, read from its config (no weights)."""

from __future__ import annotations

from dataclasses import dataclass

from compgraph.models.adapters.base import Adapter
from compgraph.models.params import head_dims


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """A model's name and sizes, from its config alone."""

    name: str
    """The :Model node's name (``--name``)."""
    spec: str
    """What the user gave as MODEL."""
    architecture: str
    """The adapter's family name."""
    model_type: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_mlp: int
    n_experts: int
    vocab_size: int
    """Rows of the embedding matrix (may exceed the tokenizer's ids: padded vocabularies)."""
    is_moe: bool
    causal: bool

    @property
    def group(self) -> int:
        """Query heads per KV head."""
        return self.n_heads // self.n_kv_heads

    def layer_groups(self, per_group: int) -> list[tuple[int, int]]:
        """Consecutive (first, last) layer ranges of at most ``per_group`` layers."""
        per_group = max(1, per_group)
        return [(a, min(a + per_group, self.n_layers) - 1) for a in range(0, self.n_layers, per_group)]


def model_info(name: str, spec: str, config, adapter: Adapter) -> ModelInfo:
    """The :class:`ModelInfo` of a transformers ``config`` served by ``adapter``."""
    n_heads, n_kv, d_head = head_dims(config)
    return ModelInfo(
        name=name, spec=spec, architecture=adapter.name, model_type=config.model_type,
        n_layers=config.num_hidden_layers, d_model=config.hidden_size, n_heads=n_heads, n_kv_heads=n_kv,
        d_head=d_head,
        d_mlp=getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * config.hidden_size,
        n_experts=getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None) or 0,
        vocab_size=config.vocab_size, is_moe=adapter.is_moe, causal=adapter.causal,
    )


def n_tokens(tokenizer, info: ModelInfo) -> int:
    """Token ids that exist: the tokenizer's ids that have an embedding row.

    Padded vocabularies (Pythia, Qwen2) have more embedding rows than tokenizer ids;
    decoding, token nodes and statistics all range over these ids only."""
    return min(len(tokenizer), info.vocab_size)
