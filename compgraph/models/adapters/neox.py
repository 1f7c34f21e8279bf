"""GPT-NeoX (Pythia): per-head interleaved fused QKV, parallel attention + MLP."""

from compgraph.models.adapters.base import Adapter

ADAPTER = Adapter(
    name="neox",
    model_types=("gpt_neox",),
    layers="gpt_neox.layers",
    embed="gpt_neox.embed_in",
    final_norm="gpt_neox.final_layer_norm",
    unembed="embed_out",
    attn_norm="input_layernorm",
    mlp_norm="post_attention_layernorm",
    q="attention.query_key_value", k=None, v=None, o="attention.dense", qkv_layout="neox",
    mlp_in="mlp.dense_h_to_4h", mlp_out="mlp.dense_4h_to_h",
)
