"""Figures of the analyses: each function draws one PNG (matplotlib's Agg canvas, no
pyplot, no global state touched) and returns its path; parent folders are created.

- :func:`reuse_heatmap`: a tasks × tasks overlap matrix (:func:`~compgraph.analysis.reuse.overlap_matrix`).
- :func:`community_graph`: components placed by layer (x) and, within a layer, stacked
  by community, kind and name (y); coloured by community (the 20 largest get their own
  colour of ``tab20``, the rest grey); the ``max_edges`` heaviest edges (by ``|weight|``)
  drawn under them, darker for heavier.
- :func:`degree_distribution`: the empirical CCDF ``P(X ≥ x)`` of the positive degrees on
  log-log axes, with the fitted discrete power law over ``x ≥ xmin`` (its tail CCDF times
  the fraction of values in the tail, so the two curves meet at ``xmin``).
- :func:`overlap_by_layer`: bars of ``n_a``, ``n_b`` and ``n_shared`` per layer, from
  :func:`~compgraph.analysis.overlap.overlap` with ``by="layer"``.
- :func:`depth_heatmap`: the best-match map of relative depth × relative depth
  (:func:`~compgraph.analysis.convergence.depth_map`), and beside it the histogram of the
  best matches' excess with the universality threshold marked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Hashable, Iterable

import networkx as nx
import numpy as np
import polars as pl

MAX_EDGES = 5000
N_COLOURS = 20


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return path


def reuse_heatmap(matrix: pl.DataFrame, path: str | Path, *, title: str = "circuit overlap") -> Path:
    """Heatmap of ``matrix`` (a ``task`` column, then one column per task), values annotated."""
    tasks = matrix["task"].to_list()
    values = matrix.select(tasks).to_numpy().astype(float)
    size = 2.5 + 0.6 * len(tasks)
    fig = _figure(size + 1.0, size)
    ax = fig.subplots()
    image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(len(tasks)), tasks, rotation=45, ha="right")
    ax.set_yticks(range(len(tasks)), tasks)
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, "nan" if np.isnan(v) else f"{v:.2f}", ha="center", va="center",
                color="black" if np.isnan(v) or v > 0.6 else "white", fontsize=8)
    fig.colorbar(image, ax=ax)
    ax.set_title(title)
    return _save(fig, path)


def layered_positions(G: nx.Graph, order: dict[Hashable, tuple] | None = None) -> dict[Hashable, tuple[float, float]]:
    """x = the node's ``layer`` (-1 without one); y in [0, 1], nodes of a layer spread
    evenly in the order of ``order[node]`` (then the node's name)."""
    by_layer: dict[float, list[Hashable]] = {}
    for node, layer in G.nodes(data="layer"):
        by_layer.setdefault(-1 if layer is None else layer, []).append(node)
    positions = {}
    for layer, nodes in by_layer.items():
        nodes.sort(key=lambda n: ((order or {}).get(n, ()), str(n)))
        for i, node in enumerate(nodes):
            positions[node] = (float(layer), (i + 0.5) / len(nodes))
    return positions


def _heaviest_edges(G: nx.Graph, weight: str, limit: int) -> list[tuple[Hashable, Hashable, float]]:
    edges = [(u, v, abs(float(w)) if w is not None else 1.0) for u, v, w in G.edges(data=weight)]
    edges.sort(key=lambda e: -e[2])
    return edges[:limit]


def community_graph(G: nx.Graph, partition: dict[Hashable, int], path: str | Path, *, weight: str = "weight",
                    max_edges: int = MAX_EDGES, title: str = "communities") -> Path:
    """The component graph laid out by layer, nodes coloured by community."""
    from matplotlib import colormaps
    from matplotlib.collections import LineCollection
    from matplotlib.ticker import MaxNLocator

    pos = layered_positions(G, {n: (partition.get(n, -1), G.nodes[n].get("kind") or "") for n in G})
    fig = _figure(10, 6)
    ax = fig.subplots()
    edges = _heaviest_edges(G, weight, max_edges)
    if edges:
        top = max(e[2] for e in edges) or 1.0
        ax.add_collection(LineCollection([(pos[u], pos[v]) for u, v, _ in edges],
                                         colors=[(0, 0, 0, 0.05 + 0.45 * w / top) for *_, w in edges],
                                         linewidths=0.5, zorder=1))
    palette = colormaps["tab20"]
    nodes = list(G)
    colours = [palette(partition[n] % N_COLOURS) if 0 <= partition.get(n, -1) < N_COLOURS else (0.6, 0.6, 0.6, 1)
               for n in nodes]
    xy = np.array([pos[n] for n in nodes]).reshape(-1, 2)
    ax.scatter(xy[:, 0], xy[:, 1], c=colours, s=max(2.0, 400.0 / max(1, len(nodes)) ** 0.5), zorder=2,
               edgecolors="none")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer (-1: none)")
    ax.set_yticks([])
    ax.set_title(f"{title} ({len(set(partition.values()))} communities, {len(nodes)} nodes)")
    return _save(fig, path)


def degree_distribution(degrees: Iterable[float], path: str | Path, *, xmin: float | None = None,
                        title: str = "degree distribution") -> Path:
    """Empirical CCDF of the positive degrees (log-log) with the fitted power law."""
    import powerlaw

    from compgraph.analysis.degrees import power_law_fit

    values = np.asarray(list(degrees), dtype=float)
    values = values[values > 0]
    fig = _figure(6, 4.5)
    ax = fig.subplots()
    if values.size:
        x, p = powerlaw.ccdf(values)
        ax.loglog(x, p, "o", markersize=3, label=f"degrees (n = {values.size})")
    fit = power_law_fit(values, xmin=xmin)
    if fit is not None:
        tail = np.unique(values[values >= fit.power_law.xmin])
        share = float(np.mean(values >= fit.power_law.xmin))
        ax.loglog(tail, fit.power_law.ccdf(tail) * share, "-", color="C3",
                  label=f"power law: alpha = {fit.power_law.alpha:.2f}, xmin = {fit.power_law.xmin:g}")
    ax.set_xlabel("degree")
    ax.set_ylabel("P(X ≥ x)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def overlap_by_layer(table: pl.DataFrame, path: str | Path, *, labels: tuple[str, str] = ("A", "B"),
                     title: str = "circuit overlap by layer") -> Path:
    """Grouped bars per layer: members of A, of B, and shared (``table`` from
    ``overlap(a, b, by="layer")``)."""
    from matplotlib.ticker import MaxNLocator

    layers = ["-" if v is None else str(v) for v in table["layer"].to_list()]
    x = np.arange(len(layers))
    fig = _figure(max(6.0, 0.35 * len(layers) + 2), 4)
    ax = fig.subplots()
    series = [("n_a", labels[0]), ("n_b", labels[1]), ("n_shared", "shared")]
    for i, (column, label) in enumerate(series):
        ax.bar(x + (i - 1) * 0.27, table[column].to_numpy(), width=0.27, label=label)
    ax.set_xticks(x, layers)
    ax.set_xlabel("layer")
    ax.set_ylabel("components")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def depth_heatmap(matrix: np.ndarray, excess: np.ndarray, path: str | Path, *, labels: tuple[str, str],
                  threshold: float, title: str) -> Path:
    """Row-normalised best-match shares by relative depth (A rows, B columns) and the excess histogram."""
    bins = matrix.shape[0]
    fig = _figure(10.0, 4.5)
    left, right = fig.subplots(1, 2)
    image = left.imshow(matrix, origin="lower", extent=(0, 1, 0, 1), vmin=0.0, vmax=max(float(matrix.max()), 1e-9),
                        cmap="viridis", aspect="equal")
    left.set_xlabel(f"relative depth of the best match in {labels[1]}")
    left.set_ylabel(f"relative depth in {labels[0]}")
    left.set_title(f"share of each {1 / bins:.1f}-depth band's units")
    fig.colorbar(image, ax=left)
    right.hist(excess[np.isfinite(excess)], bins=50, color="tab:blue")
    right.axvline(threshold, color="black", linestyle="--", label=f"excess {threshold}")
    right.set_xlabel("excess of the best match (score - rotated baseline)")
    right.set_ylabel(f"units of {labels[0]}")
    right.legend()
    fig.suptitle(title)
    return _save(fig, path)
