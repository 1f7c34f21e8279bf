"""Degrees of a component graph and whether they are heavy-tailed.

Definitions
-----------
*Degrees* (:func:`degree_frame`), unweighted edge counts (parallel edges each count):
``in_degree`` = edges ending at the node, ``out_degree`` = edges leaving it,
``degree`` = ``in_degree + out_degree`` (a self-loop counts in both). On an undirected
graph ``in_degree`` and ``out_degree`` are null and ``degree`` is the number of incident
edges (a self-loop counts twice, as networkx counts it).

*Heavy-tail fit* (:func:`fit_heavy_tail`), with the ``powerlaw`` package (Clauset,
Shalizi & Newman 2009; Alstott et al. 2014) on the positive degrees, discrete:
``p(x) ∝ x^(−alpha)`` for ``x ≥ xmin``; ``alpha`` by maximum likelihood, ``xmin``
chosen to minimise the Kolmogorov–Smirnov distance (or given), ``sigma`` the standard
error of ``alpha`` (powerlaw's ``standard_err``). ``R_lognormal`` / ``R_exponential``: the log-likelihood ratio of the
power law against that alternative on the tail (positive: the power law fits better),
``p_*`` the significance of its sign (Vuong's test; small p: the sign is meaningful).
``n`` = positive degrees fitted, ``n_tail`` = those ``≥ xmin``. Zeros (isolated nodes)
are left out: a power law has no mass at 0. powerlaw's xmin search fails on samples
with very few distinct values (two or three, typically); then ``xmin`` is the smallest
value. Fewer than two distinct positive values, or a fit that fails even so, leave
nothing to fit: every number but ``n`` is NaN (``n_tail`` 0).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any, Iterable

import networkx as nx
import numpy as np
import polars as pl

FIT_KEYS = ("alpha", "xmin", "sigma", "R_lognormal", "p_lognormal", "R_exponential", "p_exponential",
            "n", "n_tail")

_SCHEMA = {"node": pl.String, "in_degree": pl.Int64, "out_degree": pl.Int64, "degree": pl.Int64,
           "kind": pl.String, "layer": pl.Int64}


def degree_frame(G: nx.Graph) -> pl.DataFrame:
    """One row per node: node (as text), in_degree, out_degree, degree, kind, layer
    (the node attributes; null where absent), sorted by decreasing degree, then node."""
    directed = G.is_directed()
    rows = [{"node": str(node),
             "in_degree": G.in_degree(node) if directed else None,
             "out_degree": G.out_degree(node) if directed else None,
             "degree": G.degree(node),
             "kind": data.get("kind"), "layer": data.get("layer")}
            for node, data in G.nodes(data=True)]
    return pl.DataFrame(rows, schema=_SCHEMA).sort(["degree", "node"], descending=[True, False])


@contextlib.contextmanager
def _quiet():
    """Silence the warnings powerlaw and its optimisers raise on every tried xmin."""
    from scipy.optimize import OptimizeWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", OptimizeWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # its own use of .sigma, renamed in 2.0
        warnings.simplefilter("ignore", UserWarning)  # "too few values for xmin", "alpha near its bound"
        yield


def _positive(degrees: Iterable[float]) -> np.ndarray:
    values = np.asarray(list(degrees), dtype=float)
    return values[values > 0]


def _fit(values: np.ndarray, xmin: float | None):
    import powerlaw

    with _quiet():
        fit = powerlaw.Fit(values, discrete=True, xmin=xmin, verbose=False)
        _ = fit.power_law  # fitted lazily, on first access: fit it here, quietly
    return fit


def power_law_fit(degrees: Iterable[float], *, xmin: float | None = None):
    """The ``powerlaw.Fit`` of the positive ``degrees`` (discrete), or None when there is
    nothing to fit (module docstring)."""
    values = _positive(degrees)
    if np.unique(values).size < 2:
        return None
    for candidate in ([xmin] if xmin is not None else [None, float(values.min())]):
        try:
            return _fit(values, candidate)
        except ValueError:  # powerlaw: "No data points in defined range of the distribution"
            continue
    return None


def _compare(fit, alternative: str) -> tuple[float, float]:
    with _quiet():
        R, p = fit.distribution_compare("power_law", alternative)
    return float(R), float(p)


def fit_heavy_tail(degrees: Iterable[float], *, xmin: float | None = None) -> dict[str, Any]:
    """``{alpha, xmin, sigma, R_lognormal, p_lognormal, R_exponential, p_exponential, n,
    n_tail}`` of the discrete power-law fit (module docstring)."""
    n = int(_positive(degrees := list(degrees)).size)
    fit = power_law_fit(degrees, xmin=xmin)
    if fit is None:
        return {**{key: math.nan for key in FIT_KEYS}, "n": n, "n_tail": 0}
    R_ln, p_ln = _compare(fit, "lognormal")
    R_exp, p_exp = _compare(fit, "exponential")
    return {"alpha": float(fit.power_law.alpha), "xmin": float(fit.power_law.xmin),
            "sigma": float(fit.power_law.standard_err), "R_lognormal": R_ln, "p_lognormal": p_ln,
            "R_exponential": R_exp, "p_exponential": p_exp, "n": n, "n_tail": int(fit.n_tail)}
