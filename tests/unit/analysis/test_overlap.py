"""Overlap of two circuits: exact fractions on hand-built member frames."""

from __future__ import annotations

import math

import polars as pl
import pytest

from compgraph.analysis.overlap import COUNTS, MEASURES, members, overlap
from compgraph.errors import ConfigError


def circuit(*rows) -> pl.DataFrame:
    return pl.DataFrame([dict(zip(("component", "kind", "layer", "score"), r)) for r in rows],
                        schema={"component": pl.String, "kind": pl.String, "layer": pl.Int64, "score": pl.Float64})


A = circuit(("h1", "head", 0, 0.5), ("h2", "head", 1, -2.0), ("n1", "neuron", 1, 1.0), ("n2", "neuron", 2, 0.2))
B = circuit(("h2", "head", 1, 1.0), ("n1", "neuron", 1, -3.0), ("n3", "neuron", 2, 0.4))


def row(frame: pl.DataFrame, i: int = 0) -> dict:
    return frame.row(i, named=True)


def same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(value, abs=1e-12), key


def test_identical_circuits_overlap_fully():
    same(row(overlap(A, A)), {"n_a": 4, "n_b": 4, "n_shared": 4, "n_union": 4, "jaccard": 1.0, "overlap_coef": 1.0,
                              "weighted": 1.0, "shared_fraction_a": 1.0, "shared_fraction_b": 1.0})


def test_disjoint_circuits_overlap_nothing():
    C = circuit(("x", "head", 0, 1.0))
    same(row(overlap(A, C)), {"n_a": 4, "n_b": 1, "n_shared": 0, "n_union": 5, "jaccard": 0.0, "overlap_coef": 0.0,
                              "weighted": 0.0, "shared_fraction_a": 0.0, "shared_fraction_b": 0.0})


# score shares: A's |score| total 3.7 (h1 .5, h2 2, n1 1, n2 .2), B's 4.4 (h2 1, n1 3, n3 .4)
def test_hand_example():
    # A ∩ B = {h2, n1}; |A| = 4, |B| = 3, |A ∪ B| = 5
    # weighted: (min(2/3.7, 1/4.4) + min(1/3.7, 3/4.4)) / (.5/3.7 + 2/3.7 + 3/4.4 + .2/3.7 + .4/4.4)
    table = overlap(A, B)
    assert table.columns == [*COUNTS, *MEASURES]
    same(row(table), {"n_a": 4, "n_b": 3, "n_shared": 2, "n_union": 5, "jaccard": 2 / 5, "overlap_coef": 2 / 3,
                      "weighted": (1 / 4.4 + 1 / 3.7) / (2.7 / 3.7 + 3.4 / 4.4), "shared_fraction_a": 2 / 4,
                      "shared_fraction_b": 2 / 3})


def test_weighted_overlap_ignores_the_scale_of_a_tasks_metric():
    scaled = B.with_columns(pl.col("score") * 1000)
    assert row(overlap(A, scaled))["weighted"] == pytest.approx(row(overlap(A, B))["weighted"], abs=1e-12)
    zero = B.with_columns(pl.lit(0.0).alias("score"))
    got = row(overlap(zero, zero))
    assert math.isnan(got["weighted"]) and got["jaccard"] == 1.0


def test_by_kind():
    table = overlap(A, B, by="kind")
    assert table["kind"].to_list() == ["head", "neuron"]
    same(row(table, 0), {"kind": "head", "n_a": 2, "n_b": 1, "n_shared": 1, "n_union": 2, "jaccard": 1 / 2,
                         "overlap_coef": 1.0, "weighted": (1 / 4.4) / (2.5 / 3.7), "shared_fraction_a": 1 / 2,
                         "shared_fraction_b": 1.0})
    same(row(table, 1), {"kind": "neuron", "n_a": 2, "n_b": 2, "n_shared": 1, "n_union": 3, "jaccard": 1 / 3,
                         "overlap_coef": 1 / 2, "weighted": (1 / 3.7) / (3.4 / 4.4 + .2 / 3.7),
                         "shared_fraction_a": 1 / 2,
                         "shared_fraction_b": 1 / 2})


def test_by_layer_with_empty_groups():
    nan = math.nan
    table = overlap(A, B, by="layer", groups=range(4))
    assert table["layer"].to_list() == [0, 1, 2, 3]
    same(row(table, 0), {"layer": 0, "n_a": 1, "n_b": 0, "n_shared": 0, "n_union": 1, "jaccard": 0.0,
                         "overlap_coef": nan, "weighted": 0.0, "shared_fraction_a": 0.0, "shared_fraction_b": nan})
    same(row(table, 1), {"layer": 1, "n_a": 2, "n_b": 2, "n_shared": 2, "n_union": 2, "jaccard": 1.0,
                         "overlap_coef": 1.0, "weighted": (1 / 4.4 + 1 / 3.7) / (2 / 3.7 + 3 / 4.4),
                         "shared_fraction_a": 1.0, "shared_fraction_b": 1.0})
    same(row(table, 2), {"layer": 2, "n_a": 1, "n_b": 1, "n_shared": 0, "n_union": 2, "jaccard": 0.0,
                         "overlap_coef": 0.0, "weighted": 0.0, "shared_fraction_a": 0.0, "shared_fraction_b": 0.0})
    same(row(table, 3), {"layer": 3, "n_a": 0, "n_b": 0, "n_shared": 0, "n_union": 0, "jaccard": nan,
                         "overlap_coef": nan, "weighted": nan, "shared_fraction_a": nan, "shared_fraction_b": nan})


def test_two_empty_circuits_are_nan():
    empty = circuit()
    got = row(overlap(empty, empty))
    assert got["n_union"] == 0 and all(math.isnan(got[m]) for m in MEASURES)


def test_members_dedupes_by_largest_magnitude_and_fills_missing_columns():
    frame = circuit(("h1", "head", 0, 0.5), ("h1", "head", 0, -0.7), ("h2", "head", 1, None))
    assert members(frame).to_dicts() == [{"component": "h1", "kind": "head", "layer": 0, "score": 0.7},
                                         {"component": "h2", "kind": "head", "layer": 1, "score": 0.0}]
    bare = members(pl.DataFrame({"component": ["x"]}))
    assert bare.to_dicts() == [{"component": "x", "kind": None, "layer": None, "score": 0.0}]


def test_bad_arguments():
    with pytest.raises(ConfigError, match="by must be"):
        overlap(A, B, by="head")
    with pytest.raises(ConfigError, match="groups needs"):
        overlap(A, B, groups=[0])
    with pytest.raises(ConfigError, match="component"):
        members(pl.DataFrame({"uid": ["x"]}))
