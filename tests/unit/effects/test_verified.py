"""Verified effects: the selection rule on hand-built numbers, and on a model the estimates
and measurements against the plain-torch oracles of :mod:`tests.helpers.effects`."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch

from compgraph.effects.components import list_components
from compgraph.effects.measure import NODE_SCHEMA
from compgraph.effects.verified import Verified, best, missing_factor, to_measure, verified_patching
from compgraph.errors import ConfigError
from tests.helpers.effects import (  # noqa: F401 (one_thread: autouse)
    batch, effects_model, metric, one_thread, oracle_attribution, oracle_effect, task, vec,
)


def test_step_two_is_the_top_n_by_magnitude_ties_in_order():
    assert to_measure([0.1, -3.0, 2.0, -2.0, 0.5], 3, 0.25, {}) == [1, 2, 3]


def test_step_three_takes_every_estimate_reaching_the_margin_of_the_smallest_measured():
    estimates = [0.1, -3.0, 2.0, -2.0, 0.5, 0.49, -0.6]
    # measured: the top 3, the smallest |effect| 2.0 -> every other estimate >= 0.25 * 2.0 = 0.5
    measured = {1: -5.0, 2: 2.0, 3: -4.0}
    assert to_measure(estimates, 3, 0.25, measured) == [6, 4]
    assert to_measure(estimates, 3, 1.0, measured) == []
    assert to_measure(estimates, 3, 0.05, measured) == [6, 4, 5, 0]


def _frame(rows, method):
    return pl.DataFrame([{"component": k, "layer": layer, "index": i, "effect": e, "effect_norm": e / 2,
                          "method": method, "ablation": "corrupt", "direction": "noising"}
                         for k, layer, i, e in rows], schema=NODE_SCHEMA)


def test_best_takes_the_measurement_where_there_is_one():
    estimated = _frame([("head", 0, 0, 1.0), ("head", 0, 1, -2.0), ("mlp", 0, None, 0.5)], "attribution")
    measured = _frame([("mlp", 0, None, -4.0), ("head", 0, 1, -3.0)], "activation")
    got = best(Verified(estimated, measured, tau=3.0, unverified_max=1.0))
    assert got.rows() == [("head", 0, 0, 1.0, 0.5, "attribution", "corrupt", "noising"),
                          ("head", 0, 1, -3.0, -1.5, "activation", "corrupt", "noising"),
                          ("mlp", 0, None, -4.0, -2.0, "activation", "corrupt", "noising")]
    assert missing_factor(Verified(estimated, measured, tau=3.0, unverified_max=1.0)) == 3.0
    assert missing_factor(Verified(estimated, measured, tau=3.0, unverified_max=0.0)) == math.inf


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_estimates_and_measurements_equal_the_oracles_and_the_rule_holds(family):
    model, adapter = effects_model(family)
    t = task()
    comps = [tuple(c) for c in list_components(model, adapter, ("head", "mlp", "attn"))]
    got = verified_patching(model, adapter, batch(t), metric, components=comps, n=2, margin=0.5)
    estimates = oracle_attribution(model, adapter, comps, t)
    torch.testing.assert_close(vec(got.estimated["effect"].to_list()), vec(estimates), rtol=1e-5, atol=1e-9)
    # the rule, recomputed here from the oracle's estimates and the oracle's measurements
    order = sorted(range(len(comps)), key=lambda i: (-abs(estimates[i]), i))
    truth = {i: oracle_effect(model, adapter, comps[i], "corrupt", "noising", t) for i in range(len(comps))}
    tau = min(abs(truth[i]) for i in order[:2])
    want = order[:2] + [i for i in order[2:] if abs(estimates[i]) >= 0.5 * tau]
    measured = list(zip(got.measured["component"], got.measured["layer"], got.measured["index"]))
    assert measured == [comps[i] for i in want]
    torch.testing.assert_close(vec(got.measured["effect"].to_list()), vec([truth[i] for i in want]),
                               rtol=1e-5, atol=1e-10)
    assert set(got.measured["method"]) == {"activation"} and set(got.estimated["method"]) == {"attribution"}
    # the bound: tau* is the 2nd largest measured |effect|; everything unmeasured lies below margin * tau
    assert got.tau == pytest.approx(sorted((abs(truth[i]) for i in want), reverse=True)[1])
    left = [abs(estimates[i]) for i in range(len(comps)) if i not in want]
    assert got.unverified_max == pytest.approx(max(left, default=0.0))
    assert all(e < 0.5 * tau for e in left)


def test_bad_settings_are_refused():
    model, adapter = effects_model("llama")
    with pytest.raises(ConfigError, match="margin"):
        verified_patching(model, adapter, batch(task()), metric, margin=0.0)
    with pytest.raises(ConfigError, match="n must be"):
        verified_patching(model, adapter, batch(task()), metric, n=0)
