"""The d_head-rank factors against the matrices they factor."""

from __future__ import annotations


import torch

from compgraph.weights import factors
from tests.helpers.weights import (
    H, build, raw_heads,
)


def test_factor_identities_on_a_real_layout():
    """P^T P = W_OV^T W_OV and S S^T = M M^T for the folded factors of one layer."""
    model, adapter = build("gemma3_text")
    attn = factors.folded_attention(model, adapter, 1, torch.float64)
    p, s = factors.head_writers(attn), factors.head_readers(attn)
    Wq, Wk, Wv, Wo = raw_heads("gemma3_text", model, 1)
    for h in range(H):
        ov = Wv[h] @ Wo[h]
        assert torch.allclose(p[h].T @ p[h], ov.T @ ov, atol=1e-10)
        for side, m in (("q", Wq[h] @ Wk[h].T), ("k", Wk[h] @ Wq[h].T), ("v", ov)):
            assert torch.allclose(s[side][h] @ s[side][h].T, m @ m.T, atol=1e-10)
