"""Reuse across tasks: overlap matrices, reuse counts, the stratified permutation test."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import polars as pl
import pytest

from compgraph.analysis.reuse import (
    mean_pairwise_jaccard,
    n_reused,
    null_circuit,
    overlap_matrix,
    permutation_test,
    reuse_counts,
)
from compgraph.errors import ConfigError

LAYERS, KINDS, PER_STRATUM = 10, ("head", "neuron"), 50


def universe() -> pl.DataFrame:
    """1,000 components: 50 in each of the 10 layers × 2 kinds."""
    rows = [{"component": f"L{layer}/{kind}{i}", "kind": kind, "layer": layer}
            for layer in range(LAYERS) for kind in KINDS for i in range(PER_STRATUM)]
    return pl.DataFrame(rows)


def circuit_of(components: list[str]) -> pl.DataFrame:
    u = universe().filter(pl.col("component").is_in(components))
    return u.with_columns(pl.lit(1.0).alias("score"))


def small(*names: str) -> pl.DataFrame:
    return pl.DataFrame({"component": list(names), "kind": ["head"] * len(names), "layer": [0] * len(names),
                         "score": [1.0] * len(names)})


def test_statistics_on_sets():
    sets = [{1, 2, 3}, {2, 3, 4}, {5}]
    # pairs: 2/4, 0/4, 0/3
    assert mean_pairwise_jaccard(sets) == pytest.approx((2 / 4 + 0 + 0) / 3, abs=1e-15)
    assert n_reused(sets) == 2.0
    assert math.isnan(mean_pairwise_jaccard([{1}]))


def test_overlap_matrix_exact():
    circuits = {"ioi": small("a", "b", "c", "d"), "colored": small("c", "d", "e"), "gt": small("x")}
    jac = overlap_matrix(circuits)
    assert jac.columns == ["task", "ioi", "colored", "gt"]
    assert jac.rows() == [("ioi", 1.0, 2 / 5, 0.0), ("colored", 2 / 5, 1.0, 0.0), ("gt", 0.0, 0.0, 1.0)]
    frac = overlap_matrix(circuits, measure="shared_fraction_a")
    assert frac.rows()[:2] == [("ioi", 1.0, 2 / 4, 0.0), ("colored", 2 / 3, 1.0, 0.0)]
    with pytest.raises(ConfigError, match="measure"):
        overlap_matrix(circuits, measure="cosine")


def test_reuse_counts_sorted():
    circuits = {"t1": small("a", "b"), "t2": small("b", "c"), "t3": small("b", "a")}
    assert reuse_counts(circuits).to_dicts() == [
        {"component": "b", "kind": "head", "layer": 0, "n_tasks": 3, "tasks": ["t1", "t2", "t3"]},
        {"component": "a", "kind": "head", "layer": 0, "n_tasks": 2, "tasks": ["t1", "t3"]},
        {"component": "c", "kind": "head", "layer": 0, "n_tasks": 1, "tasks": ["t2"]},
    ]


def test_null_circuit_keeps_per_stratum_counts():
    chosen = ["L0/head0", "L0/head1", "L0/head2", "L3/neuron7", "L9/head4", "L9/neuron0"]
    circuit = circuit_of(chosen)
    want = Counter(zip(circuit["layer"], circuit["kind"]))
    u = universe()
    draws = [null_circuit(circuit, u, np.random.default_rng(s)) for s in range(20)]
    for null in draws:
        assert Counter(zip(null["layer"], null["kind"])) == want
        assert null["component"].n_unique() == len(chosen)
        assert set(null["component"]) <= set(u["component"])
        assert all(c.startswith(f"L{layer}/{kind}") for c, kind, layer in null.iter_rows())
    assert len({tuple(d["component"]) for d in draws}) == 20  # they differ


def test_planted_reuse_is_significant():
    planted = circuit_of([f"L{layer}/head0" for layer in range(LAYERS)])
    circuits = {"t1": planted, "t2": planted, "t3": planted}
    result = permutation_test(circuits, universe(), n=200, seed=0)
    assert result["observed"] == 1.0
    assert result["p_value"] == 1 / 201  # no null sample reaches 1.0
    assert result["n"] == 200 and result["null_mean"] < 0.05
    counted = permutation_test(circuits, universe(), n=200, seed=0, statistic="n_reused")
    assert counted["observed"] == 10.0 and counted["p_value"] == 1 / 201


P_RANDOM = 280 / 501
"""What the seeded run below gives (280 of 500 null samples reach the observed value, plus one)."""


def test_random_circuits_are_not_significant():
    u = universe()["component"].to_list()
    rng = np.random.default_rng(7)
    circuits = {f"t{i}": circuit_of([u[j] for j in rng.choice(len(u), 40, replace=False)]) for i in range(3)}
    result = permutation_test(circuits, universe(), n=500, seed=0)
    assert result["p_value"] == P_RANDOM
    assert result["p_value"] > 0.05
    again = permutation_test(circuits, universe(), n=500, seed=0)
    assert again == result  # seeded: the same answer


def test_refusals():
    u = universe()
    with pytest.raises(ConfigError, match="not in the universe"):
        permutation_test({"a": small("zzz"), "b": small("yyy")}, u, n=10)
    with pytest.raises(ConfigError, match="at least two"):
        permutation_test({"a": circuit_of(["L0/head0"])}, u, n=10)
    with pytest.raises(ConfigError, match="statistic"):
        permutation_test({"a": circuit_of(["L0/head0"]), "b": circuit_of(["L0/head0"])}, u, statistic="max")
