"""Mixtral-style sparse MoE (Mixtral, Qwen2-MoE, OLMoE): Llama attention, and a top-k
router over fused experts in place of the dense MLP.

Qwen2-MoE's shared expert is not an :Expert node (it is always on); its router-free
output is part of the residual stream like any MLP.
"""

from dataclasses import replace

from compgraph.models.adapters.llama import ADAPTER as LLAMA

ADAPTER = replace(
    LLAMA,
    name="moe",
    model_types=("mixtral", "qwen2_moe", "olmoe"),
    mlp_in=None, mlp_gate=None, mlp_out=None,
    router="mlp.gate", experts="mlp.experts",
)
