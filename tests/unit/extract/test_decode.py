"""LM-head decoding: the block-wise top-k selection against a full sort."""

from __future__ import annotations

import torch

from compgraph.extract.decode import decode_topk


def test_decode_topk_matches_full_sort_on_odd_vocabulary():
    torch.manual_seed(1)
    directions, unembed = torch.randn(40, 16, dtype=torch.float64), torch.randn(16, 5003, dtype=torch.float64)
    got = decode_topk(directions, unembed, 7, chunk=9, block=64)
    full = (directions @ unembed).sort(dim=1, descending=True)
    assert torch.equal(got.top_ids, full.indices[:, :7])
    assert torch.equal(got.bottom_ids, full.indices.flip(1)[:, :7])
