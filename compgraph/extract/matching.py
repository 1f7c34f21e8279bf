"""Matching the units of two models: which unit of model B is each unit of model A's counterpart.

Both models read the same text; ``x_i(t)`` is unit i of A's activation (a neuron, a
feature, a head's attention pattern entry) at aligned position t, ``y_j(t)`` unit j of B's,
over N aligned positions.

*Activation score* (Li et al. 2015; Gurnee et al. 2024): the Pearson correlation

    r_ij = (N Σ x_i y_j − Σ x_i Σ y_j) / sqrt((N Σ x_i² − (Σ x_i)²) (N Σ y_j² − (Σ y_j)²)),

computed from streamed sufficient statistics (:class:`CorrelationStats`: the sums, the sums
of squares and the n_a × n_b cross sums, in float64; memory is one layer pair, never the
activations). A unit that is constant over the N positions has no correlation: its row or
column is NaN and it is matched to nothing.

*Baseline and excess* (Gurnee et al.'s random-rotation baseline): B's units of the layer
are replaced by ``y R`` for a Haar-random orthogonal R (:func:`random_rotation`), which
keeps B's layer's information but not its basis; ``baseline_i = max_j r(x_i, (yR)_j)`` and
``excess_ij = r_ij − baseline_i``. In the other direction A's units are rotated.

*Matches* (:func:`top_matches`): for each unit of A its ``k`` best units of B by score,
rank 0 the best (ties: lower index first), NaN scores never matched; a pair is *mutual*
when each is the other's rank-0 match (:func:`mutual`). :func:`assignment` is the optional
one-to-one matching that maximises the summed score (``scipy.optimize.linear_sum_assignment``).

*Decoding score* (:func:`match_decodings`): the share of the two units' top-k decoded
tokens they have in common, ``|T_i ∩ T_j| / k`` (token ids for models that share a
tokenizer; across tokenizers ids of one vocabulary of token strings,
:func:`shared_vocabulary`), and ``same_top``: whether their top tokens are the same. Units
are ranked by overlap, then same top token, then at random (seeded); two units that share
no token are never matched. Baseline (in the spirit of the rotation): the unit's best overlap
with the other model's units after the other model's token ids are relabelled by a random
permutation (:func:`vocabulary_permutation`), which keeps how each unit's tokens are spread
but not which tokens they are; ``excess`` = score − that baseline over all layers.

*Aligning text across tokenizers* (:func:`word_ends`): the position of each
whitespace-delimited word's last token — the token whose character span holds the word's
last character — so two tokenizations of the same text give one aligned position per word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import torch


class CorrelationStats:
    """Streamed sufficient statistics of the Pearson correlation between two sets of units."""

    def __init__(self, n_a: int, n_b: int, device: str | torch.device = "cpu") -> None:
        f64 = dict(dtype=torch.float64, device=device)
        self.n = 0
        self.sx, self.sy = torch.zeros(n_a, **f64), torch.zeros(n_b, **f64)
        self.sxx, self.syy = torch.zeros(n_a, **f64), torch.zeros(n_b, **f64)
        self.sxy = torch.zeros(n_a, n_b, **f64)

    @property
    def nbytes(self) -> int:
        return 8 * (self.sxy.numel() + 2 * (self.sx.numel() + self.sy.numel()))

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add N aligned positions: ``x`` [N, n_a], ``y`` [N, n_b] (row t of each is position t)."""
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"unaligned activations: {x.shape[0]} positions of A, {y.shape[0]} of B")
        x, y = x.to(self.sxy), y.to(self.sxy)
        self.n += x.shape[0]
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.sxx += (x * x).sum(0)
        self.syy += (y * y).sum(0)
        self.sxy += x.T @ y

    def correlation(self) -> torch.Tensor:
        """r [n_a, n_b] (float64); NaN in the rows and columns of constant units."""
        n = self.n
        cov = n * self.sxy - torch.outer(self.sx, self.sy)
        var_x = n * self.sxx - self.sx * self.sx
        var_y = n * self.syy - self.sy * self.sy
        scale_x = _scale(var_x, n * self.sxx)
        scale_y = _scale(var_y, n * self.syy)
        return (cov * scale_x[:, None] * scale_y[None, :]).clamp(-1.0, 1.0)


def _scale(var: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """1/sqrt(var), NaN where the variance is zero up to float64 cancellation."""
    constant = var <= 1e-12 * second.clamp_min(1e-300)
    return torch.where(constant, torch.nan, var.clamp_min(1e-300).rsqrt())


def random_rotation(n: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    """A Haar-random n × n orthogonal matrix (QR of a Gaussian matrix, signs fixed by R's diagonal)."""
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))[None, :]).to(dtype)


def baseline(rotated: torch.Tensor) -> torch.Tensor:
    """Each row unit's best correlation with the rotated units: the row maximum, NaN ignored."""
    return torch.nan_to_num(rotated, nan=-torch.inf).max(dim=1).values


class Matches(NamedTuple):
    """Row i's ``k`` best columns: ``index`` [n, k] (-1 where fewer than k scores exist),
    ``score`` [n, k] (NaN there)."""

    index: torch.Tensor
    score: torch.Tensor


def top_matches(score: torch.Tensor, k: int) -> Matches:
    """Each row's top-``k`` columns by score, descending (ties: lower column first); NaN never matched.

    ``torch.topk`` picks the candidates; they are put in (score descending, column
    ascending) order, and the rows where a tie reaches across the k-th place are sorted in
    full, so the answer is that of a stable sort of the whole row.
    """
    k = min(k, score.shape[1])
    wide = score if score.dtype in (torch.float32, torch.float64) else score.float()
    filled = torch.nan_to_num(wide, nan=-torch.inf)
    values, order = torch.topk(filled, k, dim=1)
    order, by_column = torch.sort(order, dim=1)
    values = values.gather(1, by_column)
    ranked = torch.sort(-values, dim=1, stable=True).indices
    order, values = order.gather(1, ranked), values.gather(1, ranked)
    crossing = torch.nonzero((filled >= values[:, -1:]).sum(1) > k).flatten()
    if crossing.numel():
        full = torch.sort(-filled[crossing], dim=1, stable=True).indices[:, :k]
        order[crossing] = full
        values[crossing] = filled[crossing].gather(1, full)
    missing = torch.isinf(values) & (values < 0)
    return Matches(torch.where(missing, -1, order), torch.where(missing, torch.nan, values.double()))


def mutual(forward: Matches, backward: Matches) -> torch.Tensor:
    """[n_a] bool: A's unit i and its rank-0 match j in B are each other's rank-0 match."""
    best = forward.index[:, 0]
    ok = best >= 0
    back = backward.index[best.clamp_min(0), 0]
    return ok & (back == torch.arange(best.shape[0]))


def assignment(score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The one-to-one pairs (rows, cols) that maximise the summed score (NaN counts as -1)."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(torch.nan_to_num(score.double(), nan=-1.0).numpy(), maximize=True)
    return torch.as_tensor(rows), torch.as_tensor(cols)


class Side(NamedTuple):
    """One model's units' matches in the other, for one layer of their own model: per unit,
    its top-k as (layer, index) of the other model, score, excess (and, for the decoding
    method, whether the two top tokens are the same); rank is the column. -1 / NaN where
    fewer than k exist."""

    layer: torch.Tensor  # [units, k] long
    index: torch.Tensor  # [units, k] long
    score: torch.Tensor  # [units, k] float64
    excess: torch.Tensor  # [units, k] float64
    same_top: torch.Tensor | None = None  # [units, k] bool


@dataclass
class LayerMatches:
    """Both directions, per layer of the unit's own model."""

    a: list[Side]
    b: list[Side]

    def mutual_a(self, layer: int) -> torch.Tensor:
        """[units of A's layer] bool: A's unit and its rank-0 match in B are each other's rank-0 match."""
        return _mutual(self.a[layer], self.b, layer)

    def mutual_b(self, layer: int) -> torch.Tensor:
        return _mutual(self.b[layer], self.a, layer)


def _mutual(side: Side, other: list[Side], layer: int) -> torch.Tensor:
    def best(o: Side, column: torch.Tensor) -> torch.Tensor:
        return column[:, 0] if column.shape[1] else torch.full((column.shape[0],), -1)

    # the other model's units flattened layer after layer (layers may differ in width)
    offsets = torch.tensor([0] + [o.layer.shape[0] for o in other]).cumsum(0)
    back_layer = torch.cat([best(o, o.layer) for o in other])
    back_index = torch.cat([best(o, o.index) for o in other])
    if side.layer.shape[1] == 0:
        return torch.zeros(side.layer.shape[0], dtype=torch.bool)
    lb, j = side.layer[:, 0], side.index[:, 0]
    found = lb >= 0
    flat = offsets[lb.clamp_min(0)] + j.clamp_min(0)
    units = torch.arange(side.layer.shape[0])
    return found & (back_layer[flat] == layer) & (back_index[flat] == units)


def _empty(units: int) -> Side:
    return Side(torch.full((units, 0), -1), torch.full((units, 0), -1),
                torch.empty(units, 0, dtype=torch.float64), torch.empty(units, 0, dtype=torch.float64))


def _merge(best: Side, layer: int, scores: torch.Tensor, k: int) -> Side:
    """``best`` (earlier layers of the other model) merged with this layer's top-k; stable.
    Excess is filled in at the end."""
    scores = scores.contiguous()  # rows contiguous for topk (r.T is not)
    top = top_matches(scores, k)
    index = torch.cat([best.index, top.index], 1)
    layers = torch.cat([best.layer, torch.where(top.index >= 0, layer, -1)], 1)
    score = torch.cat([best.score, top.score], 1)
    order = torch.sort(-torch.nan_to_num(score, nan=-torch.inf), dim=1, stable=True).indices[:, :k]
    kept = score.gather(1, order)
    return Side(layers.gather(1, order), index.gather(1, order), kept, torch.full_like(kept, torch.nan))


PairScores = Callable[[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
"""``pair(la, lb)`` → (key [n_a, n_b], baseline of A's units [n_a], baseline of B's [n_b]) for
layer la of A and lb of B: the key ranks the matches (NaN: never matched); each baseline
is in score units."""


def match_layer_pairs(widths_a: Sequence[int], widths_b: Sequence[int], pair: PairScores, k: int, *,
                      score_of: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]] | None = None,
                      advance: Callable[[], None] = lambda: None) -> LayerMatches:
    """Every unit's top-``k`` in the other model over all of its layers, in both directions.

    ``pair`` is called once per layer pair (A's layers outer). Each unit keeps its ``k``
    largest keys over every layer of the other model (ties: the lower layer, then the lower
    index); its baseline is the maximum of the pair baselines over those layers (the
    baseline over the whole other model). ``score_of`` turns a kept key into (score,
    same_top or None); by default the key is the score. ``excess`` = score − baseline.
    """
    side_a, side_b = [_empty(w) for w in widths_a], [_empty(w) for w in widths_b]
    best_a = [torch.full((w,), -torch.inf, dtype=torch.float64) for w in widths_a]
    best_b = [torch.full((w,), -torch.inf, dtype=torch.float64) for w in widths_b]
    for la in range(len(widths_a)):
        for lb in range(len(widths_b)):
            key, base_a, base_b = pair(la, lb)
            side_a[la] = _merge(side_a[la], lb, key, k)
            side_b[lb] = _merge(side_b[lb], la, key.T, k)
            best_a[la] = torch.maximum(best_a[la], base_a.double())
            best_b[lb] = torch.maximum(best_b[lb], base_b.double())
            advance()

    def finish(side: Side, baseline_: torch.Tensor) -> Side:
        score, same_top = score_of(side.score) if score_of else (side.score, None)
        return side._replace(score=score, excess=score - baseline_[:, None], same_top=same_top)

    return LayerMatches([finish(s, b) for s, b in zip(side_a, best_a)],
                        [finish(s, b) for s, b in zip(side_b, best_b)])


def overlap_counts(top_a: torch.Tensor, top_b: torch.Tensor, n_tokens: int):
    """``|T_i ∩ T_j|`` as a scipy CSR matrix [n_a, n_b] for top-k token ids ``top_a`` [n_a, k],
    ``top_b`` [n_b, k] (each row's ids distinct, below ``n_tokens``; -1 pads a row with fewer
    than k tokens). Sparse × sparse: never a dense [units, vocabulary] matrix."""
    if top_b.shape[1] != top_a.shape[1]:
        raise ValueError(f"top-k of different sizes: {top_a.shape[1]} and {top_b.shape[1]}")

    from scipy.sparse import csr_matrix

    def one_hot(top: torch.Tensor) -> csr_matrix:
        rows, cols = torch.nonzero(top >= 0, as_tuple=True)
        ids = top[rows, cols]
        return csr_matrix((torch.ones(ids.numel(), dtype=torch.int32).numpy(), (rows.numpy(), ids.numpy())),
                          shape=(top.shape[0], n_tokens))

    return (one_hot(top_a) @ one_hot(top_b).T).tocsr()


def decoding_overlap(top_a: torch.Tensor, top_b: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """``|T_i ∩ T_j| / k`` [n_a, n_b] (float32) for top-k token ids (see :func:`overlap_counts`)."""
    counts = overlap_counts(top_a, top_b, n_tokens)
    return torch.from_numpy(counts.toarray()).float() / top_a.shape[1]


def distinct_rows(top: torch.Tensor) -> torch.Tensor:
    """``top`` [n, k] with each id repeated in its row after its first place set to -1
    (token ids mapped onto strings may repeat: " the" and "the")."""
    earlier = (top[:, :, None] == top[:, None, :]) & torch.ones(top.shape[1], top.shape[1], dtype=torch.bool).tril(-1)
    return torch.where(earlier.any(2) | (top < 0), -1, top)


def shared_vocabulary(strings_a: Sequence[str | None],
                      strings_b: Sequence[str | None]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Two tokenizers' ids mapped onto one vocabulary of strings: (map_a [V_a], map_b [V_b], n),
    where ``map_a[t]`` is the id of token t's string in 0..n-1 (ids in order of first
    appearance, A's tokens first), equal strings one id; None (a token with no comparable
    string) maps to -1."""
    index: dict[str, int] = {}

    def ids(strings: Sequence[str | None]) -> torch.Tensor:
        return torch.tensor([-1 if s is None else index.setdefault(s, len(index)) for s in strings],
                            dtype=torch.long)

    map_a = ids(strings_a)
    map_b = ids(strings_b)
    return map_a, map_b, len(index)


def vocabulary_permutation(n_tokens: int, seed: int) -> torch.Tensor:
    """A random relabelling of ``n_tokens`` token ids (the decoding baseline's), seeded."""
    return torch.randperm(n_tokens, generator=torch.Generator().manual_seed(seed))


def _relabel(top: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    return torch.where(top >= 0, permutation[top.clamp_min(0)], -1)


def decoding_pairs(tops_a: Sequence[torch.Tensor], tops_b: Sequence[torch.Tensor], n_tokens: int,
                   seed: int) -> PairScores:
    """The :data:`PairScores` of the decoding method over per-layer top-k ids (module docstring).

    key_ij = 2 |T_i ∩ T_j| + [t_i = t_j] (t the top token) + u_ij, NaN where the two share no
    token; u_ij in [0, 1/2) is seeded noise that breaks ties at random (overlaps of 1 or 2
    tokens in 10 tie by the thousand; broken by layer they would pull every match to the
    other model's first layers). A's baseline is its unit's best overlap / k with B's units after B's token ids
    are relabelled by :func:`vocabulary_permutation` (``seed``), B's with A's relabelled
    by the same permutation.
    """
    permutation = vocabulary_permutation(n_tokens, seed)

    def pair(la: int, lb: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        top_a, top_b = tops_a[la], tops_b[lb]
        k = top_a.shape[1]
        counts = torch.from_numpy(overlap_counts(top_a, top_b, n_tokens).toarray()).float()
        same = (top_a[:, :1] == top_b[:, 0][None, :]) & (top_a[:, :1] >= 0)
        noise = torch.rand(counts.shape, generator=torch.Generator().manual_seed(seed * 1_000_003 + la * 1_009 + lb))
        key = torch.where(counts > 0, 2 * counts + same.float() + noise / 2, torch.nan)
        base_a = _row_max(overlap_counts(top_a, _relabel(top_b, permutation), n_tokens)) / k
        base_b = _row_max(overlap_counts(top_b, _relabel(top_a, permutation), n_tokens)) / k
        return key, base_a, base_b

    return pair


def _row_max(counts) -> torch.Tensor:
    return torch.from_numpy(counts.max(axis=1).toarray().ravel()).double()


def decoding_score(k: int) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Kept decoding keys → (score = |T_i ∩ T_j| / k, same_top); NaN keys stay NaN / False."""
    def score_of(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        filled = torch.floor(torch.nan_to_num(key, nan=0.0))  # the tie-breaking noise off
        return torch.where(torch.isnan(key), torch.nan, torch.floor(filled / 2) / k), (filled % 2) == 1

    return score_of


def match_decodings(tops_a: Sequence[torch.Tensor], tops_b: Sequence[torch.Tensor], k: int, n_tokens: int, *,
                    seed: int = 0, advance: Callable[[], None] = lambda: None) -> LayerMatches:
    """Every unit's top-``k`` matches in the other model by decoded tokens (module docstring),
    from per-layer top token ids (rows distinct, -1 padded, ids below ``n_tokens``)."""
    width = tops_a[0].shape[1]
    return match_layer_pairs([t.shape[0] for t in tops_a], [t.shape[0] for t in tops_b],
                             decoding_pairs(tops_a, tops_b, n_tokens, seed), k, score_of=decoding_score(width),
                             advance=advance)


_WORD = re.compile(r"\S+")


def word_ends(text: str, offsets: Sequence[tuple[int, int]]) -> list[int | None]:
    """For each whitespace-delimited word of ``text``, the index of the token whose character
    span ``[start, end)`` holds the word's last character — the last such token, when a
    multi-byte character is split over several (None if no token does: the tokenizer
    dropped it or the sequence was cut). ``offsets`` are the tokens' spans in ``text``, as a fast
    tokenizer's ``offset_mapping`` gives them (empty spans, e.g. BOS, hold nothing)."""
    ends = []
    token = 0
    for word in _WORD.finditer(text):
        last = word.end() - 1
        while token < len(offsets) and offsets[token][1] <= last:
            token += 1
        hit = token < len(offsets) and offsets[token][0] <= last < offsets[token][1]
        # byte-level BPE splits a multi-byte character over tokens that share its span: the last one ends the word
        while hit and token + 1 < len(offsets) and offsets[token + 1][0] <= last < offsets[token + 1][1]:
            token += 1
        ends.append(token if hit else None)
    return ends
