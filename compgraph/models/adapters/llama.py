"""Llama family: Llama, SmolLM2, Mistral, Qwen2, Qwen3 (grouped KV heads, SwiGLU)."""

from compgraph.models.adapters.base import Adapter

ADAPTER = Adapter(
    name="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3"),
    layers="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    unembed="lm_head",
    attn_norm="input_layernorm",
    mlp_norm="post_attention_layernorm",
    q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj", o="self_attn.o_proj",
    mlp_in="mlp.up_proj", mlp_gate="mlp.gate_proj", mlp_out="mlp.down_proj",
)
