"""Communities, modularity, the null model, composition and write-back, on hand-built graphs."""

from __future__ import annotations

import functools
import math
from collections import Counter

import networkx as nx
import pytest

from compgraph.analysis import modularity as M
from compgraph.errors import ConfigError


def two_cliques() -> nx.Graph:
    """Two 5-cliques (0..4, 5..9) joined by the edge 4-5."""
    G = nx.disjoint_union(nx.complete_graph(5), nx.complete_graph(5))
    G.add_edge(4, 5)
    for node in G:
        G.nodes[node].update(kind="head" if node % 2 else "neuron", layer=node // 5)
    return G


def closed_form_q(G: nx.Graph, groups: list[set]) -> float:
    """Q = Σ_c [L_c/m − (d_c/2m)²], counted by hand from the edge list (weight 1 each)."""
    m = G.number_of_edges()
    q = 0.0
    for c in groups:
        inside = sum(1 for u, v in G.edges() if u in c and v in c)
        degree = sum(G.degree(n) for n in c)
        q += inside / m - (degree / (2 * m)) ** 2
    return q


CLIQUES = [set(range(5)), set(range(5, 10))]


@pytest.mark.parametrize("method,iterations", [("leiden", 2), ("leiden", -1), ("louvain", 2)])
def test_two_cliques_are_the_communities(method, iterations):
    part = M.communities(two_cliques(), method=method, iterations=iterations)
    assert part == {n: 0 if n < 5 else 1 for n in range(10)}  # canonical: ties by first node


def test_two_cliques_q_is_the_closed_form():
    G = two_cliques()
    q = M.modularity(G, M.communities(G))
    # m = 21, L_c = 10, d_c = 21 for both cliques: Q = 2 (10/21 - 1/4) = 20/21 - 1/2
    assert q == pytest.approx(20 / 21 - 1 / 2, abs=1e-12)
    assert q == pytest.approx(closed_form_q(G, CLIQUES), abs=1e-12)


def test_modularity_agrees_with_igraph():
    G = nx.gnm_random_graph(30, 80, seed=3)
    for u, v in G.edges():
        G[u][v]["weight"] = (u * 7 + v) % 5 + 0.5
    part = {n: n % 3 for n in G}
    g = M._to_igraph(M.undirected(G))
    expected = g.modularity([part[n] for n in M.undirected(G)], weights="weight")
    assert M.modularity(G, part) == pytest.approx(expected, abs=1e-12)


def test_directed_edges_sum_magnitudes_over_both_directions():
    D = nx.DiGraph()
    D.add_edge("a", "b", weight=2.0)
    D.add_edge("b", "a", weight=-3.0)
    D.add_edge("b", "c")  # no weight: 1
    D.add_edge("c", "c", weight=9.0)  # self-loop: dropped
    H = M.undirected(D)
    assert sorted(H.edges(data="weight")) == [("a", "b", 5.0), ("b", "c", 1.0)]
    # m = 6; {a,b}: L = 5, d = 5 + 6 = 11; {c}: L = 0, d = 1
    q = M.modularity(D, {"a": 0, "b": 0, "c": 1})
    assert q == pytest.approx(5 / 6 - (11 / 12) ** 2 - (1 / 12) ** 2, abs=1e-12)


def test_multigraph_parallel_edges_are_summed():
    G = nx.MultiDiGraph()
    G.add_edge("a", "b", weight=1.0, kind="q_comp")
    G.add_edge("a", "b", weight=-0.5, kind="k_comp")
    assert list(M.undirected(G).edges(data="weight")) == [("a", "b", 1.5)]


def test_q_of_a_weightless_graph_is_nan_and_partition_must_cover():
    G = nx.empty_graph(3)
    assert math.isnan(M.modularity(G, {0: 0, 1: 0, 2: 1}))
    with pytest.raises(ConfigError, match="leaves out 1 node"):
        M.modularity(two_cliques(), {n: 0 for n in range(9)})


def test_resolution_and_bad_method():
    G = two_cliques()
    # a tiny resolution merges everything (Reichardt-Bornholdt at gamma -> 0)
    assert set(M.communities(G, resolution=0.01).values()) == {0}
    assert M.modularity(G, {n: 0 for n in G}, resolution=0.5) == pytest.approx(1 - 0.5, abs=1e-12)
    with pytest.raises(ConfigError, match="method"):
        M.communities(G, method="spectral")


def test_randomised_keeps_degrees_and_weights():
    G = nx.gnm_random_graph(40, 120, seed=1)
    for i, (u, v) in enumerate(G.edges()):
        G[u][v]["weight"] = float(i)
    R = M.randomised(G, seed=5)
    assert dict(R.degree()) == dict(G.degree())
    assert sorted(w for *_, w in R.edges(data="weight")) == sorted(w for *_, w in G.edges(data="weight"))
    assert set(map(frozenset, R.edges())) != set(map(frozenset, G.edges()))
    assert nx.utils.graphs_equal(M.randomised(G, seed=5), R)  # seeded: the same graph again


def test_planted_partition_q_exact_and_z_large():
    G = nx.planted_partition_graph(4, 25, 0.5, 0.02, seed=1)
    planted = [set(range(25 * i, 25 * (i + 1))) for i in range(4)]
    part = M.communities(G)
    found = {frozenset(n for n in G if part[n] == c) for c in set(part.values())}
    assert found == {frozenset(c) for c in planted}
    result = M.null_model_z(G, n=10, seed=0)
    assert result["partition"] == part
    assert result["q"] == pytest.approx(closed_form_q(G, planted), abs=1e-12)
    assert len(result["samples"]) == 10
    assert result["mean"] == pytest.approx(sum(result["samples"]) / 10, abs=1e-12)
    assert result["z"] == pytest.approx((result["q"] - result["mean"]) / result["std"], abs=1e-9)
    assert result["q"] > 0.6 and result["z"] > 20


def test_the_igraph_null_path_measures_q_as_networkx_does():
    G = nx.gnm_random_graph(60, 300, seed=3)
    for i, (u, v) in enumerate(G.edges()):
        G[u][v]["weight"] = 0.5 + (i % 7)
    R = M.randomised(G, seed=11)
    nodes = list(R)
    membership = [n % 5 for n in nodes]
    want = nx.community.modularity(R, [{n for n in nodes if n % 5 == c} for c in range(5)], weight="weight",
                                   resolution=0.8)
    assert M._igraph_q(M._to_igraph(R), membership, 0.8) == pytest.approx(want, abs=1e-12)
    leiden, louvain = M.null_model_z(G, n=3, seed=0), M.null_model_z(G, n=3, seed=0, method="louvain")
    assert leiden["q"] == pytest.approx(M.modularity(G, leiden["partition"]), abs=1e-12)
    assert louvain["q"] == pytest.approx(M.modularity(G, louvain["partition"]), abs=1e-12)


def test_random_graph_z_is_small():
    G = nx.gnm_random_graph(100, 400, seed=2)
    result = M.null_model_z(G, n=10, seed=0)
    assert abs(result["z"]) < 3


def test_z_undefined_without_spread():
    result = M.null_model_z(two_cliques(), n=1, seed=0)
    assert math.isnan(result["std"]) and math.isnan(result["z"])


def test_summary_composition():
    G = two_cliques()
    table = M.summary(G, M.communities(G))
    assert table.columns == ["community", "size", "n_head", "n_neuron", "layers", "internal_weight", "strength"]
    assert table.to_dicts() == [
        {"community": 0, "size": 5, "n_head": 2, "n_neuron": 3, "layers": [0], "internal_weight": 10.0,
         "strength": 21.0},
        {"community": 1, "size": 5, "n_head": 3, "n_neuron": 2, "layers": [1], "internal_weight": 10.0,
         "strength": 21.0},
    ]


def test_canonical_labels_largest_first():
    assert M._canonical(["a", "b", "c", "d"], [{"d"}, {"c", "b"}, {"a"}]) == {"b": 0, "c": 0, "a": 1, "d": 2}
    assert Counter(M._canonical(list("abc"), [{"a", "b", "c"}]).values()) == {0: 3}


def test_the_view_from_frames_is_the_undirected_view():
    """Σ|w| over both directions and parallel edges, self-loops dropped, a missing weight 1."""
    import polars as pl

    nodes = ["a", "b", "c", "d"]
    edges = pl.DataFrame({"src": ["a", "b", "a", "c", "c", "d"], "dst": ["b", "a", "b", "c", "d", "a"],
                          "weight": [2.0, -3.0, 0.5, 9.0, None, -1.5]})
    view = M.from_frames(nodes, edges)
    got = {frozenset((view.nodes[e.source], view.nodes[e.target])): w
           for e, w in zip(view.graph.es, view.graph.es["weight"])}
    assert got == {frozenset("ab"): 5.5, frozenset("cd"): 1.0, frozenset("ad"): 1.5}
    assert view.graph.vcount() == 4
    with pytest.raises(ConfigError, match="outside the graph"):
        M.from_frames(["a"], edges)


def test_the_null_model_on_frames_equals_it_on_networkx():
    import polars as pl

    G = nx.planted_partition_graph(3, 20, 0.5, 0.05, seed=4)
    for i, (u, v) in enumerate(G.edges()):
        G[u][v]["weight"] = 0.5 + (i % 3)
    edges = pl.DataFrame([(u, v, w) for u, v, w in G.edges(data="weight")], schema=["src", "dst", "weight"],
                         orient="row")
    from_graph = M.null_model_z(G, n=4, seed=2)
    from_frames = M.null_model_z(M.from_frames(list(G), edges), n=4, seed=2)
    assert from_frames == from_graph
    assert M.null_model_z(G, n=4, seed=2, workers=2) == from_graph  # samples in 2 processes, the same
    assert from_graph["q"] == pytest.approx(M.modularity(G, from_graph["partition"]), abs=1e-12)


@pytest.mark.parametrize("trials", [0.5, 2, 10])
def test_rewiring_keeps_degrees_at_any_number_of_trials(trials):
    G = nx.gnm_random_graph(50, 200, seed=6)
    R = M.randomised(G, seed=1, trials=trials)
    assert dict(R.degree()) == dict(G.degree())


def test_another_community_search_and_a_given_membership():
    """What Neo4j GDS plugs in (compgraph.store.gds.GdsLeiden): a search called on the graph and
    on each sample with the seeds the igraph path would use; Q computed here, on this view."""
    G = two_cliques()
    calls = []

    def halves(g, *, seed):  # vertices in two halves by index, whatever the graph
        calls.append((g.vcount(), g.ecount(), seed))
        return [0 if v < 5 else 1 for v in range(g.vcount())]

    given = M.null_model_z(G, n=3, seed=2, leiden=halves)
    assert given["q"] == pytest.approx(20 / 21 - 1 / 2, abs=1e-12)
    assert given["partition"] == {n: 0 if n < 5 else 1 for n in range(10)}
    igraph_path = M.null_model_z(G, n=3, seed=2)
    assert [seed for _, _, seed in calls] == [2, *(s for _, s in M.sample_seeds(2, 3))]
    assert all((v, e) == (10, 21) for v, e, _ in calls)  # rewiring keeps the edge count
    assert given["q"] == igraph_path["q"]  # the two cliques either way
    calls.clear()
    known = M.null_model_z(G, n=2, seed=2, leiden=halves, membership=[1] * 5 + [0] * 5)
    assert known["q"] == given["q"] and len(calls) == 2  # only the samples were searched
    with pytest.raises(ConfigError, match="3 labels for 10 vertices"):
        M.null_model_z(G, n=0, membership=[0, 0, 1])
    with pytest.raises(ConfigError, match="Leiden method only"):
        M.null_model_z(G, n=0, method="louvain", leiden=halves)



def test_chain_seeds_split_into_even_consecutive_runs():
    seeds = [(i, 10 + i) for i in range(7)]
    assert M.chain_seeds(seeds, 3) == [seeds[0:3], seeds[3:5], seeds[5:7]]
    assert M.chain_seeds(seeds, None) == [[s] for s in seeds]
    assert M.chain_seeds(seeds, 9) == [[s] for s in seeds]  # more chains than samples: one each
    assert M.chain_seeds([], 2) == []


def _edge_set(g) -> set:
    return {tuple(sorted(e)) for e in g.get_edgelist()}


def test_a_null_chain_steps_from_each_sample_to_the_next():
    """Sample 0 is ``trials`` per edge from the graph, sample i+1 ``step`` from sample i; each
    keeps every degree and the weight multiset, and Q is measured on the sample searched."""
    G = nx.gnm_random_graph(60, 240, seed=3)
    for i, (u, v) in enumerate(G.edges()):
        G[u][v]["weight"] = 1.0 + i % 4
    g = M._view(G).graph
    seen = []

    def record(r, *, seed):
        seen.append((r.copy(), seed))
        return [v % 2 for v in range(r.vcount())]

    seeds = [(11, 1), (12, 2), (13, 3)]
    qs = M._null_chain(g, seeds, trials=2, step=0.5, resolution=1.0, find=record)
    assert [s for _, s in seen] == [1, 2, 3]
    expected = [M._rewired(g, 11, 2)]
    expected += [M._rewired(expected[0], 12, 0.5)]
    expected += [M._rewired(expected[1], 13, 0.5)]
    for (got, _), want in zip(seen, expected):
        assert got.get_edgelist() == want.get_edgelist() and got.es["weight"] == want.es["weight"]
        assert got.degree() == g.degree()
        assert sorted(got.es["weight"]) == sorted(g.es["weight"])
    assert qs == [M._igraph_q(r, [v % 2 for v in range(r.vcount())], 1.0) for r, _ in seen]
    assert _edge_set(seen[1][0]) != _edge_set(seen[0][0]) != _edge_set(g)


def test_chained_and_independent_null_samples():
    G = nx.planted_partition_graph(3, 20, 0.5, 0.05, seed=4)
    independent = M.null_model_z(G, n=4, seed=2, step=None)
    one_each = M.null_model_z(G, n=4, seed=2, chains=4)  # chains of one sample: drawn from G, as step=None
    assert one_each == independent
    chained = M.null_model_z(G, n=4, seed=2, chains=2, step=1)
    assert chained["samples"][0] == independent["samples"][0]  # a chain starts from G
    assert chained["samples"][2] == independent["samples"][2]  # so does the second chain
    assert chained["samples"][1] != independent["samples"][1]  # the next steps on from the first
    g, find = M._view(G).graph, functools.partial(M._leiden_membership, resolution=1.0,
                                                  iterations=M.LEIDEN_ITERATIONS)
    seeds = M.sample_seeds(2, 4)
    by_hand = [q for run in (seeds[:2], seeds[2:])
               for q in M._null_chain(g, run, trials=2, step=1, resolution=1.0, find=find)]
    assert chained["samples"] == by_hand
    assert M.null_model_z(G, n=4, seed=2) == chained  # the default: 2 chains, 1 trial per edge between samples
    assert M.null_model_z(G, n=4, seed=2, workers=4) == one_each  # a chain per worker
    assert chained["q"] == independent["q"] and chained["partition"] == independent["partition"]
    assert M.null_model_z(G, n=4, seed=2, workers=2) == M.null_model_z(G, n=4, seed=2)  # not on workers
    for bad in ({"chains": 0}, {"step": 0}, {"trials": -1}):  # trials=0 is allowed: one swap, as always
        with pytest.raises(ConfigError, match="chains must be"):
            M.null_model_z(G, n=2, **bad)
