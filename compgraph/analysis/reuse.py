"""Component reuse across the circuits of many tasks.

``circuits`` maps a task name to its circuit's member frame (see
:mod:`compgraph.analysis.overlap`: ``component``, ``kind``, ``layer``, ``score``).

Definitions
-----------
*Overlap matrix* (:func:`overlap_matrix`): ``M[i][j]`` = the measure of
:func:`~compgraph.analysis.overlap.overlap` between task i's circuit (as ``a``) and
task j's (as ``b``), tasks in the order given. Every measure but
``shared_fraction_a`` / ``_b`` is symmetric; ``shared_fraction_a`` in row i, column j is
the fraction of i's components that j's circuit also holds.

*Reuse counts* (:func:`reuse_counts`): per component found in any circuit, ``n_tasks``
= the number of tasks whose circuit holds it and ``tasks`` = their names (sorted).

*Statistics* of a list of circuits (as sets of components):
``mean_pairwise_jaccard`` = the mean over the unordered pairs of tasks of
``|A ∩ B| / |A ∪ B|``; ``n_reused`` = the number of components in at least two circuits.

*Permutation test* (:func:`permutation_test`): is the observed statistic larger than
circuits of the same make-up drawn at random would give? The ``universe`` (one row per
component of the model: ``component``, ``kind``, ``layer``) is split into strata by
(layer, kind); each circuit's members are counted per stratum (by the universe's kind
and layer). A null sample draws, for every task independently, a circuit with the same
count in each stratum, uniformly without replacement within the stratum
(:func:`null_circuit`), and computes the statistic. Over ``n`` samples::

    p = (1 + #{null ≥ observed}) / (1 + n)

(a null within 1e-12 of the observed value counts as ≥), with the null's mean and
standard deviation (ddof = 1). Every circuit member must be in the universe.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Hashable

import numpy as np
import polars as pl

from compgraph.analysis.overlap import MEASURES, members, overlap
from compgraph.errors import ConfigError

Circuits = dict[str, pl.DataFrame]
Stratum = tuple[Any, Any]  # (layer, kind)

TIE_TOLERANCE = 1e-12


# ---- statistics over sets ------------------------------------------------------------------

def mean_pairwise_jaccard(sets: list[set]) -> float:
    """Mean Jaccard index over the unordered pairs (NaN for a pair of empty sets)."""
    values = [len(a & b) / len(a | b) if a | b else math.nan for a, b in itertools.combinations(sets, 2)]
    return float(np.mean(values)) if values else math.nan


def n_reused(sets: list[set]) -> float:
    """How many elements lie in at least two of the sets."""
    seen: dict[Hashable, int] = {}
    for s in sets:
        for x in s:
            seen[x] = seen.get(x, 0) + 1
    return float(sum(1 for c in seen.values() if c >= 2))


STATISTICS: dict[str, Callable[[list[set]], float]] = {
    "mean_pairwise_jaccard": mean_pairwise_jaccard,
    "n_reused": n_reused,
}


# ---- matrices and counts ----------------------------------------------------------------------

def overlap_matrix(circuits: Circuits, measure: str = "jaccard") -> pl.DataFrame:
    """Tasks × tasks: a ``task`` column, then one column per task (module docstring)."""
    if measure not in MEASURES:
        raise ConfigError(f"measure must be one of {', '.join(MEASURES)}, not {measure!r}")
    tasks = list(circuits)
    rows = [{"task": t, **{u: float(overlap(circuits[t], circuits[u])[measure][0]) for u in tasks}} for t in tasks]
    return pl.DataFrame(rows, schema={"task": pl.String, **{t: pl.Float64 for t in tasks}})


def _stacked(circuits: Circuits) -> pl.DataFrame:
    """Every task's distinct members, with a ``task`` column."""
    frames = [members(frame).with_columns(pl.lit(task).alias("task")) for task, frame in circuits.items()]
    return pl.concat(frames) if frames else members(pl.DataFrame({"component": []}, schema={"component": pl.String})
                                                    ).with_columns(pl.lit(None, dtype=pl.String).alias("task"))


def reuse_counts(circuits: Circuits) -> pl.DataFrame:
    """component, kind, layer, n_tasks, tasks; by decreasing n_tasks, then layer, kind, component."""
    table = _stacked(circuits).group_by("component").agg(
        pl.col("kind").first(), pl.col("layer").first(),
        pl.col("task").n_unique().cast(pl.Int64).alias("n_tasks"),
        pl.col("task").unique().sort().alias("tasks"))
    return table.sort(["n_tasks", "layer", "kind", "component"], descending=[True, False, False, False],
                      nulls_last=True)


# ---- the stratified null ------------------------------------------------------------------------

class Strata:
    """The universe split into (layer, kind) strata, for drawing null circuits."""

    def __init__(self, universe: pl.DataFrame):
        missing = {"component", "kind", "layer"} - set(universe.columns)
        if missing:
            raise ConfigError(f"the universe frame lacks {sorted(missing)}")
        distinct = universe.select("component", "kind", "layer").unique("component", keep="first",
                                                                          maintain_order=True)
        self.of: dict[str, Stratum] = {c: (layer, kind) for c, kind, layer in distinct.iter_rows()}
        pools: dict[Stratum, list[str]] = {}
        for c, stratum in self.of.items():
            pools.setdefault(stratum, []).append(c)
        self.members: dict[Stratum, np.ndarray] = {s: np.asarray(m, dtype=object) for s, m in pools.items()}

    def counts(self, circuit: pl.DataFrame) -> dict[Stratum, int]:
        """How many of the circuit's distinct members lie in each stratum of the universe."""
        components = members(circuit)["component"].to_list()
        unknown = [c for c in components if c not in self.of]
        if unknown:
            raise ConfigError(f"{len(unknown)} circuit member(s) are not in the universe, e.g. {unknown[:3]}")
        counts: dict[Stratum, int] = {}
        for c in components:
            counts[self.of[c]] = counts.get(self.of[c], 0) + 1
        return counts

    def draw(self, counts: dict[Stratum, int], rng: np.random.Generator) -> set[str]:
        """A random set with ``counts[s]`` members of each stratum s (without replacement)."""
        drawn: set[str] = set()
        for stratum, k in counts.items():
            pool = self.members[stratum]
            drawn.update(pool[rng.choice(pool.size, size=k, replace=False)].tolist())
        return drawn


def null_circuit(circuit: pl.DataFrame, universe: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """One null circuit for ``circuit``: component, kind, layer (same count per stratum)."""
    strata = Strata(universe)
    drawn = strata.draw(strata.counts(circuit), rng)
    return pl.DataFrame([{"component": c, "kind": strata.of[c][1], "layer": strata.of[c][0]} for c in sorted(drawn)],
                        schema={"component": pl.String, "kind": pl.String, "layer": pl.Int64})


def _statistic(name: str) -> Callable[[list[set]], float]:
    if name not in STATISTICS:
        raise ConfigError(f"statistic must be one of {', '.join(STATISTICS)}, not {name!r}")
    return STATISTICS[name]


def permutation_test(circuits: Circuits, universe: pl.DataFrame, *, n: int = 1000, seed: int = 0,
                     statistic: str = "mean_pairwise_jaccard") -> dict[str, float]:
    """``{observed, null_mean, null_std, p_value, n}`` of the stratified permutation test
    (module docstring)."""
    stat = _statistic(statistic)
    if len(circuits) < 2:
        raise ConfigError(f"reuse needs at least two circuits, got {len(circuits)}")
    if n < 1:
        raise ConfigError(f"n must be >= 1, not {n}")
    strata = Strata(universe)
    counts = [strata.counts(frame) for frame in circuits.values()]
    observed = stat([set(members(frame)["component"].to_list()) for frame in circuits.values()])
    rng = np.random.default_rng(seed)
    null = np.array([stat([strata.draw(c, rng) for c in counts]) for _ in range(n)])
    exceed = int(np.sum(null >= observed - TIE_TOLERANCE * max(1.0, abs(observed))))
    return {"observed": observed, "null_mean": float(null.mean()),
            "null_std": float(null.std(ddof=1)) if n >= 2 else math.nan,
            "p_value": (1 + exceed) / (1 + n), "n": n}
