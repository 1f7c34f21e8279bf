"""Llama family: Llama, SmolLM2, Mistral, Qwen2, Qwen3 (grouped KV heads, SwiGLU).

Decoder layers take ``hidden_states`` first (the model passes it by position, the layer
passes it to attention by keyword: taps name it, so both work). Qwen3 normalises q and k
per head after the projections: the ``q``/``k`` sites are the projections' outputs, before
that norm and before rotary embeddings.
"""

from compgraph.models.adapters.base import Adapter, Tap

EMBED, ATTN, O, MLP_OUT = "model.embed_tokens", "self_attn", "self_attn.o_proj", "mlp.down_proj"

SITES = {
    "embed": Tap(EMBED, root=True),
    "resid_pre": Tap("", arg="hidden_states"),
    "q": Tap(f"{ATTN}.q_proj", heads="q"),
    "k": Tap(f"{ATTN}.k_proj", heads="kv"),
    "v": Tap(f"{ATTN}.v_proj", heads="kv"),
    "pattern": Tap(ATTN, item=1, writable=False),
    "attn_z": Tap(O, arg="input"),
    "attn_head_z": Tap(O, arg="input", heads="q"),
    "attn_out": Tap(O),
    "resid_mid": Tap("post_attention_layernorm", arg="hidden_states", aliased=True),
    "mlp_in": Tap("mlp", arg="x"),
    "mlp_pre_act": Tap("mlp.gate_proj"),
    "mlp_hidden": Tap(MLP_OUT, arg="input"),
    "mlp_out": Tap(MLP_OUT),
    "resid_post": Tap(""),
}

ADAPTER = Adapter(
    name="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3"),
    layers="model.layers",
    embed=EMBED,
    final_norm="model.norm",
    unembed="lm_head",
    attn_norm="input_layernorm",
    mlp_norm="post_attention_layernorm",
    q=f"{ATTN}.q_proj", k=f"{ATTN}.k_proj", v=f"{ATTN}.v_proj", o=O,
    mlp_in="mlp.up_proj", mlp_gate="mlp.gate_proj", mlp_out=MLP_OUT,
    sites=SITES,
)
