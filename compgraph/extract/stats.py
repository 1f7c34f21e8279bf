"""Activation statistics streamed over a corpus: the one pass neurons and dictionary
features share.

For a unit u (a neuron, a feature) with activation a_u(t) at corpus token t, over the
corpus tokens that are not special tokens (BOS, EOS, padding) and have an id below
``n_tokens`` — N of them:

- ``act_mean`` = (1/N) Σ_t a_u(t);
- ``act_max``  = max_t a_u(t);
- ``act_freq`` = (1/N) #{t : indicator_u(t) > 0}, where the indicator is what the caller
  says makes a unit active (a neuron: its nonlinearity's input; a feature: |f|);
- top tokens: among the ``tracked`` most frequent token ids of the corpus (ties: lower id
  first), the ``k`` ids v with the largest mean activation (1/n_v) Σ_{t: id(t)=v} a_u(t)
  among the ids seen at least ``min_count`` times (n_v the id's count in the corpus, the
  special tokens left out), with that mean, the max over those tokens, and n_v.

Memory is independent of the corpus length: per unit group ``2 · tracked · width + 4 ·
width`` numbers (:meth:`LayerStats.nbytes`); one pass stops after the last layer it needs.

*Precision.* With ``compute_dtype=torch.bfloat16`` the forward pass runs under
``torch.autocast`` (matmuls in bfloat16, weights kept as they are) while every statistic
is accumulated in float32 (each batch's sum added into float64 totals), as ``compgraph ingest --dtype auto`` does on a
CPU that computes bfloat16 natively (:func:`compgraph.models.loading.native_bf16`). The
error this adds is bounded in ``tests/unit/extract/test_stats.py`` and measured on SmolLM2
in the README.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Hashable, NamedTuple

import torch

from compgraph.models.adapters.base import Adapter
from compgraph.models.forward import forward_until
from compgraph.models.hooks import capture


class LayerStats:
    """Running sums for one group of units over corpus tokens (special tokens left out).

    Memory: ``2 * n_tracked * width + 4 * width`` floats, independent of the corpus.
    """

    def __init__(self, width: int, tracked: torch.Tensor, device):
        self.total = torch.zeros(width, dtype=torch.float64, device=device)
        self.maximum = torch.full((width,), -torch.inf, device=device)
        self.active = torch.zeros(width, dtype=torch.long, device=device)
        self.by_token = torch.zeros(len(tracked), width, device=device)
        self.by_token_max = torch.full((len(tracked), width), -torch.inf, device=device)

    @staticmethod
    def nbytes(width: int, n_tracked: int) -> int:
        return 4 * (2 * n_tracked * width + 4 * width)

    def add(self, hidden: torch.Tensor, pre: torch.Tensor, keep: torch.Tensor, slots: torch.Tensor) -> None:
        """hidden, pre: [tokens, width] (activation, indicator); keep: [tokens] bool; slots:
        the tracked slot of each kept token, or -1.

        One batch's sum is taken in float32 and added to the float64 total; the indicator is
        counted as the float32 sum of its clamped signs (exact below 2^24 tokens a batch).
        Rows are picked with ``index_select`` (a boolean mask costs several times more)."""
        rows = torch.nonzero(keep).flatten()
        whole = rows.numel() == keep.numel()
        act = (hidden if whole else hidden.index_select(0, rows)).float()
        ind = pre if whole else pre.index_select(0, rows)
        if act.shape[0] == 0:
            return
        self.total += act.sum(0).double()
        torch.maximum(self.maximum, act.amax(0), out=self.maximum)
        self.active += ind.float().sign_().clamp_(min=0).sum(0).long()
        hit = torch.nonzero(slots >= 0).flatten()
        sel, index = act.index_select(0, hit), slots.index_select(0, hit)
        self.by_token.index_add_(0, index, sel)
        self.by_token_max.scatter_reduce_(0, index.unsqueeze(1).expand(-1, sel.shape[1]), sel, "amax")


def tracked_tokens(stream, n_tokens: int, special_ids: set[int], limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, counts): the ``limit`` most frequent non-special ids of the corpus, by id."""
    counts = stream.token_counts(n_tokens)
    if special_ids:
        counts[torch.tensor(sorted(i for i in special_ids if i < n_tokens), dtype=torch.long)] = 0
    seen = int((counts > 0).sum())
    ids = counts.argsort(descending=True, stable=True)[: min(limit, seen)].sort().values
    return ids, counts[ids]


def layers_per_pass(width: int, n_tracked: int, memory_gb: float) -> int:
    """How many layers' accumulators fit ``memory_gb`` together (at least one)."""
    return max(1, int(memory_gb * 1e9 // LayerStats.nbytes(width, n_tracked)))


class Streamed(NamedTuple):
    """What one pass over the corpus accumulated: per key its :class:`LayerStats`, the
    tracked token ids with their corpus counts, and the tokens seen (specials left out)."""

    stats: dict
    tracked: torch.Tensor
    counts: torch.Tensor
    n_seen: int


Reader = Callable[[dict], dict[Hashable, tuple[torch.Tensor, torch.Tensor]]]
"""From one batch's captured sites (``{site: [value]}``), per key the pair (activation,
indicator), both [tokens, n]: a unit counts as active on a token where its indicator is > 0."""


@torch.no_grad()
def stream_stats(model, adapter: Adapter, stream, sites: list, last_layer: int, read: Reader, *, n_tokens: int,
                 special_ids: set[int], tracked_limit: int, batch_size: int, progress=None,
                 compute_dtype: torch.dtype | None = None) -> Streamed:
    """One pass over the corpus, stopping after block ``last_layer``: capture ``sites``,
    turn them into activations with ``read`` and accumulate :class:`LayerStats` per key
    (the forward pass under autocast to ``compute_dtype`` when given: module docstring)."""
    device = next(model.parameters()).device
    tracked, counts = tracked_tokens(stream, n_tokens, special_ids, tracked_limit)
    slot_of = torch.full((n_tokens,), -1, dtype=torch.long)
    slot_of[tracked] = torch.arange(len(tracked))
    slot_of = slot_of.to(device)
    special = torch.tensor(sorted(special_ids), dtype=torch.long, device=device)
    stats: dict = {}
    n_seen = 0
    for batch in stream.batches(batch_size):
        flat = batch.reshape(-1).to(device)
        keep = ~torch.isin(flat, special) & (flat < n_tokens)
        slots = slot_of[flat[keep]]
        n_seen += int(keep.sum())
        with capture(model, adapter, sites) as got, _autocast(device, compute_dtype):
            forward_until(model, adapter, batch, last_layer)
        for key, (act, indicator) in read(got).items():
            if key not in stats:
                stats[key] = LayerStats(act.shape[1], tracked, device)
            stats[key].add(act, indicator, keep, slots)
        if progress is not None:
            progress()
    return Streamed(stats, tracked, counts, n_seen)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class UnitStats(NamedTuple):
    """Per unit, float64 on the CPU (see the module docstring)."""

    act_mean: torch.Tensor
    act_max: torch.Tensor
    act_freq: torch.Tensor


def unit_stats(acc: LayerStats, n_seen: int) -> UnitStats:
    """``act_mean``, ``act_max``, ``act_freq`` of every unit of one accumulator."""
    return UnitStats((acc.total / max(n_seen, 1)).cpu(), acc.maximum.double().cpu(),
                     (acc.active.double() / max(n_seen, 1)).cpu())


class TopTokens(NamedTuple):
    """Each unit's top tokens, flattened unit by unit (best first within a unit); CPU."""

    unit: torch.Tensor
    """[m] long: the unit's index."""
    token: torch.Tensor
    """[m] long: the token id."""
    mean_act: torch.Tensor
    """[m] float64: the unit's mean activation over the token's occurrences."""
    max_act: torch.Tensor
    """[m] float64: its max over them."""
    count: torch.Tensor
    """[m] long: the token's occurrences in the corpus (special tokens left out)."""


def top_tokens(acc: LayerStats, tracked: torch.Tensor, counts: torch.Tensor, k: int,
               min_count: int = 1) -> TopTokens:
    """Per unit, the k tracked tokens with the largest mean activation, among the tokens
    seen at least ``min_count`` times (module docstring)."""
    counts = counts.to(acc.by_token.device)
    seen = counts >= max(min_count, 1)
    mean = torch.where(seen.unsqueeze(1), acc.by_token / counts.clamp(min=1).unsqueeze(1), -torch.inf)
    k = min(k, int(seen.sum()))
    if k == 0:
        none = torch.zeros(0, dtype=torch.long)
        return TopTokens(none, none, none.double(), none.double(), none)
    best = mean.topk(k, dim=0)  # [k, width]
    rows = best.indices.T.reshape(-1)  # per unit, k token slots
    unit = torch.arange(acc.by_token.shape[1], device=rows.device).repeat_interleave(k)
    return TopTokens(unit.cpu(), tracked[rows.cpu()], best.values.T.reshape(-1).double().cpu(),
                     acc.by_token_max[rows, unit].double().cpu(), counts[rows].cpu())
