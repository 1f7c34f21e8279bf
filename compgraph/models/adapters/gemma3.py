"""Gemma 3 (text): GeGLU MLP, RMSNorm gains stored as weight - 1, sandwich norms, tied unembedding."""

from compgraph.models.adapters.base import Adapter

ADAPTER = Adapter(
    name="gemma3",
    model_types=("gemma3_text", "gemma3"),
    layers="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    unembed="lm_head",
    attn_norm="input_layernorm",
    mlp_norm="pre_feedforward_layernorm",
    q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj", o="self_attn.o_proj",
    mlp_in="mlp.up_proj", mlp_gate="mlp.gate_proj", mlp_out="mlp.down_proj",
    norm_offset=1.0,
)
