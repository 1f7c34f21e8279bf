"""Convergence measures on hand-built best-match frames whose answers are worked out here."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from compgraph.analysis import convergence as conv

# A has 3 layers (depths 0, 0.5, 1), B has 5 (depths 0, .25, .5, .75, 1)
BEST = pl.DataFrame({
    "layer": [0, 0, 1, 2, 2],
    "index": [0, 1, 0, 0, 1],
    "dst_layer": [0, 1, 2, 4, 3],
    "score": [0.9, 0.4, 0.8, 0.7, 0.6],
    "excess": [0.6, 0.1, 0.55, 0.5, -0.1],
    "mutual": [True, False, True, False, False],
})


def test_by_layer():
    got = conv.by_layer(BEST, n_layers_b=5)
    assert got["layer"].to_list() == [0, 1, 2] and got["units"].to_list() == [2, 1, 2]
    assert got["universal"].to_list() == [0.5, 1.0, 0.0]  # 0.5 is not above 0.5
    assert got["mean_score"].to_list() == pytest.approx([0.65, 0.8, 0.65])
    assert got["mutual"].to_list() == [0.5, 1.0, 0.0]
    assert got["match_depth"].to_list() == pytest.approx([0.125, 0.5, 0.875])


def test_depth_map_rows_are_shares_of_each_band():
    got = conv.depth_map(BEST, n_layers_a=3, n_layers_b=5, bins=2)
    # A depth bands: [0, .5) holds layer 0; [.5, 1] layers 1, 2. B: dst depths 0, .25 | .5, 1, .75
    np.testing.assert_array_equal(got, [[1.0, 0.0], [0.0, 1.0]])
    got4 = conv.depth_map(BEST, 3, 5, bins=4)
    want = np.zeros((4, 4))
    want[0, 0], want[0, 1] = 0.5, 0.5      # layer 0 -> depths 0 and .25
    want[2, 2] = 1.0                       # layer 1 (depth .5) -> .5
    want[3, 3] = 1.0                       # layer 2 (depth 1) -> 1 and .75: both in the last band
    np.testing.assert_array_equal(got4, want)


def test_summary():
    got = conv.summary(BEST).row(0, named=True)
    assert got["units"] == 5 and got["universal"] == pytest.approx(0.4) and got["mutual"] == pytest.approx(0.4)
    assert got["mean_excess"] == pytest.approx(0.33)
    assert got["excess_q50"] == pytest.approx(0.5)
    assert got["excess_q25"] == pytest.approx(0.1) and got["excess_q95"] == pytest.approx(0.59)


def test_same_top_is_the_share_of_best_matches_with_the_same_top_token():
    decoded = BEST.with_columns(pl.Series("same_top", [True, False, True, True, False]))
    assert conv.summary(decoded)["same_top"].to_list() == [pytest.approx(0.6)]
    assert conv.by_layer(decoded, n_layers_b=5)["same_top"].to_list() == [0.5, 1.0, 0.5]
    assert "same_top" not in conv.summary(BEST).columns  # the activation method has none


UNITS_B = pl.DataFrame({"uid": ["b/h0", "b/h1", "b/h2", "b/h3", "b/n0", "b/n1"],
                        "kind": ["head"] * 4 + ["neuron"] * 2, "layer": [0, 0, 0, 0, 0, 0]})


def test_circuit_reuse_counts_members_whose_best_match_is_in_the_other_circuit():
    best = pl.DataFrame({"component": ["a/h0", "a/h1", "a/h2", "a/n0"], "match": ["b/h0", "b/h3", "b/h1", "b/n1"]})
    got = conv.circuit_reuse(best, ["a/h0", "a/h1", "a/n0", "a/mlp"], ["b/h0", "b/h1", "b/n1"], UNITS_B, trials=10)
    # a/mlp has no match; a/h2 is not in A's circuit; a/h1's match b/h3 is not in B's
    assert (got["members"], got["matched"], got["reused"]) == (4, 3, 2) and got["share"] == pytest.approx(2 / 3)
    # B's circuit holds 2 of 4 heads and 1 of 2 neurons: each match is in a random such set w.p. 1/2
    assert got["expected"] == pytest.approx(0.5)


def test_circuit_reuse_p_value_is_the_chance_of_a_share_as_large_under_the_null():
    # 2 members matched to distinct heads, both in B's 2-head circuit out of 4 heads:
    # a random 2-subset holds both with probability 1 / C(4, 2) = 1/6
    best = pl.DataFrame({"component": ["a/h0", "a/h1"], "match": ["b/h0", "b/h1"]})
    trials = 20_000
    got = conv.circuit_reuse(best, ["a/h0", "a/h1"], ["b/h0", "b/h1"], UNITS_B, trials=trials, seed=1)
    assert got["share"] == 1.0 and got["expected"] == pytest.approx(0.5)
    sigma = (1 / 6 * 5 / 6 / trials) ** 0.5
    assert abs(got["p"] - 1 / 6) < 4 * sigma
    # the null's shares are 0, 1/2, 1 with probabilities 1/6, 4/6, 1/6: std sqrt(1/12)
    assert got["null_std"] == pytest.approx((1 / 12) ** 0.5, abs=0.01)
    assert conv.circuit_reuse(best, ["a/h0", "a/h1"], ["b/h0", "b/h1"], UNITS_B, trials=50, seed=1) == \
        conv.circuit_reuse(best, ["a/h0", "a/h1"], ["b/h0", "b/h1"], UNITS_B, trials=50, seed=1)


def test_circuit_reuse_null_keeps_each_layers_count():
    # B: heads in layers 0 (h0, h1) and 1 (h2, h3); B's circuit holds h0 (layer 0) and h2 (layer 1)
    units = UNITS_B.with_columns(pl.Series("layer", [0, 0, 1, 1, 0, 0]))
    best = pl.DataFrame({"component": ["a/x", "a/y", "a/z"], "match": ["b/h0", "b/h1", "b/h3"]})
    got = conv.circuit_reuse(best, ["a/x", "a/y", "a/z"], ["b/h0", "b/h2"], units, trials=4000, seed=2)
    assert got["reused"] == 1 and got["share"] == pytest.approx(1 / 3)
    # each stratum holds one of its two heads: every match is in the random set w.p. 1/2
    assert got["expected"] == pytest.approx(0.5)
    # null share: (X0 + X1) / 3, X0 = hits among h0/h1 (exactly 1: one of the two is drawn), X1 ~ Bernoulli(1/2)
    # share >= 1/3 always holds
    assert got["p"] == 1.0 and got["null_std"] == pytest.approx(0.5 / 3, abs=0.01)


def test_circuit_reuse_without_matched_members_is_nan():
    got = conv.circuit_reuse(pl.DataFrame({"component": ["a/h9"], "match": ["b/h0"]}), ["a/mlp"], ["b/h0"], UNITS_B)
    assert got["matched"] == 0 and np.isnan(got["share"]) and np.isnan(got["p"])
