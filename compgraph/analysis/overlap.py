"""How much two circuits share.

A circuit is a polars frame of its members, one row per component: ``component`` (uid),
``kind``, ``layer``, ``score`` (its effect; a missing column is all null). A component
named twice counts once, with the largest ``|score|`` and the kind and layer of its
first row; a null score counts 0.

Definitions (A, B: the two sets of components; ``s_X(c) = |score|`` of ``c`` in X, 0 when
``c`` is not in X; ``p_X(c) = s_X(c) / Σ_{c' ∈ X} s_X(c')``, the share of X's total
|score| that c carries, 0 for every c when that total is 0)::

    jaccard            = |A ∩ B| / |A ∪ B|
    overlap_coef       = |A ∩ B| / min(|A|, |B|)
    weighted           = Σ_{c ∈ A∩B} min(p_A(c), p_B(c)) / Σ_{c ∈ A∪B} max(p_A(c), p_B(c))
                         (the weighted Jaccard index of the two circuits' score shares:
                         tasks whose metrics span different ranges compare on equal
                         terms; within a kind or layer group the shares stay those of
                         the whole circuit)
    shared_fraction_a  = |A ∩ B| / |A|      (Merullo et al. 2023: the fraction of the
    shared_fraction_b  = |A ∩ B| / |B|       IOI circuit's heads that Colored Objects uses)

with ``n_a = |A|``, ``n_b = |B|``, ``n_shared = |A ∩ B|``, ``n_union = |A ∪ B|``. A ratio
whose denominator is 0 is NaN (two empty circuits, a group with no members, a group
where one side is empty for ``overlap_coef`` and that side's ``shared_fraction``, no
score mass for ``weighted``).

``by="kind"`` or ``by="layer"`` computes every measure within each group (a component's
group is its kind or layer in A, else in B); ``groups`` lists groups to report even
where neither circuit has members (all their ratios NaN), e.g. every layer of the model.
"""

from __future__ import annotations

import math
from typing import Iterable, Literal

import polars as pl

from compgraph.errors import ConfigError

By = Literal["kind", "layer"] | None

MEMBER_SCHEMA: dict[str, pl.DataType] = {"component": pl.String, "kind": pl.String, "layer": pl.Int64,
                                         "score": pl.Float64}
COUNTS = ("n_a", "n_b", "n_shared", "n_union")
MEASURES = ("jaccard", "overlap_coef", "weighted", "shared_fraction_a", "shared_fraction_b")


def members(circuit: pl.DataFrame) -> pl.DataFrame:
    """The circuit as distinct components: component, kind, layer, score (= max |score|, null -> 0)."""
    if "component" not in circuit.columns:
        raise ConfigError(f"a circuit frame needs a 'component' column, got {circuit.columns}")
    cols = [pl.col(c).cast(t, strict=False) if c in circuit.columns else pl.lit(None, dtype=t).alias(c)
            for c, t in MEMBER_SCHEMA.items()]
    return (circuit.select(cols)
            .with_columns(pl.col("score").abs().fill_null(0.0))
            .group_by("component", maintain_order=True)
            .agg(pl.col("kind").first(), pl.col("layer").first(), pl.col("score").max()))


def shares(circuit: pl.DataFrame) -> pl.DataFrame:
    """:func:`members` with ``score`` replaced by its share of the circuit's total |score|
    (all 0 when the total is 0)."""
    table = members(circuit)
    total = pl.col("score").sum()
    return table.with_columns(pl.when(total > 0).then(pl.col("score") / total).otherwise(0.0).alias("score"))


def _joined(a: pl.DataFrame, b: pl.DataFrame) -> pl.DataFrame:
    """One row per component of A ∪ B: kind, layer, s_a, s_b — each the component's score
    share in that circuit (null: not in it)."""
    left = shares(a).rename({"score": "s_a"})
    right = shares(b).rename({"score": "s_b", "kind": "kind_b", "layer": "layer_b"})
    both = left.join(right, on="component", how="full", coalesce=True)
    return both.select("component", pl.coalesce("kind", "kind_b").alias("kind"),
                       pl.coalesce("layer", "layer_b").alias("layer"), "s_a", "s_b")


def _sums() -> list[pl.Expr]:
    in_a, in_b = pl.col("s_a").is_not_null(), pl.col("s_b").is_not_null()
    shared = in_a & in_b
    lo = pl.min_horizontal("s_a", "s_b")
    hi = pl.max_horizontal(pl.col("s_a").fill_null(0.0), pl.col("s_b").fill_null(0.0))
    return [in_a.sum().cast(pl.Int64).alias("n_a"), in_b.sum().cast(pl.Int64).alias("n_b"),
            shared.sum().cast(pl.Int64).alias("n_shared"), pl.len().cast(pl.Int64).alias("n_union"),
            pl.when(shared).then(lo).otherwise(0.0).sum().alias("_lo"), hi.sum().alias("_hi")]


def _ratio(num: str | pl.Expr, den: str | pl.Expr) -> pl.Expr:
    num = pl.col(num) if isinstance(num, str) else num
    den = pl.col(den) if isinstance(den, str) else den
    return pl.when(den > 0).then(num.cast(pl.Float64) / den).otherwise(math.nan)


def _measures() -> list[pl.Expr]:
    return [_ratio("n_shared", "n_union").alias("jaccard"),
            _ratio("n_shared", pl.min_horizontal("n_a", "n_b")).alias("overlap_coef"),
            _ratio("_lo", "_hi").alias("weighted"),
            _ratio("n_shared", "n_a").alias("shared_fraction_a"),
            _ratio("n_shared", "n_b").alias("shared_fraction_b")]


def _with_groups(table: pl.DataFrame, by: str, groups: Iterable) -> pl.DataFrame:
    """Add empty rows for the listed groups neither circuit has members in."""
    wanted = pl.DataFrame({by: list(groups)}, schema={by: MEMBER_SCHEMA[by]})
    missing = wanted.join(table.select(by), on=by, how="anti")
    empty = missing.with_columns(*[pl.lit(0, dtype=pl.Int64).alias(c) for c in COUNTS],
                                 pl.lit(0.0).alias("_lo"), pl.lit(0.0).alias("_hi"))
    return pl.concat([table, empty.select(table.columns)])


def overlap(a: pl.DataFrame, b: pl.DataFrame, *, by: By = None, groups: Iterable | None = None) -> pl.DataFrame:
    """Counts and overlap measures of circuits ``a`` and ``b`` (module docstring): one row,
    or one row per kind / layer (sorted, nulls last) when ``by`` is given."""
    if by not in (None, "kind", "layer"):
        raise ConfigError(f"by must be None, 'kind' or 'layer', not {by!r}")
    if groups is not None and by is None:
        raise ConfigError("groups needs by='kind' or by='layer'")
    joined = _joined(a, b)
    if by is None:
        table = joined.select(_sums())
    else:
        table = joined.group_by(by).agg(_sums())
        if groups is not None:
            table = _with_groups(table, by, groups)
        table = table.sort(by, nulls_last=True)
    keys = [by] if by else []
    return table.with_columns(_measures()).select(*keys, *COUNTS, *MEASURES)
