"""The architecture adapter: a declarative map from canonical sites to a model's modules.

Module paths are relative to the model root (``layers``, ``embed``, ``final_norm``,
``unembed``) or to one layer (every per-layer field). Weight accessors in
:mod:`compgraph.models.params` read them into canonical orientation; hooks in
:mod:`compgraph.models.hooks` attach where the adapter's ``sites`` table says (a
:class:`Tap` per canonical site name). An architecture module only fills in these
dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

QKVLayout = Literal["separate", "gpt2", "neox"]
HeadSplit = Literal["q", "kv"]

SITE_NAMES = frozenset({
    "embed", "resid_pre", "q", "k", "v", "pattern", "attn_z", "attn_head_z", "attn_out", "resid_mid",
    "mlp_in", "mlp_pre_act", "mlp_hidden", "mlp_out", "experts_in", "resid_post",
})
"""The canonical sites (described in :mod:`compgraph.models.hooks`)."""


@dataclass(frozen=True)
class Tap:
    """Where one site's tensor is found: a module, and which of its inputs or outputs."""

    path: str
    """Module path relative to a layer (``""``: the layer itself), or to the model root when ``root``."""
    arg: str | tuple[str, ...] | None = None
    """Input side: the name of the ``forward`` argument holding the tensor, found among the
    keywords or at its position in the signature (a tuple: the site is that tuple of
    arguments). None: the site is on the output side."""
    item: int | None = None
    """Output side: index into a tuple output; None when the output is the tensor itself."""
    heads: HeadSplit | None = None
    """Split the last dimension into heads: ``"q"`` n_heads × d_head, ``"kv"`` n_kv_heads × d_head."""
    part: int | None = None
    """Slice 0 (q), 1 (k) or 2 (v) of a fused QKV output laid out as the adapter's ``qkv_layout``."""
    root: bool = False
    """The path is relative to the model root and the site has no layer."""
    aliased: bool = False
    """The tensor is also held outside the module (the residual branch keeps the very tensor
    the norm reads), so an overwrite writes into it in place rather than replacing the argument."""
    writable: bool = True
    """False for values the model does not read back (attention weights it returns)."""

    @property
    def side(self) -> Literal["input", "output"]:
        return "output" if self.arg is None else "input"


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
    parallel_attn_mlp: bool | str = False
    """Attention and MLP both read the block input (no ``resid_mid``). A string names the
    config flag that decides per model (GPT-NeoX: ``use_parallel_residual``)."""
    additive_blocks: bool = True
    """Attention's and the MLP's outputs are added to the residual stream as computed (False:
    a norm follows each, as Gemma 3's sandwich norms): per-head contributions are defined."""
    sites: Mapping[str, Tap] = field(default_factory=dict, hash=False)
    """Canonical site name -> :class:`Tap`; see :mod:`compgraph.models.hooks` for the names."""

    @property
    def gated(self) -> bool:
        return self.mlp_gate is not None

    @property
    def is_moe(self) -> bool:
        return self.experts is not None

    def is_parallel(self, config) -> bool:
        """Whether this model's attention and MLP read the same residual stream."""
        if isinstance(self.parallel_attn_mlp, str):
            return bool(getattr(config, self.parallel_attn_mlp))
        return self.parallel_attn_mlp
