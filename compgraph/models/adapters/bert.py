"""BERT encoders: no LM head, so components decode through the tied word embeddings."""

from compgraph.models.adapters.base import Adapter

ADAPTER = Adapter(
    name="bert",
    model_types=("bert",),
    layers="encoder.layer",
    embed="embeddings.word_embeddings",
    final_norm=None,
    unembed=None,
    attn_norm=None,  # post-norm: attention reads the previous layer's output norm
    mlp_norm="attention.output.LayerNorm",
    q="attention.self.query", k="attention.self.key", v="attention.self.value", o="attention.output.dense",
    mlp_in="intermediate.dense", mlp_out="output.dense",
    causal=False,
)
