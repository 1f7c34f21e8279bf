"""Verified effects, the default method: attribution for every component, then activation
patching of every component whose effect could matter (in the spirit of AtP*, Kramár et al. 2024).

The rule, for the components ``C`` asked for (heads and blocks), a circuit size ``n``, a
margin ``ρ`` (0 < ρ ≤ 1) and the circuit's kinds ``K`` (heads and MLP blocks in the
effects stage; all of ``C`` by default):

1. **Estimate.** Attribution patching (:mod:`compgraph.effects.attribution`) gives every
   component its first-order estimate ``â_c`` (one forward and one backward pass per chunk
   of examples).
2. **Verify the top.** The ``n`` components of largest ``|â_c|`` (ties: the order of ``C``),
   and the ``n`` of largest ``|â_c|`` among the kinds ``K``, are measured by activation
   patching (:mod:`compgraph.effects.activation`): ``e_c``.
3. **Verify what attribution may have underestimated.** With ``τ`` = the ``n``-th largest
   ``|e_c|`` measured so far, the next ``chunk`` (8) unmeasured components in order of
   ``|â_c|`` whose ``|â_c| ≥ ρ·τ`` are measured; ``τ`` is updated and this repeats until
   no unmeasured component reaches ``ρ·τ``. (Measuring in order lets ``τ`` rise to the
   true size of the top-``n`` before the margin is applied: a component of the first
   ``n`` whose effect turns out small does not lower the bar for everything else.)
4. **Close the circuit.** Each component's *best estimate* is ``e_c`` where measured, else
   ``â_c`` (:func:`best`); while the top ``n`` of kinds ``K`` by |best estimate| holds an
   unmeasured component, those are measured. So every member of the circuit built from
   the best estimates has been measured.

The result holds every component's estimate and the measured components' effects. The
rounds of steps 2–4 share one set of base and target runs
(:func:`~compgraph.effects.activation.prepare`): each round's patched passes start at the
lowest layer they patch.

**Bound.** Let ``τ*`` be the ``n``-th largest measured ``|e_c|`` (step 3 stops at
``τ = τ*``). A component left unmeasured has ``|â_c| < ρ·τ*``; it belongs in the true
top-``n`` only if ``|e_c| > τ*``, that is, only if attribution underestimated it by a factor
above ``1/ρ`` (4 at the default ρ = 1/4). :class:`Verified` reports ``τ*`` and the largest
unmeasured ``|â_c|`` (``unverified_max``); :func:`missing_factor` is ``τ*`` ÷ that, the
factor a missed member would need.

**Failure cases.** Attribution is a linear estimate at the clean run; a component it
underestimates by more than that factor, or whose estimate has the wrong sign and a small
magnitude, is missed: saturated attention (a softmax whose gradient vanishes while a large
change of its input flips it — AtP*'s first failure mode) and cancelling paths (a
component whose direct and indirect effects cancel in the gradient but not in the patched
run — its second). On SmolLM2 these are MLP blocks: on induction the MLPs of layers 8
and 22 (+0.11 and −0.18 estimated, −1.91 and −1.39 measured) are missed, a recall of 0.90
of the exhaustive top-20; the layer-0 MLP, which acts as part of the embedding (IOI: +0.87
estimated, −5.22 measured), is still measured. ``benchmarks/effects.py`` reports, per task,
which true top-20 members were left unmeasured. A component whose effect only appears together with others
(redundancy) is not an error of attribution: activation patching of single components
misses it too.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import polars as pl

from compgraph.data.tasks import TaskBatch
from compgraph.effects.activation import activation_patching, prepare, resolve_components
from compgraph.effects.attribution import attribution_patching
from compgraph.effects.measure import ACTIVATION, ATTRIBUTION, DEFAULT_BATCH_TOKENS, Metric, check, node_frame
from compgraph.errors import ConfigError

DEFAULT_MARGIN = 0.25
"""ρ: a component is measured when its estimate reaches ρ times the n-th largest measured effect."""
CHUNK = 8
"""Components measured per round of step 3."""


class Verified(NamedTuple):
    """What :func:`verified_patching` measured."""

    estimated: pl.DataFrame
    """Every component's attribution estimate (a node-effect frame, method ``attribution``)."""
    measured: pl.DataFrame
    """The measured components' activation-patching effects (method ``activation``), in
    the order they were measured (step 2, then step 3, each by rank of ``|â|``)."""
    tau: float
    """τ*: the n-th largest measured |effect| (the smallest a top-n member has)."""
    unverified_max: float
    """The largest |estimate| left unmeasured (0 when everything was measured)."""


def _keys(frame: pl.DataFrame) -> list[tuple]:
    return list(zip(frame["component"].to_list(), frame["layer"].to_list(), frame["index"].to_list()))


def top(values: list[float], n: int, among: list[int] | None = None) -> list[int]:
    """The positions of the ``n`` largest ``|values|`` (ties: lower position first), among
    the positions ``among`` (all by default)."""
    among = range(len(values)) if among is None else among
    return sorted(among, key=lambda i: (-abs(values[i]), i))[:n]


def within_margin(estimates: list[float], tau: float, margin: float, measured) -> list[int]:
    """Step 3: the unmeasured positions whose ``|estimate| ≥ margin · tau``, largest first."""
    return [i for i in top(estimates, len(estimates)) if i not in measured and abs(estimates[i]) >= margin * tau]


def nth_largest(measured: dict[int, float], n: int) -> float:
    """τ: the n-th largest measured |effect| (the smallest when fewer are measured)."""
    effects = sorted((abs(e) for e in measured.values()), reverse=True)
    return effects[min(n, len(effects)) - 1]


def unmeasured_members(estimates: list[float], measured: dict[int, float], n: int, among: list[int]) -> list[int]:
    """Step 4: the unmeasured positions in the top ``n`` of ``among`` by |best estimate|."""
    best_of = [measured.get(i, e) for i, e in enumerate(estimates)]
    return [i for i in top(best_of, n, among) if i not in measured]


def select(estimates: list[float], measure, *, n: int, margin: float, among: list[int],
           chunk: int = CHUNK) -> dict[int, float]:
    """Steps 2–4 of the rule (module docstring): ``measure(positions) -> effects`` is called
    with new positions only, round by round; returns every measured position's effect."""
    measured: dict[int, float] = {}

    def run(picks: list[int]) -> None:
        picks = [i for i in dict.fromkeys(picks) if i not in measured]
        if picks:
            measured.update(zip(picks, measure(picks)))

    run(top(estimates, n) + top(estimates, n, among))                                      # step 2
    while picks := within_margin(estimates, nth_largest(measured, n), margin, measured)[:chunk]:  # step 3
        run(picks)
    while missing := unmeasured_members(estimates, measured, n, among):                       # step 4
        run(missing)
    return measured


def verified_patching(model, adapter, task: TaskBatch, metric: Metric, *, components=None, kinds=("head",),
                      n: int = 20, margin: float = DEFAULT_MARGIN, circuit_kinds=None, ablation: str = "corrupt",
                      direction: str = "noising", seed: int = 0, batch_tokens: int = DEFAULT_BATCH_TOKENS,
                      chunk: int = CHUNK) -> Verified:
    """Estimate every component by attribution, measure the candidates by activation
    patching (module docstring; ``circuit_kinds``: K, all kinds when None)."""
    check(ablation, direction)
    if n < 1:
        raise ConfigError("n must be at least 1")
    if not 0 < margin <= 1:
        raise ConfigError(f"the verification margin must lie in (0, 1], not {margin}")
    comps = resolve_components(model, adapter, components, kinds)
    if not comps:
        empty = node_frame([], [], {"clean": math.nan, "corrupt": math.nan}, ATTRIBUTION, ablation, direction)
        return Verified(empty, empty.with_columns(pl.lit(ACTIVATION).alias("method")), 0.0, 0.0)
    common = {"ablation": ablation, "direction": direction, "seed": seed, "batch_tokens": batch_tokens}
    estimated = attribution_patching(model, adapter, task, metric, components=comps, **common)
    estimates = estimated["effect"].to_list()
    among = [i for i, c in enumerate(comps) if circuit_kinds is None or c.kind in circuit_kinds]
    frames = []
    prepared = prepare(model, adapter, task, comps, metric, **common)  # one base run for every round

    def measure(picks: list[int]) -> list[float]:
        frame = activation_patching(model, adapter, task, metric, components=[comps[i] for i in picks],
                                    prepared=prepared, **common)
        frames.append(frame)
        return frame["effect"].to_list()

    measured = select(estimates, measure, n=n, margin=margin, among=among, chunk=chunk)
    left = [abs(estimates[i]) for i in range(len(comps)) if i not in measured]
    return Verified(estimated, pl.concat(frames), nth_largest(measured, n), max(left, default=0.0))


def best(result: Verified) -> pl.DataFrame:
    """One row per component: the measured effect where measured (method ``activation``),
    else the estimate (method ``attribution``); in the estimate frame's order."""
    measured = dict(zip(_keys(result.measured), result.measured.iter_rows(named=True)))
    rows = [measured.get(key, row) for key, row in zip(_keys(result.estimated),
                                                       result.estimated.iter_rows(named=True))]
    return pl.DataFrame(rows, schema=result.estimated.schema)


def missing_factor(result: Verified) -> float:
    """τ* ÷ the largest unmeasured |estimate|: how many times attribution must have
    underestimated an unmeasured component for it to belong in the top-n (inf when none is
    left unmeasured)."""
    return result.tau / result.unverified_max if result.unverified_max > 0 else math.inf


__all__ = ["DEFAULT_MARGIN", "Verified", "best", "missing_factor", "top", "nth_largest", "select", "unmeasured_members",
           "verified_patching", "within_margin"]
