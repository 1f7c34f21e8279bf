"""Mixtral-style sparse MoE (Mixtral, Qwen2-MoE, OLMoE): a top-k router over fused experts.

Qwen2-MoE's shared expert is not an :Expert node (it is always on); its router-free
output is part of the residual stream like any MLP.
"""

from compgraph.models.adapters.base import Adapter

ADAPTER = Adapter(
    name="moe",
    model_types=("mixtral", "qwen2_moe", "olmoe"),
    layers="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    unembed="lm_head",
    attn_norm="input_layernorm",
    mlp_norm="post_attention_layernorm",
    q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj", o="self_attn.o_proj",
    router="mlp.gate", experts="mlp.experts",
)
