"""The TopK coder (an SAE or a transcoder) that :mod:`compgraph.dictionaries.training` trains,
with exact gradients computed sparsely: the encoder's from the n·k selected pre-activations,
the decoder's from the n·k active rows (sparse-dense products and sampled dot products
instead of dense [n, width] matmuls). Definitions: :mod:`compgraph.dictionaries.training`.
"""

from __future__ import annotations

import math
import warnings

import torch

from compgraph.dictionaries.base import Dictionary
from compgraph.errors import ConfigError


class _Selected(torch.autograd.Function):
    """``pre[n, indices[n, j]]`` given its values (computed without autograd), with the
    encoder's gradients computed from those n·k entries only: for
    ``pre = x_c W_enc + b_enc`` (x_c = x − b_dec for an SAE, x for a transcoder)
    ∂/∂W_enc = x_cᵀ G, ∂/∂b_enc = Σ_n G, ∂/∂b_dec = −W_enc Σ_n G, with G the sparse
    [n, width] gradient at the selected entries (a sparse-dense product, not a dense one)."""

    @staticmethod
    def forward(ctx, values, x_c, W_enc, b_enc, b_dec, indices):
        ctx.save_for_backward(x_c, W_enc, indices)
        ctx.has_b_dec = b_dec is not None
        return values.clone()

    @staticmethod
    def backward(ctx, grad):
        x_c, W_enc, indices = ctx.saved_tensors
        n, k = indices.shape
        width = W_enc.shape[1]
        flat = indices.reshape(-1)
        per_feature = torch.zeros(width, dtype=grad.dtype, device=grad.device).index_add_(0, flat, grad.reshape(-1))
        rows = torch.arange(n, device=grad.device).repeat_interleave(k)
        sparse = torch.sparse_coo_tensor(torch.stack([flat, rows]), grad.reshape(-1), (width, n), check_invariants=False)
        grad_W_enc = (sparse @ x_c).T
        grad_b_dec = -(W_enc @ per_feature) if ctx.has_b_dec else None
        return None, None, grad_W_enc, per_feature, grad_b_dec, None


class _Decode(torch.autograd.Function):
    """``Σ_j values[n, j] · W_dec[indices[n, j]]`` (indices sorted within each row), with
    ∂/∂values from the n·k sampled dot products and ∂/∂W_dec as a sparse-dense product."""

    @staticmethod
    def forward(ctx, values, indices, W_dec):
        ctx.save_for_backward(values, indices, W_dec)
        return torch.nn.functional.embedding_bag(indices, W_dec, per_sample_weights=values, mode="sum")

    @staticmethod
    def backward(ctx, grad):
        values, indices, W_dec = ctx.saved_tensors
        n, k = indices.shape
        width = W_dec.shape[0]
        flat = indices.reshape(-1)
        crow = torch.arange(0, n * k + 1, k, device=grad.device)
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            mask = torch.sparse_csr_tensor(crow, flat, torch.zeros(n * k, dtype=grad.dtype, device=grad.device),
                                           (n, width), check_invariants=False)
            grad_values = torch.sparse.sampled_addmm(mask, grad, W_dec.T, beta=0.0).values().view(n, k)
        rows = torch.arange(n, device=grad.device).repeat_interleave(k)
        sparse = torch.sparse_coo_tensor(torch.stack([flat, rows]), values.reshape(-1), (width, n),
                                         check_invariants=False)
        return grad_values, None, sparse @ grad


def _top(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of the k largest entries per row, indices ascending within a row."""
    top = torch.topk(pre, k, dim=-1, sorted=False)
    indices, order = top.indices.sort(dim=-1)
    return top.values.gather(-1, order), indices


class TopKCoder(torch.nn.Module):
    """A TopK SAE or transcoder (module docstring); encoder gradients and the decoder are
    computed sparsely (:class:`_Selected`, :class:`_Decode`)."""

    def __init__(self, d_in: int, d_out: int, width: int, k: int, *, subtract_b_dec: bool,
                 generator: torch.Generator | None = None):
        super().__init__()
        if subtract_b_dec and d_in != d_out:
            raise ConfigError("an SAE subtracts b_dec from its input: d_in must equal d_out")
        W_dec = torch.randn(width, d_out, generator=generator)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(W_dec)
        self.W_enc = torch.nn.Parameter(W_dec.T.clone() if d_in == d_out else
                                        torch.randn(d_in, width, generator=generator) / math.sqrt(d_in))
        self.b_enc = torch.nn.Parameter(torch.zeros(width))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_out))
        self.k, self.subtract_b_dec = k, subtract_b_dec

    @property
    def width(self) -> int:
        return self.W_dec.shape[0]

    def centred(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.b_dec if self.subtract_b_dec else x

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        return self.centred(x) @ self.W_enc + self.b_enc

    def selected(self, x: torch.Tensor, pre: torch.Tensor, k: int, among: torch.Tensor | None = None):
        """(values with encoder gradients, indices) of the k largest of ``pre`` [n, width] (of
        the features in ``among`` when given), ``pre`` computed without autograd from ``x``."""
        source = pre if among is None else pre.masked_fill(~among.to(pre.device), -math.inf)
        values, indices = _top(source, k)
        x_c = self.centred(x).detach()
        b_dec = self.b_dec if self.subtract_b_dec else None
        return _Selected.apply(values, x_c, self.W_enc, self.b_enc, b_dec, indices), indices

    def select(self, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, indices) [n, k] of TopK(ReLU(pre))."""
        values, indices = _top(pre, self.k)
        return torch.relu(values), indices

    def decode(self, values: torch.Tensor, indices: torch.Tensor, *, bias: bool = True) -> torch.Tensor:
        """Σ_k values · W_dec[indices] (+ b_dec): the decoder on k rows per token (indices
        ascending within a row)."""
        out = _Decode.apply(values, indices, self.W_dec)
        return out + self.b_dec if bias else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(*self.select(self.pre(x)))

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Remove from each decoder row's gradient its component along the row."""
        if self.W_dec.grad is not None:
            g, w = self.W_dec.grad, self.W_dec
            g.addcmul_(w, torch.linalg.vecdot(g, w).unsqueeze(1), value=-1)

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec /= torch.linalg.vector_norm(self.W_dec, dim=1, keepdim=True).clamp_min(1e-12)

    def to_dictionary(self, *, kind: str, site: str, layer: int | None, output_site: str | None = None,
                      output_layer: int | None = None, hook: str = "", source: str = "") -> Dictionary:
        t = {n: getattr(self, n).detach().cpu().float().clone() for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
        return Dictionary(kind=kind, site=site, layer=layer, activation="topk", k=self.k,
                          subtract_b_dec=self.subtract_b_dec, output_site=output_site if kind == "transcoder" else site,
                          output_layer=output_layer if kind == "transcoder" else layer, hook=hook, source=source,
                          format="saelens", **t)
