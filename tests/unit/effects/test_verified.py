"""Verified effects: the selection rule on hand-built numbers, and on a model the estimates
and measurements against the plain-torch oracles of :mod:`tests.helpers.effects`."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch

from compgraph.effects.components import list_components
from compgraph.effects.measure import NODE_SCHEMA
from compgraph.effects.verified import (
    Verified, best, missing_factor, nth_largest, top, unmeasured_members, verified_patching, within_margin,
)
from compgraph.errors import ConfigError
from tests.helpers.effects import (  # noqa: F401 (one_thread: autouse)
    batch, effects_model, metric, one_thread, oracle_attribution, oracle_effect, task, vec,
)


def test_top_is_the_n_largest_magnitudes_ties_in_order():
    assert top([0.1, -3.0, 2.0, -2.0, 0.5], 3) == [1, 2, 3]
    assert top([0.1, -3.0, 2.0, -2.0, 0.5], 2, among=[0, 3, 4]) == [3, 4]


def test_step_three_takes_every_estimate_reaching_the_margin_of_tau():
    estimates = [0.1, -3.0, 2.0, -2.0, 0.5, 0.49, -0.6]
    measured = {1: -5.0, 2: 2.0, 3: -4.0}  # tau = 2.0: every unmeasured estimate >= 0.25 * 2.0 = 0.5
    assert within_margin(estimates, 2.0, 0.25, measured) == [6, 4]
    assert within_margin(estimates, 2.0, 1.0, measured) == []
    assert within_margin(estimates, 2.0, 0.05, measured) == [6, 4, 5, 0]


def test_tau_is_the_nth_largest_measured_magnitude():
    assert nth_largest({0: -5.0, 1: 2.0, 2: 0.5, 3: -4.0}, 2) == 4.0
    assert nth_largest({0: -5.0, 1: 2.0}, 3) == 2.0  # fewer measured than n: the smallest


def test_step_four_names_the_unmeasured_members_of_the_best_estimate_top():
    estimates = [3.0, 2.0, 1.0, 0.9, 0.1]
    # measured 0 and 1 turned out small: the top 2 by best estimate are now 2 and 3, unmeasured
    assert unmeasured_members(estimates, {0: 0.05, 1: -0.2}, 2, among=[0, 1, 2, 3, 4]) == [2, 3]
    assert unmeasured_members(estimates, {0: 0.05, 1: -0.2, 2: 1.5, 3: 0.0}, 2, among=[0, 1, 2, 3, 4]) == []
    assert unmeasured_members(estimates, {0: 0.05}, 2, among=[0, 4]) == [4]


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
    got = verified_patching(model, adapter, batch(t), metric, components=comps, n=2, margin=0.5,
                            circuit_kinds=("head", "mlp"), chunk=3)
    estimates = oracle_attribution(model, adapter, comps, t)
    torch.testing.assert_close(vec(got.estimated["effect"].to_list()), vec(estimates), rtol=1e-5, atol=1e-9)
    # the rule, recomputed here from the oracles' estimates and measurements
    truth = {i: oracle_effect(model, adapter, comps[i], "corrupt", "noising", t) for i in range(len(comps))}
    rank = lambda values, among: sorted(among, key=lambda i: (-abs(values[i]), i))  # noqa: E731
    everything = range(len(comps))
    circuit = [i for i in everything if comps[i][0] != "attn"]
    want = list(dict.fromkeys(rank(estimates, everything)[:2] + rank(estimates, circuit)[:2]))
    while True:  # rounds of at most 3 (chunk=3), tau the 2nd largest measured |effect| so far
        tau = sorted((abs(truth[i]) for i in want), reverse=True)[1]
        picks = [i for i in rank(estimates, everything) if i not in want and abs(estimates[i]) >= 0.5 * tau][:3]
        if not picks:
            break
        want += picks
    while True:
        best_of = [truth[i] if i in want else estimates[i] for i in everything]
        missing = [i for i in rank(best_of, circuit)[:2] if i not in want]
        if not missing:
            break
        want += missing
    measured = list(zip(got.measured["component"], got.measured["layer"], got.measured["index"]))
    assert measured == [comps[i] for i in want]
    torch.testing.assert_close(vec(got.measured["effect"].to_list()), vec([truth[i] for i in want]),
                               rtol=1e-5, atol=1e-10)
    assert set(got.measured["method"]) == {"activation"} and set(got.estimated["method"]) == {"attribution"}
    assert got.tau == pytest.approx(sorted((abs(truth[i]) for i in want), reverse=True)[1])
    assert got.unverified_max == pytest.approx(max((abs(estimates[i]) for i in everything if i not in want),
                                                   default=0.0))
    # every member of the circuit built from the best estimates was measured
    members = best(got).filter(pl.col("component") != "attn").with_columns(pl.col("effect").abs().alias("a")) \
        .sort("a", descending=True, maintain_order=True).head(2)
    assert set(members["method"]) == {"activation"}


def test_nothing_to_estimate_gives_empty_frames():
    model, adapter = effects_model("llama")
    got = verified_patching(model, adapter, batch(task()), metric, components=[])
    assert got.estimated.height == got.measured.height == 0 and missing_factor(got) == math.inf


def test_bad_settings_are_refused():
    model, adapter = effects_model("llama")
    with pytest.raises(ConfigError, match="margin"):
        verified_patching(model, adapter, batch(task()), metric, margin=0.0)
    with pytest.raises(ConfigError, match="n must be"):
        verified_patching(model, adapter, batch(task()), metric, n=0)
