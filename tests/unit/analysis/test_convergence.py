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
