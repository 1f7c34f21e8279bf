"""The running top-k of connection frames against one top-k."""

from __future__ import annotations


import polars as pl
import torch

from compgraph.weights.frames import Kind, TopK


# ---- frames ------------------------------------------------------------------------------

def test_running_topk_over_blocks_equals_one_topk():
    torch.manual_seed(0)
    full = torch.randn(7, 50, dtype=torch.float64)
    top = TopK(7, 6, "cpu", torch.float64)
    for start in range(0, 50, 9):  # blocks, and rows in two slices
        top.add(full[:4, start:start + 9], layer=3, rows=slice(0, 4), index_offset=start)
        top.add(full[4:, start:start + 9], layer=3, rows=slice(4, 7), index_offset=start)
    frame = top.frame(Kind.VIRTUAL, src_layer=1)
    want = full.abs().topk(6, dim=1).indices
    for i in range(7):
        rows = frame.filter(pl.col("src_index") == i)
        assert rows["dst_index"].to_list() == want[i].tolist()
        assert rows["weight"].to_list() == full[i, want[i]].tolist()
    few = TopK(2, 5, "cpu", torch.float64)
    few.add(torch.zeros(2, 3, dtype=torch.float64), layer=0)  # fewer targets than k, zero weights kept
    assert few.frame(Kind.VIRTUAL, 0).height == 6
