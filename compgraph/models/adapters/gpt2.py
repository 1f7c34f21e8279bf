"""GPT-2: fused Conv1D c_attn, GELU MLP, LayerNorm, tied unembedding.

``q``/``k``/``v`` are the three thirds of c_attn's output ([q | k | v], each n_heads ×
d_head); an overwrite of one rewrites only its third. Conv1D's input argument is ``x``.
"""

from compgraph.models.adapters.base import Adapter, Tap

EMBED, ATTN, QKV, O, MLP_OUT = "transformer.wte", "attn", "attn.c_attn", "attn.c_proj", "mlp.c_proj"

ADAPTER = Adapter(
    name="gpt2",
    model_types=("gpt2",),
    layers="transformer.h",
    embed=EMBED,
    final_norm="transformer.ln_f",
    unembed="lm_head",
    attn_norm="ln_1",
    mlp_norm="ln_2",
    q=QKV, k=None, v=None, o=O, qkv_layout="gpt2",
    mlp_in="mlp.c_fc", mlp_out=MLP_OUT,
    conv1d=True,
    sites={
        "embed": Tap(EMBED, root=True),
        "resid_pre": Tap("", arg="hidden_states"),
        "q": Tap(QKV, heads="q", part=0),
        "k": Tap(QKV, heads="kv", part=1),
        "v": Tap(QKV, heads="kv", part=2),
        "pattern": Tap(ATTN, item=1, writable=False),
        "attn_z": Tap(O, arg="x"),
        "attn_head_z": Tap(O, arg="x", heads="q"),
        "attn_out": Tap(O),
        "resid_mid": Tap("ln_2", arg="input", aliased=True),
        "mlp_in": Tap("mlp", arg="hidden_states"),
        "mlp_pre_act": Tap("mlp.c_fc"),
        "mlp_hidden": Tap(MLP_OUT, arg="x"),
        "mlp_out": Tap(MLP_OUT),
        "resid_post": Tap(""),
    },
)
