"""Verified effects, the default method: attribution for every component, then activation
patching of every component whose effect could matter (in the spirit of AtP*, Kramár et al. 2024).

The rule, for the components ``C`` asked for (heads and blocks), a circuit size ``n`` and a
margin ``ρ`` (0 < ρ ≤ 1):

1. **Estimate.** Attribution patching (:mod:`compgraph.effects.attribution`) gives every
   component its first-order estimate ``â_c`` (one forward and one backward pass per chunk
   of examples).
2. **Verify the top.** The ``n`` components of largest ``|â_c|`` (ties: the order of ``C``)
   are measured by activation patching (:mod:`compgraph.effects.activation`): ``e_c``.
3. **Verify what attribution may have underestimated.** With ``τ`` = the smallest ``|e_c|``
   measured in step 2, every other component with ``|â_c| ≥ ρ·τ`` is measured too.

The result holds every component's estimate and, for the measured ones, the measured effect.
The *best estimate* of a component is ``e_c`` where measured, else ``â_c``; circuits are
built from it (:func:`best`).

**Bound.** Let ``τ*`` be the ``n``-th largest measured ``|e_c|`` (``τ* ≥ τ``). A component
left unmeasured has ``|â_c| < ρ·τ ≤ ρ·τ*``; it belongs in the true top-``n`` only if
``|e_c| > τ*``, that is, only if attribution underestimated it by a factor above ``1/ρ``
(4 at the default ρ = 1/4). :class:`Verified` reports ``τ*`` and the largest unmeasured
``|â_c|`` (``unverified_max``); ``unverified_max / τ*`` is the underestimation factor a
missed member would need (``inf`` when everything was measured).

**Failure cases.** Attribution is a linear estimate at the clean run; it misses effects it
underestimates by more than ``1/ρ``: saturated attention (a softmax whose gradient vanishes
while a large change of its input flips it — AtP*'s first failure mode) and cancelling
paths (a component whose direct and indirect effects cancel in the gradient but not in the
patched run — its second). Both show up on SmolLM2 as blocks underestimated about 2× (the
layer-0 MLP, which acts as part of the embedding: −7.6 estimated, −17.8 measured on
capitals); a factor of 4 covers every task measured in ``benchmarks/effects.py``. A
component whose effect only appears together with others (redundancy) is not an error of
attribution: activation patching of single components misses it too.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import polars as pl

from compgraph.data.tasks import TaskBatch
from compgraph.effects.activation import activation_patching, resolve_components
from compgraph.effects.attribution import attribution_patching
from compgraph.effects.measure import DEFAULT_BATCH_TOKENS, Metric, check
from compgraph.errors import ConfigError

DEFAULT_MARGIN = 0.25
"""ρ: a component is measured when its estimate reaches ρ times the smallest measured top-n effect."""


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


def to_measure(estimates: list[float], n: int, margin: float, measured: dict[int, float]) -> list[int]:
    """The positions to measure next (the module's rule) given the ``estimates`` and what is
    ``measured`` already (position -> effect): step 2 when nothing is measured, else step 3."""
    order = sorted(range(len(estimates)), key=lambda i: (-abs(estimates[i]), i))
    if not measured:
        return order[:n]
    tau = min(abs(e) for e in measured.values())
    return [i for i in order if i not in measured and abs(estimates[i]) >= margin * tau]


def verified_patching(model, adapter, task: TaskBatch, metric: Metric, *, components=None, kinds=("head",),
                      n: int = 20, margin: float = DEFAULT_MARGIN, ablation: str = "corrupt",
                      direction: str = "noising", seed: int = 0,
                      batch_tokens: int = DEFAULT_BATCH_TOKENS) -> Verified:
    """Estimate every component by attribution, measure the candidates by activation
    patching (module docstring)."""
    check(ablation, direction)
    if n < 1:
        raise ConfigError("n must be at least 1")
    if not 0 < margin <= 1:
        raise ConfigError(f"the verification margin must lie in (0, 1], not {margin}")
    comps = resolve_components(model, adapter, components, kinds)
    common = {"ablation": ablation, "direction": direction, "seed": seed, "batch_tokens": batch_tokens}
    estimated = attribution_patching(model, adapter, task, metric, components=comps, **common)
    estimates = estimated["effect"].to_list()
    measured: dict[int, float] = {}
    frames = []
    for _ in range(2):  # step 2, then step 3 (τ can only grow, so a third round finds nothing)
        picks = to_measure(estimates, n, margin, measured)
        if not picks:
            break
        frame = activation_patching(model, adapter, task, metric, components=[comps[i] for i in picks], **common)
        measured.update(zip(picks, frame["effect"].to_list()))
        frames.append(frame)
    effects = sorted((abs(e) for e in measured.values()), reverse=True)
    tau = effects[min(n, len(effects)) - 1]
    left = [abs(estimates[i]) for i in range(len(comps)) if i not in measured]
    return Verified(estimated, pl.concat(frames), tau, max(left, default=0.0))


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


__all__ = ["DEFAULT_MARGIN", "Verified", "best", "missing_factor", "to_measure",
           "verified_patching"]
