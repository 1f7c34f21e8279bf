"""Gemma 3 (text): the Llama layout with GeGLU, sandwich norms (the MLP reads
``pre_feedforward_layernorm``) and RMSNorm gains stored as weight - 1."""

from dataclasses import replace

from compgraph.models.adapters.llama import ADAPTER as LLAMA

ADAPTER = replace(
    LLAMA,
    name="gemma3",
    model_types=("gemma3_text", "gemma3"),
    mlp_norm="pre_feedforward_layernorm",
    norm_offset=1.0,
)
