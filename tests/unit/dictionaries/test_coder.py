"""The TopK coder's sparse gradients against dense autograd."""

from __future__ import annotations

import math

import torch

from compgraph.dictionaries.coder import TopKCoder
from compgraph.dictionaries.training import loss_terms


def dense_loss(coder: TopKCoder, x: torch.Tensor, dead: torch.Tensor, alpha: float) -> torch.Tensor:
    """The loss of the module docstring written densely, for autograd to differentiate."""
    pre = (x - coder.b_dec) @ coder.W_enc + coder.b_enc
    top = pre.topk(coder.k, dim=-1)
    f = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
    y_hat = f @ coder.W_dec + coder.b_dec
    variance = (x - x.mean(0)).pow(2).sum()
    n_dead, half = int(dead.sum()), x.shape[1] // 2
    aux = pre.masked_fill(~dead, -math.inf).topk(min(half, n_dead), dim=-1)
    e_hat = torch.zeros_like(pre).scatter(-1, aux.indices, aux.values) @ coder.W_dec
    auxk = min(n_dead / half, 1.0) * ((x - y_hat).detach() - e_hat).pow(2).sum() / variance
    return (x - y_hat).pow(2).sum() / variance + alpha * auxk


def test_sparse_gradients_equal_dense_autograd():
    g = torch.Generator().manual_seed(5)
    coder = TopKCoder(6, 6, 20, 3, subtract_b_dec=True, generator=g).double()
    with torch.no_grad():
        coder.b_dec.copy_(torch.randn(6, generator=g, dtype=torch.float64))
        coder.b_enc.copy_(torch.randn(20, generator=g, dtype=torch.float64) * 0.1)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    dead = torch.zeros(20, dtype=torch.bool)
    dead[[1, 4, 7, 9, 15]] = True
    fvu, auxk, _, _ = loss_terms(coder, x, x, dead)
    sparse = torch.autograd.grad(fvu + 0.5 * auxk, list(coder.parameters()))
    dense = torch.autograd.grad(dense_loss(coder, x, dead, 0.5), list(coder.parameters()))
    for (name, _), a, b in zip(coder.named_parameters(), sparse, dense):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)
