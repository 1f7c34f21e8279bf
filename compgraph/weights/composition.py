"""Composition scores (Elhage et al. 2021) between heads, and between heads and neurons.

The composition score of a writer matrix ``W`` [d_model, d_model] (what a component adds
to the residual, as a map of the residual) with a reader matrix ``M`` (how a later
component reads it) is

    score(W, M) = ||W M||_F / (||W||_F ||M||_F)          in [0, 1]

(row-vector convention: a write ``y = x W`` is read as ``y M``). Definitions, for a writer
in layer l1 and a reader in layer l2, with every norm folded in (see
:mod:`compgraph.weights.folding` and :mod:`compgraph.weights.factors`; ``kv(h)`` is the
KV head of query head h under grouped-query attention):

- head -> head, l1 < l2, every ordered pair; ``W = W_OV(h1) = W_V[kv(h1)] W_O[h1]``:
  ``q_comp``: ``M = W_QK(h2) = W_Q[h2] W_K[kv(h2)]^T``: the write is the *query* input
  (``score(q, k) = q W_QK k^T`` with ``q = y``); ``k_comp``: ``M = W_QK(h2)^T``: the write
  is the *key* input (``q W_QK (yW)^T`` has the norm of ``W W_QK^T``); ``v_comp``:
  ``M = W_OV(h2)``. The reader's reads are folded through its attention norm (gain, and
  centring for LayerNorm) and QK-norms; the writer's W_OV is the same folded matrix it has
  as a reader (its own input norm on W_V, Gemma 3's output norm on W_O).
- ``ov_to_mlp`` / ``ov_to_mlp_gate``: head h -> neuron j of layer l2 >= l1 (l2 > l1 for
  parallel attention + MLP blocks, GPT-NeoX ``use_parallel_residual``, where a head never
  reaches its own layer's MLP); ``W = W_OV(h)``, ``M = r_j`` [d_model, 1] the neuron's
  folded up (gate) read direction: ``||W_OV r_j||_2 / (||W_OV||_F ||r_j||_2)``, the share of
  the head's OV output the neuron can read. Top-k per source head.
- ``mlp_to_q`` / ``mlp_to_k`` / ``mlp_to_v``: neuron i -> head h of layer l2 > l1;
  ``W = w_i`` [1, d_model] the neuron's folded write direction, ``M`` as for q/k/v_comp:
  ``||w_i M||_2 / (||w_i||_2 ||M||_F)``. Top-k per source neuron.

Products are computed from the d_head-rank factors (``||W M||_F = ||P S||_F``, cost
d_model d_head^2 per head pair), never from d_model x d_model matrices.

``baseline``: the mean score when the factors of ``W`` and ``M`` are replaced by independent
standard Gaussian matrices of the same shapes (``W = A B^T`` with A, B [d_model, r_W];
``M = C D^T`` with C, D [d_model, r_M]; a neuron direction is r = 1), *estimated by
sampling* (:func:`random_baseline`, fixed seed). It is close to ``1/sqrt(d_model)`` for large
ranks (the ratio of expectations is exactly ``1/d_model``) and ``E|cos|`` of two random
directions for r_W = r_M = 1. ``weight - baseline`` is the excess composition.
"""

from __future__ import annotations

import functools
from typing import Iterable, Iterator

import polars as pl
import torch

from compgraph.models import params
from compgraph.models.adapters.base import Adapter
from compgraph.weights import factors, folding
from compgraph.weights.frames import Kind, Scratch, TopK, empty, frame

HEAD_KINDS: dict[str, Kind] = {"q": Kind.Q_COMP, "k": Kind.K_COMP, "v": Kind.V_COMP}
MLP_TO_HEAD_KINDS: dict[str, Kind] = {"q": Kind.MLP_TO_Q, "k": Kind.MLP_TO_K, "v": Kind.MLP_TO_V}
OV_TO_MLP_KINDS: dict[str, Kind] = {"in": Kind.OV_TO_MLP, "gate": Kind.OV_TO_MLP_GATE}

_TINY = 1e-30


def _norm_ratio(product: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    return product / denominator.clamp_min(_TINY)


def factored_score(a_w: torch.Tensor, b_w: torch.Tensor, a_m: torch.Tensor, b_m: torch.Tensor) -> torch.Tensor:
    """``score(A_W B_W^T, A_M B_M^T)`` from the factors alone (batched over leading dims).

    ``a_w``, ``b_w`` [..., d, r_W]; ``a_m``, ``b_m`` [..., d, r_M]. Uses the writer factor
    ``R(A_W) B_W^T`` and the reader factor ``A_M R(B_M)^T`` (see :mod:`compgraph.weights.factors`).
    """
    p = factors.gram_factor(a_w) @ b_w.transpose(-1, -2)
    s = a_m @ factors.gram_factor(b_m).transpose(-1, -2)
    num = torch.linalg.matrix_norm(p @ s)
    return _norm_ratio(num, torch.linalg.matrix_norm(p) * torch.linalg.matrix_norm(s))


@functools.lru_cache(maxsize=64)
def random_baseline(d_model: int, writer_rank: int, reader_rank: int, *, samples: int = 512, seed: int = 0,
                    batch: int = 32) -> float:
    """Mean composition score of Gaussian factors of these shapes (``samples`` draws, float64)."""
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for start in range(0, samples, batch):
        n = min(batch, samples - start)
        draw = lambda r: torch.randn(n, d_model, r, generator=gen, dtype=torch.float64)  # noqa: E731
        total += float(factored_score(draw(writer_rank), draw(writer_rank), draw(reader_rank),
                                      draw(reader_rank)).sum())
    return total / samples


def _readers(model, adapter: Adapter, layer: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """All three read sides of a layer: S [d_model, 3 * n_heads * d_head] (side-major) and
    their norms [3, n_heads]."""
    s = factors.head_readers(factors.folded_attention(model, adapter, layer, dtype))
    stacked = torch.stack([s[side] for side in factors.READ_SIDES])  # [3, H, d, r]
    norms = torch.linalg.matrix_norm(stacked)  # [3, H]
    three, heads, d_model, rank = stacked.shape
    return stacked.permute(2, 0, 1, 3).reshape(d_model, three * heads * rank), norms


def _sources(layers: Iterable[int] | None, n_layers: int) -> list[int]:
    return list(range(n_layers)) if layers is None else sorted(set(layers))


@torch.no_grad()
def head_composition(model, adapter: Adapter, *, layers: Iterable[int] | None = None, top_k: int | None = None,
                     dtype: torch.dtype = torch.float32, baseline_samples: int = 512
                     ) -> Iterator[tuple[int, pl.DataFrame]]:
    """Per source layer l1: ``(l1, frame)`` of q_comp, k_comp and v_comp from each head of
    l1 to every head of every later layer (or the ``top_k`` largest per source head and kind).

    ``layers`` restricts the source layers (a shard); the last layer yields an empty frame.
    Each reader layer's factors are computed once (the outer loop runs over reader layers),
    so the frames come out together at the end; memory: the writer factors of the source
    layers (the size of their W_O) and one reader layer.
    """
    n_layers = params.n_layers(model, adapter)
    sources = _sources(layers, n_layers)
    writers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    parts: dict[int, list[pl.DataFrame]] = {src: [] for src in sources}
    tops: dict[int, dict[str, TopK]] = {}
    baseline = None
    for dst in range(n_layers):
        readers = None
        for src in (src for src in sources if src < dst):
            if readers is None:
                readers = _readers(model, adapter, dst, dtype)
            s, s_norm = readers
            if src not in writers:
                p = factors.head_writers(factors.folded_attention(model, adapter, src, dtype))  # [H, r, d]
                writers[src] = p, torch.linalg.matrix_norm(p)
            p, p_norm = writers[src]
            heads, rank, d_model = p.shape
            if baseline is None:
                baseline = random_baseline(d_model, rank, rank, samples=baseline_samples)
            n_dst = s_norm.shape[1]
            y = (p.reshape(heads * rank, d_model) @ s).reshape(heads, rank, 3 * n_dst, -1)
            norms = torch.linalg.vector_norm(y, dim=3).square().sum(1).sqrt().reshape(heads, 3, n_dst)
            scores = _norm_ratio(norms, p_norm[:, None, None] * s_norm[None])
            for i, side in enumerate(factors.READ_SIDES):
                block = scores[:, i]
                if top_k:
                    tops.setdefault(src, {}).setdefault(side, TopK(heads, top_k, p.device, dtype)).add(block, dst)
                else:
                    src_idx = torch.arange(heads).unsqueeze(1).expand(heads, n_dst)
                    dst_idx = torch.arange(n_dst).unsqueeze(0).expand(heads, n_dst)
                    parts[src].append(frame(HEAD_KINDS[side], src, src_idx, dst, dst_idx, block, baseline))
    for src in sources:
        if top_k and src in tops:
            parts[src] = [top.frame(HEAD_KINDS[side], src, baseline) for side, top in tops[src].items()]
        if not parts[src]:
            yield src, empty()
            continue
        yield src, pl.concat(parts[src]).sort("kind", "src_index", "dst_layer", "dst_index", maintain_order=True)


@torch.no_grad()
def ov_to_mlp_topk(model, adapter: Adapter, k: int, *, layers: Iterable[int] | None = None, chunk: int = 8192,
                   dtype: torch.dtype = torch.float32, baseline_samples: int = 512
                   ) -> Iterator[tuple[int, pl.DataFrame]]:
    """Per source layer: ``(layer, frame)`` with the k neurons (same or later layers, later
    only for parallel blocks) that read most of each head's OV output: kinds ``ov_to_mlp``
    and, for gated MLPs, ``ov_to_mlp_gate``. MoE models yield nothing."""
    if not factors.has_neurons(adapter):
        return
    n_layers = params.n_layers(model, adapter)
    first = 1 if folding.parallel_residual(model) else 0
    for src in range(n_layers) if layers is None else layers:
        if src + first >= n_layers:
            yield src, empty()
            continue
        p = factors.head_writers(factors.folded_attention(model, adapter, src, dtype))
        heads, rank, d_model = p.shape
        p_norm = torch.linalg.matrix_norm(p)
        flat = p.reshape(heads * rank, d_model)
        tops: dict[str, TopK] = {}
        scratch = Scratch()
        for dst in range(src + first, n_layers):
            for via, reads in factors.neuron_reads(model, adapter, dst, dtype).items():
                top = tops.setdefault(via, TopK(heads, k, p.device, dtype))
                r_norm = reads.norm(dim=1)
                for start in range(0, reads.shape[0], chunk):
                    cols = slice(start, start + chunk)
                    y = scratch.matmul("y", reads[cols], flat.T).reshape(-1, heads, rank)  # contiguous r
                    norms = torch.linalg.vector_norm(y, dim=2).T  # [H, chunk]
                    top.add(_norm_ratio(norms, p_norm[:, None] * r_norm[None, cols]), dst, index_offset=start)
        baseline = random_baseline(d_model, rank, 1, samples=baseline_samples)
        yield src, pl.concat([top.frame(OV_TO_MLP_KINDS[via], src, baseline) for via, top in tops.items()])


@torch.no_grad()
def mlp_to_head_topk(model, adapter: Adapter, k: int, *, layers: Iterable[int] | None = None, chunk: int = 4096,
                     dtype: torch.dtype = torch.float32, baseline_samples: int = 512
                     ) -> Iterator[tuple[int, pl.DataFrame]]:
    """Per source layer: ``(layer, frame)`` with the k heads of later layers that read each
    neuron's write most, per side: kinds ``mlp_to_q``, ``mlp_to_k``, ``mlp_to_v``. MoE models
    yield nothing; the last layer yields an empty frame.

    The outer loop runs over reader layers (each one's factors computed once), so the frames
    come out together at the end; memory: the running top-k of every source neuron
    ([d_mlp, k] per side and source layer) and one [chunk, 3 n_heads d_head] block.
    """
    if not factors.has_neurons(adapter):
        return
    n_layers = params.n_layers(model, adapter)
    sources = _sources(layers, n_layers)
    tops: dict[int, dict[str, TopK]] = {}
    rank = d_model = None
    scratch = Scratch()
    for dst in range(n_layers):
        readers = None
        for src in (src for src in sources if src < dst):
            if readers is None:
                readers = _readers(model, adapter, dst, dtype)
            s, s_norm = readers
            n_dst = s_norm.shape[1]
            rank = s.shape[1] // (3 * n_dst)
            writes = factors.neuron_writes(model, adapter, src, dtype)
            n, d_model = writes.shape
            w_norm = writes.norm(dim=1)
            top = tops.setdefault(src, {side: TopK(n, k, writes.device, dtype) for side in factors.READ_SIDES})
            for start in range(0, n, chunk):
                rows = slice(start, start + chunk)
                y = scratch.matmul("y", writes[rows], s).reshape(-1, 3, n_dst, rank)
                scores = _norm_ratio(torch.linalg.vector_norm(y, dim=3), w_norm[rows, None, None] * s_norm[None])
                for i, side in enumerate(factors.READ_SIDES):
                    top[side].add(scores[:, i], dst, rows)
    baseline = None if rank is None else random_baseline(d_model, 1, rank, samples=baseline_samples)
    for src in sources:
        if src not in tops:
            yield src, empty()
            continue
        yield src, pl.concat([top.frame(MLP_TO_HEAD_KINDS[side], src, baseline) for side, top in tops[src].items()])
