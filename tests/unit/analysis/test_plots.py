"""Figures: each function writes one PNG at the path it returns."""

from __future__ import annotations

import networkx as nx
import polars as pl
import scipy.stats as st

from compgraph.analysis import plots
from compgraph.analysis.modularity import communities
from compgraph.analysis.overlap import overlap
from compgraph.analysis.reuse import overlap_matrix

PNG = b"\x89PNG\r\n\x1a\n"


def is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG and path.stat().st_size > 1000


def small(*names):
    return pl.DataFrame({"component": list(names), "kind": ["head"] * len(names),
                         "layer": [i % 3 for i in range(len(names))], "score": [1.0] * len(names)})


def test_reuse_heatmap(tmp_path):
    matrix = overlap_matrix({"a": small("x", "y"), "b": small("y", "z"), "c": small()})  # c: empty -> NaN cells
    out = plots.reuse_heatmap(matrix, tmp_path / "sub" / "reuse.png")
    assert out == tmp_path / "sub" / "reuse.png" and is_png(out)


def test_community_graph(tmp_path):
    G = nx.planted_partition_graph(3, 10, 0.6, 0.05, seed=0, directed=True)
    for n in G:
        G.nodes[n].update(layer=n % 4, kind="head" if n % 2 else "neuron")
        if n == 0:
            G.nodes[n]["layer"] = None  # a site without a layer
    for u, v in G.edges():
        G[u][v]["weight"] = (u - v) / 10
    out = plots.community_graph(G, communities(G), tmp_path / "communities.png", max_edges=20)
    assert is_png(out)


def test_layered_positions():
    G = nx.Graph()
    G.add_node("b", layer=1)
    G.add_node("a", layer=1)
    G.add_node("s")
    assert plots.layered_positions(G) == {"a": (1.0, 0.25), "b": (1.0, 0.75), "s": (-1.0, 0.5)}
    assert plots.layered_positions(G, {"b": (0,), "a": (1,)})["b"] == (1.0, 0.25)


def test_degree_distribution(tmp_path):
    degrees = st.zipf.rvs(2.5, size=500, random_state=0).tolist() + [0]
    assert is_png(plots.degree_distribution(degrees, tmp_path / "degrees.png"))
    assert is_png(plots.degree_distribution([1, 1], tmp_path / "nothing-to-fit.png"))


def test_overlap_by_layer(tmp_path):
    table = overlap(small("x", "y", "z"), small("y", "w"), by="layer", groups=range(5))
    assert is_png(plots.overlap_by_layer(table, tmp_path / "layers.png", labels=("ioi", "colored")))
