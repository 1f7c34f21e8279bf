"""Mixtral-style sparse MoE (Mixtral, Qwen2-MoE, OLMoE): Llama attention, and a top-k
router over fused experts in place of the dense MLP.

Qwen2-MoE's shared expert is not an :Expert node (it is always on); its router-free
output is part of the residual stream like any MLP. Sites: ``mlp_out`` is the whole MoE
block's output (shared expert included); ``experts_in`` is the tuple (tokens [n, d_model],
top-k expert ids, top-k router weights) the fused experts module receives; there is no
``mlp_pre_act`` / ``mlp_hidden``. OLMoE with ``clip_qkv`` clamps the v projection's
output in place, so the ``v`` site then holds the clamped value.
"""

from dataclasses import replace

from compgraph.models.adapters.base import Tap
from compgraph.models.adapters.llama import ADAPTER as LLAMA

_DENSE_ONLY = ("mlp_pre_act", "mlp_hidden", "mlp_out")

ADAPTER = replace(
    LLAMA,
    name="moe",
    model_types=("mixtral", "qwen2_moe", "olmoe"),
    mlp_in=None, mlp_gate=None, mlp_out=None,
    router="mlp.gate", experts="mlp.experts",
    sites={
        **{name: tap for name, tap in LLAMA.sites.items() if name not in _DENSE_ONLY},
        "mlp_in": Tap("mlp", arg="hidden_states"),
        "mlp_out": Tap("mlp"),
        "experts_in": Tap("mlp.experts", arg=("hidden_states", "top_k_index", "top_k_weights")),
    },
)
