"""Communities of a component graph, their modularity, and how far it is from chance.

Definitions
-----------
*Undirected view.* Every measure here reads a graph ``G`` (directed or not, multi or
not) as the simple undirected weighted graph :func:`undirected` builds: the weight of
``{u, v}`` is ``w(u, v) = Σ |weight|`` over every edge between ``u`` and ``v`` in either
direction (parallel edges included). A signed weight counts by its magnitude (an
inhibiting connection ties two components as much as an exciting one); an edge with
no ``weight`` attribute (or ``None``) counts 1. Self-loops are dropped (a component's
edge to itself says nothing about which community it is in). Every node is kept,
isolated ones included.

*Modularity* of a partition into communities ``c`` (Newman–Girvan, weighted, with
resolution γ; :func:`networkx.community.modularity`)::

    Q = Σ_c [ L_c / m  −  γ · (d_c / 2m)² ]

``m`` = total edge weight, ``L_c`` = weight of the edges inside ``c``, ``d_c`` = sum of
the weighted degrees (strengths) of the nodes of ``c``. A graph with no weight at all
(``m = 0``) has ``Q = NaN``.

*Communities* (:func:`communities`): Leiden (igraph's C implementation,
``Graph.community_leiden`` with the modularity objective and resolution γ — the
Reichardt–Bornholdt configuration model, plain modularity at γ = 1; ``iterations``
passes, 2 by default, -1 for "until a pass improves nothing", which on a large graph
without structure takes many passes of tiny gains; its random choices seeded with
``seed``), or networkx's Louvain (``method="louvain"``; run to convergence;
``iterations`` does not apply). ``method="auto"`` is Leiden. (Up to 0.1.0 Leiden ran
through the ``leidenalg`` package: the same algorithm by the same author, about ten times
slower on SmolLM2's 1.95 M-pair graph, Q equal to 1e-4.) Labels are canonical: 0 is the
largest community, ties broken by the position in ``G`` of each community's first node,
so the same partition always gets the same labels.

*Null model* (:func:`null_model_z`): ``n`` randomised graphs (:func:`randomised`): the
undirected view rewired by degree-preserving double-edge swaps (``igraph``
``Graph.rewire``, ``trials`` swap trials per edge — :data:`REWIRE_TRIALS_PER_EDGE`, 2 by
default —, no self-loops or parallel edges created), then the multiset of edge weights
shuffled over the new edges. Each keeps every node's degree (number of neighbours) and
the weights, not every node's strength. On each, the communities are found again by the
same method (and iterations) and their Q measured; ``z = (Q − mean) / std`` (``std``
with ddof = 1; ``z = NaN`` when ``std`` is 0 or ``n < 2``).

*Chains.* The Leiden path draws its samples as ``chains`` Markov chains of swaps
(default: one per worker process, at least :data:`NULL_CHAINS` = 2, so that every core
runs one; the samples in order, split into ``chains`` consecutive runs as even as can be,
the first ones one longer: :func:`chain_seeds`; ``chains ≥ n`` is independent samples): a chain's
first sample is ``trials`` per edge away from the observed graph, each later one ``step``
more (:data:`CHAIN_STEP_TRIALS`, 1 by default) away from the one before, its weights
shuffled afresh. Every sample is at least ``trials`` per edge from the observed graph, so
none keeps more of its structure than an independent sample would (what biases a null
drawn with fewer trials from the observed graph: the null mean rises towards Q);
successive samples of a chain share the edges the step did not swap (at 1 trial per edge
about e^-2 ≈ 14 % of them when nearly every trial is accepted), so their Q's are mildly
correlated and the std of the samples is estimated slightly low (a lag-1 correlation ρ
lowers the expected variance of a chain of m samples by the factor 1 − 2ρ/m). The gain:
a sample costs ``step`` instead of ``trials`` swap trials per edge. ``step=None`` draws
every sample from the observed graph (the default before chains; 0.1.0 did so with 10
trials per edge); ``benchmarks/modularity.py`` compares them on the SmolLM2 store.

*Frames* (:func:`from_frames`): the same undirected view built from node ids and an edge
frame (``src``, ``dst``, ``weight``) without networkx — what ``compgraph analyse
modularity`` uses on graphs of millions of edges; :func:`null_model_z` takes either.

*Composition* (:func:`summary`): one row per community: ``community``, ``size``, one
column ``n_<kind>`` per node kind found in ``G`` (the node attribute ``kind``; a node
without one counts as ``other``), ``layers`` (the sorted distinct ``layer`` values of
its members; nodes without a layer are left out of it), ``internal_weight`` (``L_c``)
and ``strength`` (``d_c``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
from typing import Any, Callable, Hashable, Iterable, Literal, NamedTuple, Sequence

import networkx as nx
import numpy as np
import polars as pl

from compgraph.errors import ConfigError

Method = Literal["auto", "leiden", "louvain"]
Leiden = Callable[..., list[int]]
"""A community search ``(igraph graph, *, seed) -> membership`` (a label per vertex)."""
Partition = dict[Hashable, int]

REWIRE_TRIALS_PER_EDGE = 2
"""Swap trials per edge from the observed graph to a null sample (a chain's first)."""
CHAIN_STEP_TRIALS = 1
"""Swap trials per edge from one sample of a null chain to the next."""
NULL_CHAINS = 2
"""The fewest Markov chains the null samples are drawn in by default (the Leiden path: one
per worker, at least this many; module docstring)."""
LEIDEN_ITERATIONS = 2
"""Leiden passes (igraph's and leidenalg's default); -1 iterates until a pass improves nothing."""


class Undirected(NamedTuple):
    """The undirected view as an igraph graph: vertex i is ``nodes[i]``; edge attribute ``weight``."""

    nodes: list
    graph: Any


# ---- the undirected view ---------------------------------------------------------------

def undirected(G: nx.Graph, weight: str = "weight") -> nx.Graph:
    """The simple undirected view of ``G`` (module docstring): ``|weight|`` summed over
    parallel and opposite edges into the edge attribute ``weight``; self-loops dropped."""
    H = nx.Graph()
    H.add_nodes_from(G.nodes(data=True))
    for u, v, data in G.edges(data=True):
        if u == v:
            continue
        w = data.get(weight)
        w = 1.0 if w is None else abs(float(w))
        if H.has_edge(u, v):
            H[u][v]["weight"] += w
        else:
            H.add_edge(u, v, weight=w)
    return H


def from_frames(nodes: Sequence[Hashable], edges: pl.DataFrame, weight: str = "weight") -> Undirected:
    """The undirected view (module docstring) of the graph whose vertices are ``nodes`` (in
    that order) and whose edges are the rows of ``edges`` (columns ``src``, ``dst`` and
    ``weight``; endpoints not in ``nodes`` are refused). Edges in order of (lower, higher)
    vertex position."""
    import igraph as ig

    index = pl.DataFrame({"node": list(nodes), "_i": np.arange(len(nodes), dtype=np.int64)})
    w = pl.col(weight).cast(pl.Float64).abs().fill_null(1.0) if weight in edges.columns else pl.lit(1.0)
    table = edges.select(pl.col("src").alias("node"), pl.col("dst").alias("_dst"), w.alias("_w"))
    if table.height:
        table = table.join(index, on="node", how="left").rename({"_i": "_u"}) \
            .join(index.rename({"node": "_dst"}), on="_dst", how="left").rename({"_i": "_v"})
        unknown = table.filter(pl.col("_u").is_null() | pl.col("_v").is_null())
        if unknown.height:
            row = unknown.row(0, named=True)
            raise ConfigError(f"{unknown.height} edge(s) name a node outside the graph, e.g. "
                              f"{row['node']} -> {row['_dst']}")
        table = table.filter(pl.col("_u") != pl.col("_v")) \
            .select(pl.min_horizontal("_u", "_v").alias("a"), pl.max_horizontal("_u", "_v").alias("b"), "_w") \
            .group_by("a", "b").agg(pl.col("_w").sum()).sort("a", "b")
    pairs = table.select("a", "b").to_numpy() if table.height else np.zeros((0, 2), dtype=np.int64)
    g = ig.Graph(n=len(index))
    g.add_edges(pairs)  # from the array itself: 2.4x faster than a list of 1.95 M pairs
    g.es["weight"] = table["_w"].to_list() if table.height else []
    return Undirected(list(nodes), g)


def _view(G: "nx.Graph | Undirected", weight: str = "weight") -> Undirected:
    """The undirected view of a networkx graph (or one already built)."""
    if isinstance(G, Undirected):
        return G
    rows = [(u, v, data.get(weight)) for u, v, data in G.edges(data=True)]
    frame = pl.DataFrame(rows, schema={"src": pl.Object, "dst": pl.Object, "weight": pl.Float64}, orient="row") \
        if rows else pl.DataFrame(schema={"src": pl.Object, "dst": pl.Object, "weight": pl.Float64})
    return _from_objects(list(G), frame)


def _from_objects(nodes: list, frame: pl.DataFrame) -> Undirected:
    """:func:`from_frames` for node ids of any hashable type: positions stand in for them."""
    position = {node: i for i, node in enumerate(nodes)}
    ids = pl.DataFrame({"src": [position[u] for u in frame["src"].to_list()],
                        "dst": [position[v] for v in frame["dst"].to_list()], "weight": frame["weight"]},
                       schema={"src": pl.Int64, "dst": pl.Int64, "weight": pl.Float64})
    view = from_frames(list(range(len(nodes))), ids)
    return Undirected(nodes, view.graph)


def _to_igraph(H: nx.Graph):
    """``H`` (an undirected view) as an igraph Graph (see :func:`from_frames`); vertex i is ``list(H)[i]``."""
    return _view(H).graph


# ---- communities -----------------------------------------------------------------------

def _resolve(method: str) -> str:
    if method not in ("auto", "leiden", "louvain"):
        raise ConfigError(f"method must be auto, leiden or louvain, not {method!r}")
    return "leiden" if method == "auto" else method


def _leiden_membership(g, *, seed: int, resolution: float, iterations: int) -> list[int]:
    """Leiden on the weighted igraph ``g`` (modularity objective at ``resolution``), seeded."""
    if not g.vcount():
        return []
    with _igraph_seeded(seed):
        found = g.community_leiden(objective_function="modularity", weights="weight", resolution=resolution,
                                   n_iterations=iterations)
    return list(found.membership)


def _louvain_sets(H: nx.Graph, *, seed: int, resolution: float) -> list[set]:
    return nx.community.louvain_communities(H, weight="weight", resolution=resolution, seed=seed)


def _canonical(nodes: list[Hashable], groups: Iterable[Iterable[Hashable]]) -> Partition:
    """Label groups 0, 1, ... by decreasing size, ties by their first node's position."""
    position = {node: i for i, node in enumerate(nodes)}
    ordered = sorted((sorted(group, key=position.__getitem__) for group in groups),
                     key=lambda members: (-len(members), position[members[0]]))
    return {node: label for label, members in enumerate(ordered) for node in members}


def _membership_groups(nodes: list[Hashable], membership: list[int]) -> list[list[Hashable]]:
    groups: dict[int, list[Hashable]] = {}
    for node, label in zip(nodes, membership):
        groups.setdefault(label, []).append(node)
    return list(groups.values())


def _find(H: nx.Graph, *, method: str, seed: int, resolution: float, iterations: int) -> Partition:
    """Communities of an undirected view ``H``, canonically labelled."""
    nodes = list(H)
    if not nodes:
        return {}
    if method == "leiden":
        membership = _leiden_membership(_to_igraph(H), seed=seed, resolution=resolution, iterations=iterations)
        groups = _membership_groups(nodes, membership)
    else:
        groups = _louvain_sets(H, seed=seed, resolution=resolution)
    return _canonical(nodes, groups)


def communities(G: nx.Graph, *, weight: str = "weight", method: Method = "auto", seed: int = 0,
                resolution: float = 1.0, iterations: int = LEIDEN_ITERATIONS) -> Partition:
    """Node -> community label (0 = the largest) of the undirected view of ``G``, found by
    Leiden (``method="leiden"`` or ``"auto"``) or Louvain."""
    method = _resolve(method)
    if method == "leiden":
        view = _view(G, weight)
        membership = _leiden_membership(view.graph, seed=seed, resolution=resolution, iterations=iterations)
        return _canonical(view.nodes, _membership_groups(view.nodes, membership))
    return _find(undirected(G, weight), method=method, seed=seed, resolution=resolution, iterations=iterations)


# ---- modularity ------------------------------------------------------------------------

def _groups(H: nx.Graph, partition: Partition) -> list[set]:
    missing = [node for node in H if node not in partition]
    if missing:
        raise ConfigError(f"the partition leaves out {len(missing)} node(s) of the graph, e.g. {missing[:3]}")
    groups: dict[int, set] = {}
    for node in H:
        groups.setdefault(partition[node], set()).add(node)
    return list(groups.values())


def _modularity(H: nx.Graph, partition: Partition, resolution: float) -> float:
    if H.size(weight="weight") == 0:
        return math.nan
    return float(nx.community.modularity(H, _groups(H, partition), weight="weight", resolution=resolution))


def modularity(G: nx.Graph, partition: Partition, *, weight: str = "weight", resolution: float = 1.0) -> float:
    """Q of ``partition`` (node -> label, covering every node) on the undirected view of ``G``."""
    return _modularity(undirected(G, weight), partition, resolution)


# ---- the null model ---------------------------------------------------------------------

@contextlib.contextmanager
def _igraph_seeded(seed: int):
    """igraph's random numbers from a seeded generator, for the duration."""
    import igraph as ig

    ig.set_random_number_generator(random.Random(seed))
    try:
        yield
    finally:
        ig.set_random_number_generator(random)


def _rewired(g, seed: int, trials: float = REWIRE_TRIALS_PER_EDGE):
    """A rewired copy of the igraph ``g`` (``trials`` swap trials per edge) with its weights
    shuffled (:func:`randomised`)."""
    r = g.copy()
    if r.ecount() >= 2:
        with _igraph_seeded(seed):
            r.rewire(n=max(1, int(trials * r.ecount())), allowed_edge_types="simple")
    r.es["weight"] = np.random.default_rng(seed).permutation(np.asarray(g.es["weight"], dtype=float)).tolist()
    return r


def randomised(G: nx.Graph, *, seed: int = 0, weight: str = "weight",
               trials: float = REWIRE_TRIALS_PER_EDGE) -> nx.Graph:
    """A degree-preserving randomisation of the undirected view of ``G`` with its edge
    weights shuffled over the rewired edges (module docstring)."""
    H = undirected(G, weight)
    nodes = list(H)
    r = _rewired(_to_igraph(H), seed, trials)
    R = nx.Graph()
    R.add_nodes_from(H.nodes(data=True))
    R.add_weighted_edges_from((nodes[e.source], nodes[e.target], w) for e, w in zip(r.es, r.es["weight"]))
    return R


def _igraph_q(g, membership: list[int], resolution: float) -> float:
    """Q of ``membership`` on the weighted igraph ``g`` (the definition above; NaN when m = 0)."""
    if not g.ecount() or sum(g.es["weight"]) == 0:
        return math.nan
    return float(g.modularity(membership, weights="weight", resolution=resolution))


def _z(q: float, samples: list[float]) -> tuple[float, float, float]:
    """mean, std (ddof 1) and z of ``q`` against ``samples``; NaN where undefined."""
    values = np.asarray(samples, dtype=float)
    mean = float(values.mean()) if values.size else math.nan
    std = float(values.std(ddof=1)) if values.size >= 2 else math.nan
    z = (q - mean) / std if std and math.isfinite(std) else math.nan
    return mean, std, z


def sample_seeds(seed: int, n: int) -> list[tuple[int, int]]:
    """The (rewiring, community search) seeds of the null model's ``n`` samples."""
    rng = random.Random(seed)
    return [(rng.randrange(2**31), rng.randrange(2**31)) for _ in range(n)]


def chain_seeds(seeds: list[tuple[int, int]], chains: int | None) -> list[list[tuple[int, int]]]:
    """The samples' seeds split into ``chains`` consecutive runs as even as can be (the
    first ones one longer); None: every sample a chain of its own."""
    if chains is None or chains >= len(seeds):
        return [[s] for s in seeds]
    size, extra = divmod(len(seeds), chains)
    out, start = [], 0
    for j in range(chains):
        stop = start + size + (j < extra)
        out.append(seeds[start:stop])
        start = stop
    return out


def _null_chain(g, seeds: list[tuple[int, int]], *, trials: float, step: float | None, resolution: float,
                find: Leiden) -> list[float]:
    """Q of the communities ``find`` finds on each sample of one chain drawn from ``g``: the
    first ``trials`` swap trials per edge from ``g``, each next ``step`` from the one before."""
    out, r = [], g
    for i, (rewire_seed, leiden_seed) in enumerate(seeds):
        r = _rewired(r, rewire_seed, trials if i == 0 else step)
        out.append(_igraph_q(r, find(r, seed=leiden_seed), resolution))
    return out


def _map(work, items: list, workers: int) -> list:
    """``[work(item) for item in items]``, in ``workers`` fresh processes when above 1 (spawned:
    the caller may hold a JVM or threads that must not be forked)."""
    if workers <= 1 or len(items) <= 1:
        return [work(item) for item in items]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    workers = min(workers, len(items))
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(work, items, chunksize=-(-len(items) // workers)))  # the graph pickled once per worker


def null_model_z(G: "nx.Graph | Undirected", *, n: int = 20, seed: int = 0, weight: str = "weight",
                 method: Method = "auto", resolution: float = 1.0, iterations: int = LEIDEN_ITERATIONS,
                 trials: float = REWIRE_TRIALS_PER_EDGE, step: float | None = CHAIN_STEP_TRIALS,
                 chains: int | None = None, workers: int = 1, leiden: Leiden | None = None,
                 membership: list[int] | None = None) -> dict[str, Any]:
    """Q of the communities found on ``G`` (a networkx graph, or a view from
    :func:`from_frames`) against Q of those found on ``n`` randomised graphs (``trials``
    swap trials per edge): ``{q, mean, std, z, samples, partition}`` (module docstring;
    ``partition`` is :func:`communities` of ``G`` with the same arguments). Leiden's
    samples are drawn in ``chains`` chains of ``step`` trials per edge between samples
    (default ``max(NULL_CHAINS, workers)``; ``step=None``: each from ``G``; module
    docstring), the chains in ``workers`` processes (each sample's seeds are drawn first, so
    for a given ``chains`` the result does not depend on ``workers``).

    ``leiden``: another community search for the Leiden method, ``(igraph graph, seed=)
    -> membership`` (one label per vertex), in place of igraph's (Neo4j GDS's:
    :class:`compgraph.store.gds.GdsLeiden`; its samples run here, one at a time);
    ``membership``: the communities of ``G``'s view already found (by vertex), so that only
    the samples are searched. Q is always this module's, on this module's view."""
    if n < 0:
        raise ConfigError(f"n must be >= 0, not {n}")
    chains = max(NULL_CHAINS, workers) if chains is None else chains
    if chains < 1 or (step is not None and step <= 0) or trials < 0:
        raise ConfigError(f"chains must be >= 1, trials >= 0 and step > 0, not {chains}, {trials} and {step}")
    method = _resolve(method)
    if method != "leiden" and (leiden is not None or membership is not None):
        raise ConfigError("leiden= and membership= apply to the Leiden method only")
    samples = []
    if method == "leiden":  # all in igraph: a 2M-edge graph never goes through networkx
        view = _view(G, weight)
        g, nodes = view.graph, view.nodes
        find = leiden or functools.partial(_leiden_membership, resolution=resolution, iterations=iterations)
        membership = find(g, seed=seed) if membership is None else list(membership)
        if len(membership) != g.vcount():
            raise ConfigError(f"membership has {len(membership)} labels for {g.vcount()} vertices")
        q, partition = _igraph_q(g, membership, resolution), _canonical(nodes, _membership_groups(nodes, membership))
        work = functools.partial(_null_chain, g, trials=trials, step=step, resolution=resolution, find=find)
        runs = chain_seeds(sample_seeds(seed, n), None if step is None else chains)
        samples = [q for chain in _map(work, runs, workers if leiden is None else 1) for q in chain]
    else:
        if isinstance(G, Undirected):
            raise ConfigError("louvain runs on a networkx graph; use method='leiden' for a view from frames")
        H = undirected(G, weight)
        find = functools.partial(_find, method=method, resolution=resolution, iterations=iterations)
        partition = find(H, seed=seed)
        q = _modularity(H, partition, resolution)
        for rewire_seed, search_seed in sample_seeds(seed, n):
            R = randomised(H, seed=rewire_seed, trials=trials)
            samples.append(_modularity(R, find(R, seed=search_seed), resolution))
    mean, std, z = _z(q, samples)
    return {"q": q, "mean": mean, "std": std, "z": z, "samples": samples, "partition": partition}


# ---- composition -----------------------------------------------------------

def _member_rows(H: nx.Graph, partition: Partition) -> pl.DataFrame:
    _groups(H, partition)  # every node must have a community
    strength = dict(H.degree(weight="weight"))
    rows = [{"node": str(node), "community": partition[node], "kind": data.get("kind") or "other",
             "layer": data.get("layer"), "strength": float(strength[node]),
             "internal": sum(d["weight"] for nb, d in H[node].items() if partition[nb] == partition[node]) / 2}
            for node, data in H.nodes(data=True)]
    return pl.DataFrame(rows, schema={"node": pl.String, "community": pl.Int64, "kind": pl.String,
                                      "layer": pl.Int64, "strength": pl.Float64, "internal": pl.Float64})


def summary(G: nx.Graph, partition: Partition, *, weight: str = "weight") -> pl.DataFrame:
    """One row per community (module docstring), sorted by community label."""
    members = _member_rows(undirected(G, weight), partition)
    base = members.group_by("community").agg(
        pl.len().alias("size"),
        pl.col("layer").drop_nulls().unique().sort().alias("layers"),
        pl.col("internal").sum().alias("internal_weight"),
        pl.col("strength").sum().alias("strength"),
    )
    kinds = sorted(members["kind"].unique().to_list())
    counts = members.group_by("community").agg(
        *[(pl.col("kind") == k).sum().cast(pl.Int64).alias(f"n_{k}") for k in kinds])
    table = base.join(counts, on="community").sort("community")
    return table.select("community", "size", *[f"n_{k}" for k in kinds], "layers", "internal_weight", "strength")
