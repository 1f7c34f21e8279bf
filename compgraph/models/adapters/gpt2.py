"""GPT-2: fused Conv1D c_attn, GELU MLP, LayerNorm, tied unembedding."""

from compgraph.models.adapters.base import Adapter

ADAPTER = Adapter(
    name="gpt2",
    model_types=("gpt2",),
    layers="transformer.h",
    embed="transformer.wte",
    final_norm="transformer.ln_f",
    unembed="lm_head",
    attn_norm="ln_1",
    mlp_norm="ln_2",
    q="attn.c_attn", k=None, v=None, o="attn.c_proj", qkv_layout="gpt2",
    mlp_in="mlp.c_fc", mlp_out="mlp.c_proj",
    conv1d=True,
)
