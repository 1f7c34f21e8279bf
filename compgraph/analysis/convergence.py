"""Convergence between two models: how many of A's units have a counterpart in B, and where.

The input is A's units' rank-0 ``MATCHES`` into B of one method (:func:`best_matches`'s
frame: ``layer``, ``index``, ``dst_layer``, ``dst_index``, ``score``, ``excess``,
``mutual``), and the two models' layer counts. Relative depth of layer l in a model of L
layers is ``l / (L - 1)`` (0 the first layer, 1 the last; 0 when L = 1).

- :func:`by_layer`: per layer of A: its units with a match (``units``), the share whose
  excess beats ``threshold`` (``universal``: Gurnee et al. 2024 call a neuron universal
  at excess correlation > 0.5), the mean best score and excess, the share of mutual best
  matches, and the mean relative depth of the matches in B.
- :func:`depth_map`: the ``bins`` × ``bins`` matrix whose row i, column j is the share of
  A's units at relative depth bin i whose best match lies at relative depth bin j of B
  (rows sum to 1; empty rows are 0): the "best-match heat map".
- :func:`summary`: one row: units, share universal, mean score and excess, share mutual,
  and the excess quantiles (5 %, 25 %, 50 %, 75 %, 95 %).

With a ``same_top`` column (the decoding method), :func:`by_layer` and :func:`summary` also
give ``same_top``: the share of A's units whose best match has the same top decoded token.
Units that share no decoded token with any unit of B have no match and are not counted.
"""

from __future__ import annotations

import numpy as np
import polars as pl

UNIVERSAL = 0.5
"""Gurnee et al.'s excess-correlation threshold of a universal neuron."""


def relative_depth(layer: pl.Expr, n_layers: int) -> pl.Expr:
    return layer.cast(pl.Float64) / max(n_layers - 1, 1)


def _same_top(best: pl.DataFrame) -> list[pl.Expr]:
    return [pl.col("same_top").mean().alias("same_top")] if "same_top" in best.columns else []


def by_layer(best: pl.DataFrame, n_layers_b: int, *, threshold: float = UNIVERSAL) -> pl.DataFrame:
    return (best.group_by("layer").agg(
        pl.len().alias("units"),
        (pl.col("excess") > threshold).mean().alias("universal"),
        pl.col("score").mean().alias("mean_score"),
        pl.col("excess").mean().alias("mean_excess"),
        pl.col("mutual").mean().alias("mutual"),
        relative_depth(pl.col("dst_layer"), n_layers_b).mean().alias("match_depth"),
        *_same_top(best),
    ).sort("layer"))


def depth_map(best: pl.DataFrame, n_layers_a: int, n_layers_b: int, bins: int = 10) -> np.ndarray:
    def bin_of(layer: pl.Series, n: int) -> np.ndarray:
        depth = layer.cast(pl.Float64).to_numpy() / max(n - 1, 1)
        return np.minimum((depth * bins).astype(int), bins - 1)

    counts = np.zeros((bins, bins))
    np.add.at(counts, (bin_of(best["layer"], n_layers_a), bin_of(best["dst_layer"], n_layers_b)), 1.0)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def summary(best: pl.DataFrame, *, threshold: float = UNIVERSAL) -> pl.DataFrame:
    quantiles = {f"excess_q{int(q * 100):02d}": pl.col("excess").quantile(q, "linear")
                 for q in (0.05, 0.25, 0.5, 0.75, 0.95)}
    return best.select(
        pl.len().alias("units"),
        (pl.col("excess") > threshold).mean().alias("universal"),
        pl.col("score").mean().alias("mean_score"),
        pl.col("excess").mean().alias("mean_excess"),
        pl.col("mutual").mean().alias("mutual"),
        *_same_top(best),
        **quantiles,
    )
