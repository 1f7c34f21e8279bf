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

- :func:`circuit_reuse`: for one task, the share of A's circuit members whose best match
  lies in B's circuit for the task, against a permutation null stratified by kind and
  layer (Merullo et al. 2024 ask it of two tasks in one model; here it is two models on
  one task).
"""

from __future__ import annotations

from typing import Iterable

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


def circuit_reuse(best: pl.DataFrame, circuit_a: Iterable[str], circuit_b: Iterable[str], units_b: pl.DataFrame, *,
                  trials: int = 1000, seed: int = 0) -> dict:
    """Cross-model reuse of one task's circuit: how many of A's circuit members have their
    best match in B's circuit for the task, against a permutation null.

    ``best``: A's rank-0 matches (``component``, ``match``: uids); ``circuit_a`` / ``circuit_b``:
    the member uids of each model's circuit; ``units_b``: every unit of B a match may point
    to (``uid``, ``kind``, ``layer``). ``matched`` counts A's members that have a best match
    (units of a kind that is not matched, such as whole blocks, are left out); ``reused``
    those whose best match is in B's circuit; ``share`` = reused / matched (NaN when none is
    matched).

    Null: B's circuit replaced by a random set of B's units with as many of each kind in
    each layer as it has (drawn without replacement, ``trials`` times, seeded): matches
    follow depth and circuits gather in a few layers, so a null over all layers would be
    beaten by depth alone. ``expected`` is the exact mean share under it (a member's match
    in stratum σ is in the random set with probability s_σ / U_σ); ``null_std`` the std
    of the drawn shares; ``p`` = (1 + #{drawn share ≥ share}) / (1 + trials).
    """
    members = set(circuit_a)
    in_b = set(circuit_b)
    hits = best.filter(pl.col("component").is_in(list(members))).select("component", "match")
    stratum = {uid: (kind, layer) for uid, kind, layer in units_b.select("uid", "kind", "layer").iter_rows()}
    matched = hits.height
    reused = int(hits["match"].is_in(list(in_b)).sum()) if matched else 0
    out = {"members": len(members), "matched": matched, "reused": reused,
           "share": reused / matched if matched else float("nan")}
    if not matched:
        return out | {"expected": float("nan"), "null_std": float("nan"), "p": float("nan")}
    pools: dict[tuple, list[str]] = {}
    for uid, key in stratum.items():
        pools.setdefault(key, []).append(uid)
    sizes = {key: sum(1 for uid in in_b if stratum.get(uid) == key) for key in pools}
    targets = [t for t in hits["match"].to_list()]
    expected = float(np.mean([sizes[stratum[t]] / len(pools[stratum[t]]) if t in stratum else 0.0 for t in targets]))
    position = {key: {uid: i for i, uid in enumerate(pool)} for key, pool in pools.items()}
    rng = np.random.default_rng(seed)
    drawn = np.empty(trials)
    for trial in range(trials):
        chosen = {key: set(rng.choice(len(pools[key]), size, replace=False).tolist())
                  for key, size in sizes.items() if size}
        drawn[trial] = sum(1 for t in targets
                           if t in stratum and position[stratum[t]][t] in chosen.get(stratum[t], ()))
    drawn /= matched
    p = (1 + int((drawn >= out["share"] - 1e-12).sum())) / (1 + trials)
    return out | {"expected": expected, "null_std": float(drawn.std()), "p": p}
