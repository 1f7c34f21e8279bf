"""BERT encoders: no LM head, so components decode through the tied word embeddings.

Post-norm: the attention block's output is LayerNorm(resid_pre + attn_out), so
``resid_mid`` is the output of ``attention.output.LayerNorm`` (what the MLP reads and the
MLP's residual adds to), and ``resid_post`` is LayerNorm(resid_mid + mlp_out).
"""

from compgraph.models.adapters.base import Adapter, Tap

EMBED, SELF, O, MLP_OUT = "embeddings.word_embeddings", "attention.self", "attention.output.dense", "output.dense"

ADAPTER = Adapter(
    name="bert",
    model_types=("bert",),
    layers="encoder.layer",
    embed=EMBED,
    final_norm=None,
    unembed=None,
    attn_norm=None,  # post-norm: attention reads the previous layer's output norm
    mlp_norm="attention.output.LayerNorm",
    q=f"{SELF}.query", k=f"{SELF}.key", v=f"{SELF}.value", o=O,
    mlp_in="intermediate.dense", mlp_out=MLP_OUT,
    causal=False,
    sites={
        "embed": Tap(EMBED, root=True),
        "resid_pre": Tap("", arg="hidden_states"),
        "q": Tap(f"{SELF}.query", heads="q"),
        "k": Tap(f"{SELF}.key", heads="kv"),
        "v": Tap(f"{SELF}.value", heads="kv"),
        "pattern": Tap(SELF, item=1, writable=False),
        "attn_z": Tap(O, arg="input"),
        "attn_head_z": Tap(O, arg="input", heads="q"),
        "attn_out": Tap(O),
        "resid_mid": Tap("attention.output.LayerNorm"),
        "mlp_in": Tap("intermediate", arg="hidden_states"),
        "mlp_pre_act": Tap("intermediate.dense"),
        "mlp_hidden": Tap(MLP_OUT, arg="input"),
        "mlp_out": Tap(MLP_OUT),
        "resid_post": Tap(""),
    },
)
