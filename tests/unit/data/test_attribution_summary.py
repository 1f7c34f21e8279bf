"""The summaries of a model's attribution graphs, on hand-built frames whose answers are
worked out here, and co-occurrence against a brute-force count over every pair."""

from __future__ import annotations

import itertools
import random

import polars as pl
import pytest

from compgraph.data.attribution_summary import cooccurring_pairs, feature_summary, recurring_pairs
from compgraph.errors import ConfigError


def test_feature_summary_counts_graphs_once_and_averages_every_position():
    contains = pl.DataFrame({"graph": ["g1", "g1", "g2", "g2"], "feature": ["a", "a", "a", "b"],
                             "influence": [0.2, 0.4, None, 0.5], "activation": [1.0, None, 3.0, 2.0]})
    assert feature_summary(contains).rows() == [("a", 2, pytest.approx(0.3), 2.0), ("b", 1, 0.5, 2.0)]


def test_recurring_pairs_count_graphs_and_links_and_keep_the_direction():
    links = pl.DataFrame({"src": ["a", "a", "a", "b", "a"], "dst": ["b", "b", "b", "a", "c"],
                          "graph": ["g1", "g1", "g2", "g1", "g2"], "weight": [1.0, 3.0, -1.0, 2.0, 5.0]})
    assert recurring_pairs(links).rows() == [("a", "b", 2, 3, 1.0)]
    assert recurring_pairs(links, min_graphs=1).rows() == [("a", "b", 2, 3, 1.0), ("a", "c", 1, 1, 5.0),
                                                           ("b", "a", 1, 1, 2.0)]
    with pytest.raises(ConfigError, match="min_graphs must be at least 1, not 0"):
        recurring_pairs(links, min_graphs=0)


def test_cooccurring_pairs_are_unordered_by_uid_and_floored():
    held = pl.DataFrame({"graph": ["g1", "g1", "g1", "g2", "g2", "g3", "g3", "g3"],
                         "feature": ["z", "b", "c", "z", "b", "b", "c", "b"]})  # b twice in g3
    assert cooccurring_pairs(held).rows() == [("b", "c", 2), ("b", "z", 2), ("c", "z", 1)]
    assert cooccurring_pairs(held, 2).rows() == [("b", "c", 2), ("b", "z", 2)]
    assert cooccurring_pairs(held, 4).height == 0
    assert cooccurring_pairs(held.clear()).columns == ["src", "dst", "graphs"]


@pytest.mark.parametrize("floor", [1, 3])
def test_cooccurring_pairs_equal_a_brute_force_count(floor):
    rng = random.Random(floor)
    graphs = {f"g{i}": set(rng.sample([f"f{j:02d}" for j in range(30)], rng.randint(1, 12))) for i in range(40)}
    counts: dict[tuple[str, str], int] = {}
    for members in graphs.values():
        for a, b in itertools.combinations(sorted(members), 2):
            counts[a, b] = counts.get((a, b), 0) + 1
    want = sorted((a, b, n) for (a, b), n in counts.items() if n >= floor)
    held = pl.DataFrame([{"graph": g, "feature": f} for g, fs in graphs.items() for f in fs])
    assert cooccurring_pairs(held, floor).rows() == want
