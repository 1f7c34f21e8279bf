"""Degree tables and heavy-tail fits, on hand-built graphs and seeded power-law samples."""

from __future__ import annotations

import math

import networkx as nx
import powerlaw
import pytest
import scipy.stats as st

from compgraph.analysis.degrees import FIT_KEYS, degree_frame, fit_heavy_tail


def test_degree_frame_directed():
    D = nx.DiGraph()
    D.add_node("a", kind="head", layer=0)
    D.add_node("b", kind="neuron", layer=1)
    D.add_node("c")
    D.add_edges_from([("a", "b"), ("a", "c"), ("c", "b"), ("b", "a")])
    assert degree_frame(D).to_dicts() == [
        {"node": "a", "in_degree": 1, "out_degree": 2, "degree": 3, "kind": "head", "layer": 0},
        {"node": "b", "in_degree": 2, "out_degree": 1, "degree": 3, "kind": "neuron", "layer": 1},
        {"node": "c", "in_degree": 1, "out_degree": 1, "degree": 2, "kind": None, "layer": None},
    ]


def test_degree_frame_undirected_has_no_in_out():
    frame = degree_frame(nx.star_graph(3))
    assert frame["degree"].to_list() == [3, 1, 1, 1]
    assert frame["node"].to_list() == ["0", "1", "2", "3"]
    assert frame["in_degree"].null_count() == 4 and frame["out_degree"].null_count() == 4


def zipf_sample(alpha: float, n: int, seed: int) -> list[int]:
    """A discrete power law p(k) = k^-alpha / zeta(alpha), k >= 1 (xmin = 1)."""
    return st.zipf.rvs(alpha, size=n, random_state=seed).tolist()


@pytest.mark.parametrize("alpha", [2.2, 2.5, 3.0])
def test_alpha_recovered(alpha):
    sample = zipf_sample(alpha, 5000, seed=0)
    fixed = fit_heavy_tail(sample, xmin=1)
    # the MLE's standard error here is about (alpha - 1) / sqrt(n) <= 0.03: 0.08 is more than 2.5 of them
    assert abs(fixed["alpha"] - alpha) < 0.08
    assert fixed["xmin"] == 1 and fixed["n"] == fixed["n_tail"] == 5000
    free = fit_heavy_tail(sample)  # xmin chosen by the KS distance: fewer points, a wider margin
    assert abs(free["alpha"] - alpha) < 0.15
    assert free["R_exponential"] > 0  # a power law beats an exponential on a power-law sample


@pytest.mark.filterwarnings("ignore")  # powerlaw's own numerical chatter
def test_fields_are_what_powerlaw_returns():
    sample = zipf_sample(2.5, 2000, seed=1) + [0, 0, 0]  # zeros are left out
    got = fit_heavy_tail(sample)
    fit = powerlaw.Fit([x for x in sample if x > 0], discrete=True, verbose=False)
    R_ln, p_ln = fit.distribution_compare("power_law", "lognormal")
    R_exp, p_exp = fit.distribution_compare("power_law", "exponential")
    assert got == {"alpha": fit.power_law.alpha, "xmin": fit.power_law.xmin, "sigma": fit.power_law.standard_err,
                   "R_lognormal": R_ln, "p_lognormal": p_ln, "R_exponential": R_exp, "p_exponential": p_exp,
                   "n": 2000, "n_tail": fit.n_tail}
    assert tuple(got) == FIT_KEYS


def test_nothing_to_fit_is_nan():
    got = fit_heavy_tail([0, 3, 3, 3])
    assert got["n"] == 3 and got["n_tail"] == 0
    assert all(math.isnan(got[k]) for k in FIT_KEYS if k not in ("n", "n_tail"))


@pytest.mark.filterwarnings("ignore")
def test_xmin_falls_back_to_the_smallest_value_when_the_search_fails():
    # powerlaw's own xmin search raises on this sample (two distinct values)
    with pytest.raises(ValueError):
        _ = powerlaw.Fit([4.0] * 8 + [5.0, 5.0], discrete=True, verbose=False).power_law.alpha
    got = fit_heavy_tail([4] * 8 + [5, 5])
    assert got["xmin"] == 4 and got["n_tail"] == 10
    assert got["alpha"] == fit_heavy_tail([4] * 8 + [5, 5], xmin=4)["alpha"]
