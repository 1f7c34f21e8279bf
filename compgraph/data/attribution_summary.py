"""What a model's attribution graphs share: per feature, per linked pair, per co-occurring pair.

Pure functions over frames, below the store: :func:`compgraph.attribution.summarise_graphs`
reads their inputs out of the store and writes their outputs back after every import, so
that the named queries across thousands of graphs read these few rows instead of every
graph's nodes and links. Definitions, for a model's imported graphs G:

* :func:`feature_summary` — for each feature f: ``graphs`` = |{g in G : g contains f}|
  (at any position), ``mean_influence`` and ``mean_activation`` = the means over every
  (graph, position) at which f appears (nulls left out; null where none is known).
* :func:`recurring_pairs` — for each ordered feature pair (a, b): ``graphs`` = |{g : g has a
  link a -> b}| (at any positions), ``links`` = the number of such links over all graphs,
  ``mean_weight`` = their mean weight; pairs with ``graphs >= min_graphs`` only.
* :func:`cooccurring_pairs` — for each unordered pair {a, b}, a < b: ``graphs`` = |{g : g
  contains a and b}|, pairs with ``graphs >= min_graphs`` only. Counted as the upper
  triangle of H H^T for the feature-by-graph incidence matrix H (scipy.sparse): time about
  the sum over graphs of k^2 for k features each, memory one entry per pair of features
  found together at least once (among features in at least ``min_graphs`` graphs), never
  a row per (graph, pair) as a join would hold.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import scipy.sparse as sp

from compgraph.errors import ConfigError

COOCCUR_MIN = 10
"""The fewest graphs a feature pair shares to get a stored ``COOCCURS`` edge (below it a
1,000-graph store would hold ~30 pairs per link); :meth:`compgraph.kb.KB.cooccurrence_tables`
counts any floor from the graphs themselves."""

FEATURE_COLUMNS = {"uid": pl.String, "graphs": pl.Int64, "mean_influence": pl.Float64,
                   "mean_activation": pl.Float64}
RECURRING_COLUMNS = {"src": pl.String, "dst": pl.String, "graphs": pl.Int64, "links": pl.Int64,
                     "mean_weight": pl.Float64}
COOCCURRING_COLUMNS = {"src": pl.String, "dst": pl.String, "graphs": pl.Int64}


def _check_min(min_graphs: int) -> None:
    if min_graphs < 1:
        raise ConfigError(f"min_graphs must be at least 1, not {min_graphs}")


def feature_summary(contains: pl.DataFrame) -> pl.DataFrame:
    """``contains``: one row per (graph, feature, position) — columns ``graph``, ``feature``,
    ``influence``, ``activation``. One row per feature (module docstring), sorted by uid."""
    return (contains.group_by("feature")
            .agg(pl.col("graph").n_unique().cast(pl.Int64).alias("graphs"),
                 pl.col("influence").cast(pl.Float64).mean().alias("mean_influence"),
                 pl.col("activation").cast(pl.Float64).mean().alias("mean_activation"))
            .rename({"feature": "uid"}).cast(FEATURE_COLUMNS).sort("uid"))


def recurring_pairs(links: pl.DataFrame, min_graphs: int = 2) -> pl.DataFrame:
    """``links``: one row per feature -> feature link — columns ``src``, ``dst``, ``graph``,
    ``weight``. One row per pair linked in at least ``min_graphs`` graphs, sorted by (src, dst)."""
    _check_min(min_graphs)
    return (links.group_by("src", "dst")
            .agg(pl.col("graph").n_unique().cast(pl.Int64).alias("graphs"), pl.len().cast(pl.Int64).alias("links"),
                 pl.col("weight").cast(pl.Float64).mean().alias("mean_weight"))
            .filter(pl.col("graphs") >= min_graphs).cast(RECURRING_COLUMNS).sort("src", "dst"))


def cooccurring_pairs(held: pl.DataFrame, min_graphs: int = 1) -> pl.DataFrame:
    """``held``: (``graph``, ``feature``) rows (repeats allowed). One row per pair of distinct
    features in at least ``min_graphs`` common graphs: ``src`` < ``dst`` by uid, sorted."""
    _check_min(min_graphs)
    held = held.select("graph", "feature").unique()
    counts = held.group_by("feature").len()
    held = held.join(counts.filter(pl.col("len") >= min_graphs).select("feature"), on="feature", how="semi")
    if not held.height:
        return pl.DataFrame(schema=COOCCURRING_COLUMNS)
    features = held["feature"].unique().sort()  # codes in uid order, so row < col means src < dst
    graphs = held["graph"].unique()
    f = held.join(pl.DataFrame({"feature": features, "f": np.arange(len(features))}), on="feature")
    f = f.join(pl.DataFrame({"graph": graphs, "g": np.arange(len(graphs))}), on="graph")
    incidence = sp.csr_matrix((np.ones(f.height, dtype=np.int64), (f["f"].to_numpy(), f["g"].to_numpy())),
                              shape=(len(features), len(graphs)))
    both = sp.triu(incidence @ incidence.T, k=1).tocoo()
    keep = both.data >= min_graphs
    names = features.to_numpy()
    return pl.DataFrame({"src": names[both.row[keep]], "dst": names[both.col[keep]],
                         "graphs": both.data[keep]}).cast(COOCCURRING_COLUMNS).sort("src", "dst")
