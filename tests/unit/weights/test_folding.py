"""Norm folding: detection and folded reads against reads through the norm."""

from __future__ import annotations


import pytest
import torch
import transformers as T

from compgraph.weights import folding
from tests.helpers.weights import (
    D,
)


# ---- norm folding ------------------------------------------------------------------------

def test_norm_detection():
    assert folding.is_layernorm(torch.nn.LayerNorm(8))
    assert folding.is_layernorm(torch.nn.LayerNorm(8, bias=False))
    assert not folding.is_layernorm(T.models.llama.modeling_llama.LlamaRMSNorm(8))
    assert not folding.is_layernorm(torch.nn.RMSNorm(8))


@pytest.mark.parametrize("norm", [torch.nn.LayerNorm(D, bias=False), torch.nn.RMSNorm(D, eps=1e-6)])
def test_folded_read_equals_read_through_the_norm_up_to_its_scale(norm):
    torch.manual_seed(0)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(D))
    x, w = torch.randn(6, D, dtype=torch.float64), torch.randn(D, 5, dtype=torch.float64)
    fold = folding.Fold(norm.weight.detach().double(), folding.is_layernorm(norm))
    centred = x - x.mean(-1, keepdim=True) if fold.center else x
    scale = centred.square().mean(-1, keepdim=True).add(norm.eps).sqrt()  # the input-dependent part
    with torch.no_grad():
        direct = norm.double()(x) @ w
    assert torch.allclose(direct, (x @ folding.fold_read(w, fold, dim=0)) / scale, atol=1e-10)
