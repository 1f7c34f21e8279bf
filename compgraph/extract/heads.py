"""Attention heads: pattern scores from forward passes, the copy score from weights.

Every query head is a node; ``kv_head`` records the KV head it shares (grouped-query
attention). A(q, s) is the head's attention from query position q to source s;
scores average over sequences and over the query positions named.

Text-based scores read the first ``head_tokens`` corpus tokens.

- ``sink_score``: mean A(q, 0) over q >= 1 on corpus text (attention parked on the
  first position).
- ``prev_token_score``: mean A(q, q-1) over q >= 1 on corpus text.
- ``entropy``: mean over q >= 1 of -sum_s A(q, s) log A(q, s), in nats, on corpus text
  (A clamped below at 1e-12 inside the log).
  These three are means over sequences of the per-sequence means over q, the sequences
  of every batch counted alike.
- ``induction_score``: on [BOS] R R with R a random token sequence of length L,
  mean A(q, q-L+1) over sequences and q = L+1 .. 2L-1 (the second copy but its last
  token): attention to the token that followed the previous occurrence of the current
  token (Olsson et al. 2022).
- ``duplicate_token_score``: same sequences, mean A(q, q-L) over sequences and
  q = L+1 .. 2L: attention to the previous occurrence of the current token.
- ``copy_score``: the positive-eigenvalue fraction sum(lambda) / sum(|lambda|) (real
  parts) of the full OV circuit  W_E diag(g_attn) W_V W_O diag(g_final) W_U; +1 means
  the head copies the tokens it attends to into the logits (Elhage et al. 2021). The
  eigenvalues come from the d_head x d_head matrix W_O diag(g_f) W_U W_E diag(g_a) W_V,
  which has the same non-zero spectrum.
- ``retrieval_score``: needle-in-a-haystack copy-paste recall (Wu et al. 2024).
  Context: haystack text, a needle of random tokens, more haystack, then the needle
  again (teacher-forced). At each position of the second needle the head retrieves
  the next needle token when the model predicts it (argmax) and the head's strongest
  attention is on that token's position in the first needle. Score: the fraction of
  needle tokens retrieved, averaged over samples. ``retrieval`` = score > 0.1.
"""

from __future__ import annotations

import torch

from compgraph.data.probes import HeadProbes
from compgraph.models import params
from compgraph.models.adapters.base import Adapter

SCORES = ("sink", "prev_token", "entropy", "induction", "duplicate", "copy", "retrieval")
"""The keys of :func:`head_scores` (each [n_layers, n_heads])."""


# --- scores of attention patterns (pure functions) -------------------------------------------------

def sink(pattern: torch.Tensor) -> torch.Tensor:
    """[B, H]: per sequence, mean over q >= 1 of A(q, 0); ``pattern`` [B, H, T, T]."""
    return pattern[:, :, 1:, 0].mean(-1)


def previous_token(pattern: torch.Tensor) -> torch.Tensor:
    """[B, H]: per sequence, mean over q >= 1 of A(q, q-1)."""
    return torch.diagonal(pattern, offset=-1, dim1=2, dim2=3).mean(-1)


def entropy(pattern: torch.Tensor) -> torch.Tensor:
    """[B, H]: per sequence, mean over q >= 1 of -sum_s A(q, s) ln A(q, s) (nats)."""
    q = pattern[:, :, 1:, :]
    return -(q * q.clamp_min(1e-12).log()).sum(-1).mean(-1)


def induction(pattern: torch.Tensor, repeat_len: int) -> torch.Tensor:
    """[H]: on [BOS] R R (|R| = L), mean over sequences and q = L+1 .. 2L-1 of A(q, q-L+1)."""
    L = repeat_len
    query = torch.arange(L + 1, 2 * L)
    return pattern[:, :, query, query - L + 1].mean((0, 2))


def duplicate(pattern: torch.Tensor, repeat_len: int) -> torch.Tensor:
    """[H]: on [BOS] R R (|R| = L), mean over sequences and q = L+1 .. 2L of A(q, q-L)."""
    L = repeat_len
    query = torch.arange(L + 1, 2 * L + 1)
    return pattern[:, :, query, query - L].mean((0, 2))


def retrieval(pattern: torch.Tensor, correct: torch.Tensor, queries: torch.Tensor, sources: torch.Tensor,
              needle_len: int) -> torch.Tensor:
    """[H]: mean over sequences of (1/n) #{i : the model predicts needle token i+1 at query
    position ``queries[i]`` (``correct`` [B, n-1]) and the head's strongest attention there is
    on ``sources[i]``, where that token sits in the first needle} (n = ``needle_len``)."""
    argmax = pattern[:, :, queries].float().argmax(-1).cpu()  # [B, H, n-1]
    hit = (argmax == sources) & correct.unsqueeze(1)
    return hit.float().sum(-1).mean(0) / needle_len


# --- the forward passes -----------------------------------------------------------------------------

def _patterns(model, batch: torch.Tensor) -> list[torch.Tensor]:
    device = next(model.parameters()).device
    out = model(batch.to(device), output_attentions=True)
    return [a.float().cpu() for a in out.attentions]  # per layer [B, H, T, T]


@torch.no_grad()
def pattern_scores(model, probes: HeadProbes, progress=None) -> dict[str, torch.Tensor]:
    """Scores that read attention patterns: each [n_layers, n_heads]."""
    per_sequence = {"sink": sink, "prev_token": previous_token, "entropy": entropy}
    text: dict[str, list[torch.Tensor]] = {name: [] for name in per_sequence}
    for batch in probes.text:
        patterns = _patterns(model, batch)
        for name, score in per_sequence.items():
            text[name].append(torch.stack([score(pattern).sum(0) for pattern in patterns]))
        if progress is not None:
            progress()
    n_text = sum(b.shape[0] for b in probes.text)
    scores = {name: torch.stack(parts).sum(0) / n_text for name, parts in text.items()}
    patterns = _patterns(model, probes.repeated)
    scores["induction"] = torch.stack([induction(p, probes.repeat_len) for p in patterns])
    scores["duplicate"] = torch.stack([duplicate(p, probes.repeat_len) for p in patterns])
    scores["retrieval"] = retrieval_scores(model, probes)
    return scores


@torch.no_grad()
def retrieval_scores(model, probes: HeadProbes) -> torch.Tensor:
    """[n_layers, n_heads]: :func:`retrieval` of every head on the haystack probes."""
    device = next(model.parameters()).device
    batch = probes.haystack.to(device)
    out = model(batch, output_attentions=True)
    n = probes.needle_len
    queries = torch.arange(probes.needle_second, probes.needle_second + n - 1)  # predict needle[1:]
    targets = batch[:, queries + 1].cpu()
    correct = out.logits[:, queries].argmax(-1).cpu() == targets  # [B, n-1]
    sources = torch.arange(probes.needle_first + 1, probes.needle_first + n)  # where needle[1:] sits first
    return torch.stack([retrieval(pattern, correct, queries, sources, n) for pattern in out.attentions])


@torch.no_grad()
def copy_scores(model, adapter: Adapter) -> torch.Tensor:
    """[n_layers, n_heads]; see the module docstring."""
    w_e = params.embedding(model, adapter).float()
    w_u = params.unembed(model, adapter).float()
    g_f = params.final_gain(model, adapter)
    ue = w_u @ w_e  # [d, d]: W_U W_E
    if g_f is not None:
        ue = g_f.float().unsqueeze(1) * ue
    rows = []
    for layer in range(params.n_layers(model, adapter)):
        attn = params.attention(model, adapter, layer)
        g_a = params.norm_gain(model, adapter, adapter.attn_norm, layer)
        inner = ue * g_a.float().unsqueeze(0) if g_a is not None else ue
        scores = []
        for head in range(attn.W_Q.shape[0]):
            w_v = attn.W_V[head // attn.group].float()  # [d, d_head]
            w_o = attn.W_O[head].float()  # [d_head, d]
            eig = torch.linalg.eigvals(w_o @ inner @ w_v)
            total = eig.abs().sum()
            scores.append((eig.real.sum() / total).item() if total > 0 else 0.0)
        rows.append(torch.tensor(scores))
    return torch.stack(rows)


def head_scores(model, adapter: Adapter, probes: HeadProbes, progress=None) -> dict[str, torch.Tensor]:
    """Every score of :data:`SCORES`, each [n_layers, n_heads] (module docstring)."""
    return pattern_scores(model, probes, progress) | {"copy": copy_scores(model, adapter)}
