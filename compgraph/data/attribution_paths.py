"""The strongest paths through one attribution graph, from its embeddings to its target logit.

A path is a chain of the graph's links ``(src, source_pos) -> (dst, target_pos)`` in which
each link starts at the node *and position* the previous one reached: the states are
(component, position) pairs, since one feature at two positions is two nodes of the graph.
Its ``strength`` is the product of |weight| along it (attribution multiplies along a chain
of linear effects). :func:`top_paths` returns the ``limit`` strongest of at most
``max_hops`` links, by strength, then fewer hops, then path, found by depth-first search
pruned with an exact bound (the strongest completion from a state within the hops left),
so no path is enumerated that cannot enter the answer.
"""

from __future__ import annotations

import heapq
from collections import defaultdict

import polars as pl

PATH_COLUMNS = {"path": pl.List(pl.String), "positions": pl.List(pl.Int64), "weights": pl.List(pl.Float64),
                "hops": pl.Int64, "strength": pl.Float64}


def top_paths(links: pl.DataFrame, starts: set[str], target: tuple[str, int], *, max_hops: int = 4,
              limit: int = 10) -> pl.DataFrame:
    """The ``limit`` strongest paths from any state of a node in ``starts`` to the state
    ``target`` (uid, position). ``links``: columns src, dst, source_pos, target_pos, weight."""
    if max_hops < 1 or limit < 1:
        raise ValueError("max_hops and limit must be at least 1")
    out_links: dict[tuple, list[tuple[tuple, float]]] = defaultdict(list)
    for src, dst, sp, tp, w in links.select("src", "dst", "source_pos", "target_pos", "weight").iter_rows():
        out_links[(src, sp)].append(((dst, tp), float(w)))
    states = set(out_links) | {t for edges in out_links.values() for t, _ in edges}
    bound = [{s: (1.0 if s == target else 0.0) for s in states}]  # bound[r][s]: best within r hops
    for _ in range(max_hops):
        last = bound[-1]
        bound.append({s: max([last[s]] + [abs(w) * last[t] for t, w in out_links.get(s, ())]) for s in states})
    found: list[tuple] = []  # a min-heap of (strength, -hops, path): the weakest answer on top

    def rank(item):  # the answer's order: strength desc, hops asc, path asc
        return (-item[0], item[1], item[2])

    def walk(state, hops_left, strength, nodes, positions, weights):
        if state == target and weights:
            item = (strength, len(weights), tuple(nodes), tuple(positions), tuple(weights))
            if len(found) < limit:
                heapq.heappush(found, _Worst(item, rank))
            elif rank(item) < rank(found[0].item):
                heapq.heapreplace(found, _Worst(item, rank))
            return
        if hops_left == 0:
            return
        for nxt, w in out_links.get(state, ()):
            s = strength * abs(w)
            if len(found) == limit and s * bound[hops_left - 1][nxt] < found[0].item[0]:
                continue
            walk(nxt, hops_left - 1, s, nodes + [nxt[0]], positions + [nxt[1]], weights + [w])

    for state in sorted(s for s in states if s[0] in starts):
        walk(state, max_hops, 1.0, [state[0]], [state[1]], [])
    items = sorted((w.item for w in found), key=rank)
    return pl.DataFrame({"path": [list(i[2]) for i in items], "positions": [list(i[3]) for i in items],
                         "weights": [list(i[4]) for i in items], "hops": [i[1] for i in items],
                         "strength": [i[0] for i in items]}, schema=PATH_COLUMNS)


class _Worst:
    """A heap entry ordered so that the worst answer (by ``rank``) is the heap's top."""

    __slots__ = ("item", "key")

    def __init__(self, item, rank):
        self.item, self.key = item, rank(item)

    def __lt__(self, other: "_Worst") -> bool:
        return self.key > other.key
