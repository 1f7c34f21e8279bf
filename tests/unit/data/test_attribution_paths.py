"""top_paths on hand-built links with known answers."""

from __future__ import annotations

import polars as pl
import pytest

from compgraph.data.attribution_paths import top_paths


def _links(*rows):
    return pl.DataFrame(rows, schema=["src", "dst", "source_pos", "target_pos", "weight"], orient="row")


def test_paths_follow_positions_and_rank_by_strength_then_hops():
    links = _links(("e", "a", 0, 0, 2.0), ("a", "b", 0, 1, -3.0), ("b", "T", 1, 1, 0.5),  # 3.0
                   ("e", "b", 1, 1, 6.0),  # e@1 -> b@1 -> T: 3.0, fewer hops
                   ("a", "b", 0, 0, 10.0),  # reaches b@0, which has no link to T@1: a dead end
                   ("e", "T", 1, 1, -0.1))
    got = top_paths(links, {"e"}, ("T", 1))
    assert got.rows() == [(["e", "b", "T"], [1, 1, 1], [6.0, 0.5], 2, 3.0),
                          (["e", "a", "b", "T"], [0, 0, 1, 1], [2.0, -3.0, 0.5], 3, 3.0),
                          (["e", "T"], [1, 1], [-0.1], 1, pytest.approx(0.1))]
    assert top_paths(links, {"e"}, ("T", 1), limit=1)["hops"].to_list() == [2]
    assert top_paths(links, {"e"}, ("T", 1), max_hops=1)["path"].to_list() == [["e", "T"]]


def test_pruning_finds_what_exhaustive_enumeration_finds():
    import random

    rng = random.Random(0)
    nodes = [f"n{i}" for i in range(8)]
    rows = {(rng.choice(["e"] + nodes), rng.choice(nodes + ["T"]), p, p + rng.randint(0, 1), round(rng.uniform(-2, 2), 3))
            for p in range(3) for _ in range(40)}
    links = _links(*sorted(rows))
    got = top_paths(links, {"e"}, ("T", 3), max_hops=4, limit=7)
    # every chain of at most 4 links, enumerated without bounds
    by_state = {}
    for src, dst, sp, tp, w in links.rows():
        by_state.setdefault((src, sp), []).append(((dst, tp), w))
    every = []

    def walk(state, path, weights, hops):
        if state == ("T", 3) and weights:
            strength = 1.0
            for w in weights:
                strength *= abs(w)
            every.append((-strength, len(weights), [s[0] for s in path], [s[1] for s in path], weights))
            return
        if hops == 0:
            return
        for nxt, w in by_state.get(state, ()):
            walk(nxt, path + [nxt], weights + [w], hops - 1)

    for state in [s for s in by_state if s[0] == "e"]:
        walk(state, [state], [], 4)
    every.sort(key=lambda x: (x[0], x[1], x[2]))
    assert got["path"].to_list() == [x[2] for x in every[:7]] and len(every) > 7
    assert got["strength"].to_list() == pytest.approx([-x[0] for x in every[:7]])
