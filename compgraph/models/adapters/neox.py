"""GPT-NeoX (Pythia): per-head interleaved fused QKV, parallel attention + MLP.

``query_key_value`` outputs, per head, [q | k | v] blocks of d_head; the ``q``/``k``/``v``
sites are those blocks (before rotary embeddings), and an overwrite of one rewrites only
its blocks. With ``use_parallel_residual`` (Pythia's default) attention and MLP both read
the block input, so there is no ``resid_mid`` (refused); without it, ``resid_mid`` is the
input of ``post_attention_layernorm``.
"""

from compgraph.models.adapters.base import Adapter, Tap

EMBED, ATTN, QKV, O, MLP_OUT = "gpt_neox.embed_in", "attention", "attention.query_key_value", "attention.dense", \
    "mlp.dense_4h_to_h"

ADAPTER = Adapter(
    name="neox",
    model_types=("gpt_neox",),
    layers="gpt_neox.layers",
    embed=EMBED,
    final_norm="gpt_neox.final_layer_norm",
    unembed="embed_out",
    attn_norm="input_layernorm",
    mlp_norm="post_attention_layernorm",
    q=QKV, k=None, v=None, o=O, qkv_layout="neox",
    mlp_in="mlp.dense_h_to_4h", mlp_out=MLP_OUT,
    parallel_attn_mlp="use_parallel_residual",
    sites={
        "embed": Tap(EMBED, root=True),
        "resid_pre": Tap("", arg="hidden_states"),
        "q": Tap(QKV, heads="q", part=0),
        "k": Tap(QKV, heads="kv", part=1),
        "v": Tap(QKV, heads="kv", part=2),
        "pattern": Tap(ATTN, item=1, writable=False),
        "attn_z": Tap(O, arg="input"),
        "attn_head_z": Tap(O, arg="input", heads="q"),
        "attn_out": Tap(O),
        "resid_mid": Tap("post_attention_layernorm", arg="input", aliased=True),
        "mlp_in": Tap("mlp", arg="hidden_states"),
        "mlp_pre_act": Tap("mlp.dense_h_to_4h"),
        "mlp_hidden": Tap(MLP_OUT, arg="input"),
        "mlp_out": Tap(MLP_OUT),
        "resid_post": Tap(""),
    },
)
