"""Folded read and write factors of heads and neurons, in the row-vector convention.

Neurons (dense MLPs only):
- write ``w_i`` [d_model]: row i of the out projection, folded through the MLP's output norm
  where the family has one (Gemma 3);
- reads ``r_j`` [d_model]: row j of the up (``in``) or gate (``gate``) projection, folded
  through the norm feeding the MLP (``mlp_norm``).

Heads (query head h, KV head ``kv(h) = h // (n_heads // n_kv_heads)``), with every read
folded through the attention input norm and the QK-norms, and W_O through the attention
output norm (Gemma 3):
- ``W_OV(h) = W_V[kv(h)] @ W_O[h]`` [d_model, d_model], the head's OV circuit;
- ``W_QK(h) = W_Q[h] @ W_K[kv(h)]^T`` [d_model, d_model], query side on the left.

Every one of these [d_model, d_model] matrices has rank <= d_head and is never formed. A
*writer factor* ``P`` [d_head, d_model] of a matrix ``W`` has ``P^T P = W^T W``, so
``||W Y||_F = ||P Y||_F`` for every ``Y``; a *reader factor* ``S`` [d_model, d_head] of ``M``
has ``S S^T = M M^T``, so ``||X M||_F = ||X S||_F`` for every ``X``. With ``R(A)`` any
[d_head, d_head] factor of the Gram matrix (``R(A)^T R(A) = A^T A``, e.g. the R of a QR):
``P = R(A) B^T`` for ``W = A B^T`` and ``S = A R(B)^T`` for ``M = A B^T``.
Then ``||W M||_F = ||P S||_F`` costs d_model * d_head^2 per pair instead of d_model^3.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from compgraph.models import params
from compgraph.models.adapters.base import Adapter
from compgraph.weights import folding


def gram_factor(matrix: torch.Tensor) -> torch.Tensor:
    """A Gram factor over the last two dims: [..., m, n] -> upper-triangular F [..., n, n] with
    ``F^T F = matrix^T matrix`` (the R of a QR, up to signs).

    Cholesky of the n x n Gram matrix in float64 (LAPACK's tall QR is ~20x slower here);
    singular Gram matrices (a zeroed head) fall back to a clipped eigendecomposition.
    """
    work = matrix if matrix.dtype in (torch.float32, torch.float64) else matrix.float()
    gram = (work.transpose(-1, -2) @ work).double()
    factor, info = torch.linalg.cholesky_ex(gram, upper=True)
    bad = info != 0
    if bad.any():
        values, vectors = torch.linalg.eigh(gram[bad])
        factor[bad] = (vectors * values.clamp_min(0).sqrt().unsqueeze(-2)).transpose(-1, -2)
    return factor.to(matrix.dtype)


class FoldedAttention(NamedTuple):
    """Canonical attention weights of one layer with every norm folded in."""

    W_Q: torch.Tensor  # [n_heads, d_model, d_head]
    W_K: torch.Tensor  # [n_kv, d_model, d_head]
    W_V: torch.Tensor  # [n_kv, d_model, d_head]
    W_O: torch.Tensor  # [n_heads, d_head, d_model]

    @property
    def kv_index(self) -> torch.Tensor:
        """[n_heads]: the KV head each query head uses."""
        group = self.W_Q.shape[0] // self.W_K.shape[0]
        return torch.arange(self.W_Q.shape[0], device=self.W_Q.device) // group


def folded_attention(model, adapter: Adapter, layer: int, dtype: torch.dtype = torch.float32) -> FoldedAttention:
    attn = params.attention(model, adapter, layer)
    read = folding.read_fold(model, adapter, layer, "attn")
    write = folding.write_fold(model, adapter, layer, "attn")
    q_fold, k_fold = folding.qk_folds(model, adapter, layer)
    cast = lambda t: t.detach().to(dtype)  # noqa: E731
    W_Q = folding.fold_write(folding.fold_read(cast(attn.W_Q), read, dim=1), q_fold, dim=2)
    W_K = folding.fold_write(folding.fold_read(cast(attn.W_K), read, dim=1), k_fold, dim=2)
    W_V = folding.fold_read(cast(attn.W_V), read, dim=1)
    W_O = folding.fold_write(cast(attn.W_O), write, dim=2)
    return FoldedAttention(W_Q, W_K, W_V, W_O)


def head_writers(attn: FoldedAttention) -> torch.Tensor:
    """[n_heads, d_head, d_model]: writer factors ``P(h) = R(W_V[kv(h)]) @ W_O[h]`` of W_OV."""
    r_v = gram_factor(attn.W_V)[attn.kv_index]  # [n_heads, d_head, d_head]
    return r_v @ attn.W_O


READ_SIDES = ("q", "k", "v")
"""The sides a head reads the residual with: its query, its key, its value input."""


def head_readers(attn: FoldedAttention) -> dict[str, torch.Tensor]:
    """Reader factors [n_heads, d_model, d_head] per side of every query head.

    - ``q``: of ``W_QK = W_Q W_K^T`` (an upstream write enters as the query input);
    - ``k``: of ``W_QK^T = W_K W_Q^T`` (an upstream write enters as the key input);
    - ``v``: of ``W_OV = W_V W_O`` (an upstream write enters as the value input).
    """
    kv = attn.kv_index
    return {
        "q": attn.W_Q @ gram_factor(attn.W_K)[kv].transpose(-1, -2),
        "k": attn.W_K[kv] @ gram_factor(attn.W_Q).transpose(-1, -2),
        "v": attn.W_V[kv] @ gram_factor(attn.W_O.transpose(-1, -2)).transpose(-1, -2),
    }


def neuron_writes(model, adapter: Adapter, layer: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[d_mlp, d_model]: each neuron's folded write direction."""
    out = params.mlp_out(model, adapter, layer).detach().to(dtype)
    return folding.fold_write(out, folding.write_fold(model, adapter, layer, "mlp"), dim=1)


MLP_READS = ("in", "gate")
"""The projections a neuron reads the residual with (``gate`` only in gated MLPs)."""


def neuron_reads(model, adapter: Adapter, layer: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """``{"in": [d_mlp, d_model], "gate": ...}``: folded read directions (gate only if gated)."""
    fold = folding.read_fold(model, adapter, layer, "mlp")
    reads = {"in": params.mlp_in(model, adapter, layer)}
    gate = params.mlp_gate(model, adapter, layer)
    if gate is not None:
        reads["gate"] = gate
    return {via: folding.fold_read(w.detach().to(dtype), fold, dim=1) for via, w in reads.items()}


def has_neurons(adapter: Adapter) -> bool:
    """Dense MLP neurons exist (not in MoE layers, whose experts are not dense neurons)."""
    return not adapter.is_moe and adapter.mlp_in is not None and adapter.mlp_out is not None
