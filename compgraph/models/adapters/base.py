"""The architecture adapter: a declarative map from canonical sites to a model's modules.

Module paths are relative to the model root (``layers``, ``embed``, ``final_norm``,
``unembed``) or to one layer (every per-layer field). Weight accessors in
:mod:`compgraph.models.weights` read them into canonical orientation; hooks in
:mod:`compgraph.models.hooks` attach to them. An architecture module only fills in
this dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

QKVLayout = Literal["separate", "gpt2", "neox"]


@dataclass(frozen=True, kw_only=True)
class Adapter:
    """Where the canonical sites of one architecture family live."""

    name: str
    """Short family name, e.g. ``llama``."""
    model_types: tuple[str, ...]
    """``config.model_type`` values this adapter serves."""
    layers: str
    """The ModuleList of blocks."""
    embed: str
    """Token embedding module (``.weight`` is [vocab, d_model])."""
    final_norm: str | None
    """Norm before the unembedding; None when the model has none before decoding."""
    unembed: str | None
    """LM head module; None means decode through the (tied) token embedding."""
    attn_norm: str | None
    """Norm feeding attention, relative to a layer; None for post-norm encoders."""
    mlp_norm: str
    """Norm feeding the MLP, relative to a layer."""
    q: str
    """Query projection (or the fused QKV module when ``qkv_layout`` is not separate)."""
    k: str | None
    v: str | None
    o: str
    """Attention output projection."""
    qkv_layout: QKVLayout = "separate"
    """``gpt2``: Conv1D c_attn [d, 3d]; ``neox``: Linear [n_heads*3*d_head, d] per-head interleaved."""
    mlp_in: str | None = None
    """MLP up/in projection; None for MoE layers."""
    mlp_gate: str | None = None
    """Gate projection of a gated MLP (SwiGLU/GeGLU); None otherwise."""
    mlp_out: str | None = None
    """MLP down/out projection."""
    conv1d: bool = False
    """GPT-2 style Conv1D weights, stored [in, out] instead of Linear's [out, in]."""
    norm_offset: float = 0.0
    """RMSNorm gain is ``weight + norm_offset`` (Gemma stores weight - 1)."""
    router: str | None = None
    """MoE router (``.weight`` [n_experts, d_model]), relative to a layer."""
    experts: str | None = None
    """Fused experts module with ``gate_up_proj`` [E, 2*d_ff, d] and ``down_proj`` [E, d, d_ff]."""
    causal: bool = True
    """False for encoders (BERT): no previous-token direction to attention."""

    @property
    def gated(self) -> bool:
        return self.mlp_gate is not None

    @property
    def is_moe(self) -> bool:
        return self.experts is not None
