"""Matching units across models: each measure against a computation written here (numpy's
corrcoef, hand-built inputs whose answers are known)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compgraph.extract import matching
from compgraph.extract.matching import CorrelationStats, Matches


def _stats(x: torch.Tensor, y: torch.Tensor, chunks: int = 3) -> CorrelationStats:
    stats = CorrelationStats(x.shape[1], y.shape[1])
    for xs, ys in zip(x.chunk(chunks), y.chunk(chunks)):
        stats.update(xs, ys)
    return stats


def test_streamed_correlation_equals_numpys_corrcoef():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(301, 5, generator=g) * 3 + 7  # offsets and scales: cancellation is exercised
    y = torch.cat([x[:, :2] * -2 + torch.randn(301, 2, generator=g), torch.randn(301, 4, generator=g)], 1)
    got = _stats(x, y).correlation()
    want = np.corrcoef(x.double().numpy().T, y.double().numpy().T)[:5, 5:]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-12)
    assert _stats(x, y).n == 301


def test_a_constant_unit_has_no_correlation():
    x = torch.tensor([[1.0, 2.0], [1.0, 3.0], [1.0, 5.0]])
    y = torch.tensor([[4.0], [6.0], [10.0]])
    r = _stats(x, y, chunks=1).correlation()
    assert torch.isnan(r[0, 0]) and r[1, 0].item() == pytest.approx(1.0, abs=1e-15)


def test_unaligned_positions_are_refused():
    with pytest.raises(ValueError, match="unaligned activations: 3 positions of A, 2 of B"):
        CorrelationStats(1, 1).update(torch.zeros(3, 1), torch.zeros(2, 1))


def test_nbytes_is_one_layer_pair_of_sums():
    assert CorrelationStats(3, 4).nbytes == 8 * (12 + 2 * 7)


def test_random_rotations_are_orthogonal_and_seeded():
    r = matching.random_rotation(6, seed=1)
    torch.testing.assert_close(r @ r.T, torch.eye(6, dtype=torch.float64), atol=1e-12, rtol=0)
    assert torch.equal(r, matching.random_rotation(6, seed=1))
    assert not torch.allclose(r, matching.random_rotation(6, seed=2))


def test_top_matches_rank_descending_with_ties_in_column_order_and_skip_nan():
    score = torch.tensor([[0.1, 0.9, 0.9, -0.2],
                          [float("nan"), 0.3, float("nan"), float("nan")]])
    got = matching.top_matches(score, 3)
    assert got.index.tolist() == [[1, 2, 0], [1, -1, -1]]
    assert got.score[0].tolist() == pytest.approx([0.9, 0.9, 0.1])
    assert got.score[1, 0].item() == pytest.approx(0.3) and torch.isnan(got.score[1, 1:]).all()
    assert matching.top_matches(score, 10).index.shape == (2, 4)  # k beyond the columns
    crossing = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.1]])  # a tie across the 2nd place: lowest column wins
    assert matching.top_matches(crossing, 2).index.tolist() == [[1, 0]]
    assert matching.top_matches(crossing.flip(1), 3).index.tolist() == [[3, 1, 2]]


def test_mutual_means_each_is_the_others_best():
    forward = Matches(torch.tensor([[1], [1], [-1]]), torch.zeros(3, 1))  # A0 -> B1, A1 -> B1, A2 -> none
    backward = Matches(torch.tensor([[2], [0]]), torch.zeros(2, 1))  # B0 -> A2, B1 -> A0
    assert matching.mutual(forward, backward).tolist() == [True, False, False]


def test_assignment_maximises_the_sum_not_each_row():
    # greedy row by row takes (0, 0) = 0.9 and then (1, 1) = 0.1: 1.0; the optimum is 0.8 + 0.7 = 1.5
    score = torch.tensor([[0.9, 0.8], [0.7, 0.1]])
    rows, cols = matching.assignment(score)
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0)]


def test_decoding_overlap_counts_shared_tokens_over_k():
    top_a = torch.tensor([[5, 1, 2], [7, 8, 9], [3, -1, -1]])
    top_b = torch.tensor([[2, 5, 0], [9, 4, 3]])
    got = matching.decoding_overlap(top_a, top_b, n_tokens=10)
    want = torch.tensor([[2, 0], [0, 1], [0, 1]]) / 3
    torch.testing.assert_close(got, want.float())
    with pytest.raises(ValueError, match="top-k of different sizes"):
        matching.decoding_overlap(top_a, top_b[:, :2], n_tokens=10)


def test_word_ends_align_two_tokenizations_of_one_text():
    text = "The cat  sat."
    # A: BOS (empty span), "The", " cat", " ", " sat", "."   B: "Th", "e", " c", "at", "  sat."
    a = [(0, 0), (0, 3), (3, 7), (7, 8), (8, 12), (12, 13)]
    b = [(0, 2), (2, 3), (3, 5), (5, 7), (7, 13)]
    assert matching.word_ends(text, a) == [1, 2, 5]
    assert matching.word_ends(text, b) == [1, 3, 4]
    assert matching.word_ends("ab cd", [(0, 2)]) == [0, None]  # a word no token covers
    # "café": byte-level BPE splits "é" into two tokens that share its span; the second ends the word
    assert matching.word_ends("café ok", [(0, 3), (3, 4), (3, 4), (4, 7)]) == [2, 3]


def test_a_permuted_copy_is_recovered_exactly_and_beats_its_rotated_baseline():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2000, 12, generator=g).exp()  # skewed, like neuron activations
    perm = torch.randperm(12, generator=g)
    y = x[:, perm]  # y_j = x_perm[j]: A's unit perm[j] is B's unit j
    r = _stats(x, y).correlation()
    forward, backward = matching.top_matches(r, 2), matching.top_matches(r.T, 2)
    assert torch.equal(forward.index[:, 0], torch.argsort(perm))
    assert matching.mutual(forward, backward).all()
    rotation = matching.random_rotation(12, seed=0)
    rotated = _stats(x, y @ rotation.float()).correlation()
    assert forward.score[:, 0].tolist() == pytest.approx([1.0] * 12, abs=1e-12)
    want = np.corrcoef(x.double().numpy().T, (y.double() @ rotation).numpy().T)[:12, 12:].max(axis=1)
    np.testing.assert_allclose(matching.baseline(rotated).numpy(), want, atol=1e-6)  # y @ R in float32
    assert (want < 0.9).all()  # no rotated unit tracks one of A's: the excess is real


def test_a_noisy_copy_is_still_recovered_and_independent_units_have_no_excess():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4000, 40, generator=g)
    perm = torch.randperm(40, generator=g)
    noisy = x[:, perm] + 0.3 * torch.randn(4000, 40, generator=g)
    r = _stats(x, noisy).correlation()
    assert torch.equal(matching.top_matches(r, 1).index[:, 0], torch.argsort(perm))
    other = torch.randn(4000, 40, generator=g)  # an independent "model"
    r0 = _stats(x, other).correlation()
    rot = _stats(x, other @ matching.random_rotation(40, seed=1).float()).correlation()
    excess = matching.top_matches(r0, 1).score[:, 0] - matching.baseline(rot)
    # both maxima are of 40 draws of about N(0, 1/4000): their difference is noise of ~ 0.01
    assert excess.abs().mean().item() < 0.01 and r0.abs().max().item() < 0.08


# ---- across layers, and the decoding method ----------------------------------------------------

def test_layer_pairs_keep_the_best_k_over_all_layers_with_ties_to_the_lower_layer_and_index():
    keys = {(0, 0): torch.tensor([[0.5, 0.9], [0.2, torch.nan]]),
            (0, 1): torch.tensor([[0.9, 0.1, 0.3], [torch.nan, torch.nan, 0.4]])}
    bases = {(0, 0): (torch.tensor([0.1, 0.3]), torch.tensor([0.0, 0.2])),
             (0, 1): (torch.tensor([0.2, 0.1]), torch.tensor([0.1, 0.1, 0.5]))}
    got = matching.match_layer_pairs([2], [2, 3], lambda la, lb: (keys[la, lb], *bases[la, lb]), 2)
    a = got.a[0]
    # A's unit 0: 0.9 in layer 0 (index 1) and 0.9 in layer 1 (index 0): the lower layer first
    assert a.layer.tolist() == [[0, 1], [1, 0]] and a.index.tolist() == [[1, 0], [2, 0]]
    torch.testing.assert_close(a.score, torch.tensor([[0.9, 0.9], [0.4, 0.2]], dtype=torch.float64))
    torch.testing.assert_close(a.excess, a.score - torch.tensor([[0.2], [0.3]], dtype=torch.float64))
    b1 = got.b[1]  # B's layer 1: every unit sees A's layer 0 only; NaN never matched
    assert b1.index.tolist() == [[0, -1], [0, -1], [1, 0]]
    torch.testing.assert_close(b1.excess[:, 0], torch.tensor([0.8, 0.0, -0.1], dtype=torch.float64))
    assert got.mutual_a(0).tolist() == [True, True] and got.mutual_b(1).tolist() == [False, False, True]
    assert got.mutual_b(0).tolist() == [False, True]  # B's L0/1's best is A's 0, whose best is B's L0/1


def test_distinct_rows_keep_each_id_at_its_first_place():
    got = matching.distinct_rows(torch.tensor([[1, 2, 1, 3], [4, -1, 4, 4]]))
    assert got.tolist() == [[1, 2, -1, 3], [4, -1, -1, -1]]


def test_a_shared_vocabulary_gives_equal_strings_one_id_and_none_no_id():
    map_a, map_b, n = matching.shared_vocabulary(["x", "y", None, "x"], ["y", "z", None])
    assert map_a.tolist() == [0, 1, -1, 0] and map_b.tolist() == [1, 2, -1] and n == 3


def _decoding_answer(tops_a, tops_b, permutation):
    """Plain Python sets: each of A's units' (score, same_top, baseline) against every unit of B."""
    k = tops_a[0].shape[1]
    units_b = [(lb, j, set(t[j].tolist()) - {-1}, int(t[j, 0])) for lb, t in enumerate(tops_b)
               for j in range(t.shape[0])]
    out = []
    for top in tops_a:
        for row in top.tolist():
            mine = set(row) - {-1}
            cands = [(len(mine & s) / k, row[0] == first and row[0] >= 0, lb, j) for lb, j, s, first in units_b
                     if mine & s]
            cands.sort(key=lambda c: (-c[0], -c[1], c[2], c[3]))
            base = max(len(mine & {int(permutation[t]) for t in s}) / k for _, _, s, _ in units_b)
            out.append((cands, base))
    return out


def test_decoding_matches_equal_set_overlaps_ranked_by_overlap_then_top_token():
    tops_a = [torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]])]
    tops_b = [torch.tensor([[2, 1, 9], [0, 1, 2], [11, 10, -1]]), torch.tensor([[1, 2, 0], [5, 3, 4]])]
    got = matching.match_decodings(tops_a, tops_b, 2, n_tokens=12, seed=5)
    side = got.a[0]
    # unit 0: {0,1,2} in B's L0/1 (top 0 = 0: same) and L1/0 (top 1): the same top token ranks first
    assert side.layer.tolist() == [[0, 1], [1, -1], [-1, -1]]
    assert side.index.tolist() == [[1, 0], [1, -1], [-1, -1]]
    torch.testing.assert_close(side.score[:2, 0], torch.tensor([1.0, 1.0], dtype=torch.float64))
    assert side.same_top.tolist() == [[True, False], [False, False], [False, False]]
    permutation = matching.vocabulary_permutation(12, 5)
    answer = _decoding_answer(tops_a, tops_b, permutation)
    for unit, (cands, base) in enumerate(answer):
        for rank, (score, same, lb, j) in enumerate(cands[:2]):
            assert (side.layer[unit, rank], side.index[unit, rank]) == (lb, j)
            assert side.score[unit, rank].item() == pytest.approx(score)
            assert side.same_top[unit, rank].item() == same
            assert side.excess[unit, rank].item() == pytest.approx(score - base)
    assert got.mutual_a(0).tolist() == [True, True, False]
    assert got.b[0].index[2].tolist() == [-1, -1]  # shares no token with any of A's units: no match


def test_decoding_baselines_relabel_the_other_models_tokens():
    tops = [torch.tensor([[0, 1], [2, 3]])]
    permutation = matching.vocabulary_permutation(4, 0)
    got = matching.match_decodings(tops, tops, 1, n_tokens=4, seed=0)
    relabelled = [set(permutation[t].tolist()) for t in tops[0]]
    for unit, row in enumerate(tops[0].tolist()):
        base = max(len(set(row) & s) for s in relabelled) / 2
        assert got.a[0].excess[unit, 0].item() == pytest.approx(1.0 - base)
        assert got.b[0].excess[unit, 0].item() == pytest.approx(1.0 - base)
    assert sorted(permutation.tolist()) == [0, 1, 2, 3]
    assert torch.equal(permutation, matching.vocabulary_permutation(4, 0))


def test_decoding_ties_are_broken_at_random_not_by_layer_and_the_seed_repeats_them():
    # every unit of A shares exactly one token with every unit of B's 4 layers: all tie
    tops_a = [torch.tensor([[0, 100 + i] for i in range(64)])]
    tops_b = [torch.tensor([[0, 200 + 10 * layer + j] for j in range(8)]) for layer in range(4)]
    got = matching.match_decodings(tops_a, tops_b, 1, n_tokens=300, seed=3)
    layers = got.a[0].layer[:, 0]
    assert (got.a[0].score[:, 0] == 0.5).all()
    counts = torch.bincount(layers, minlength=4)
    assert (counts > 0).all()  # by layer, every match would be in layer 0
    assert torch.equal(matching.match_decodings(tops_a, tops_b, 1, n_tokens=300, seed=3).a[0].layer, got.a[0].layer)
    assert not torch.equal(matching.match_decodings(tops_a, tops_b, 1, n_tokens=300, seed=4).a[0].index, got.a[0].index)
