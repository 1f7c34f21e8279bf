"""Gemma 3 (text): the Llama layout with GeGLU, sandwich norms and RMSNorm gains stored
as weight - 1.

Sandwich norms: attention's output goes through ``post_attention_layernorm`` before it is
added to the residual, and the MLP reads ``pre_feedforward_layernorm``. So ``resid_mid`` is
the input of ``pre_feedforward_layernorm`` (resid_pre + post_attention_layernorm(attn_out)),
and ``attn_out`` / ``mlp_out`` are the o / down projections' outputs, before their post-norms.
q and k are normalised per head after the projections: the ``q``/``k`` sites precede that.
"""

from dataclasses import replace

from compgraph.models.adapters.base import Tap
from compgraph.models.adapters.llama import ADAPTER as LLAMA

ADAPTER = replace(
    LLAMA,
    name="gemma3",
    model_types=("gemma3_text", "gemma3"),
    mlp_norm="pre_feedforward_layernorm",
    norm_offset=1.0,
    additive_blocks=False,
    sites={**LLAMA.sites, "resid_mid": Tap("pre_feedforward_layernorm", arg="x", aliased=True)},
)
