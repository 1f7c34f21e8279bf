"""Analyses of an ingested model's component graph and circuits: pure functions on
networkx graphs and polars frames, and figures (the ``analyse`` command is
:mod:`compgraph.cli.analyse`; it writes what the analyses return, they never write).

- :mod:`~compgraph.analysis.modularity`: communities (Leiden, Louvain), modularity Q,
  its z-score against degree-preserving randomised graphs, per-community composition.
- :mod:`~compgraph.analysis.degrees`: degree tables and heavy-tail fits (``powerlaw``).
- :mod:`~compgraph.analysis.overlap`: overlap of two circuits (Jaccard, overlap
  coefficient, weighted Jaccard), overall or per kind / layer.
- :mod:`~compgraph.analysis.reuse`: overlap matrices over many tasks, reuse counts,
  a stratified permutation test of component reuse.
- :mod:`~compgraph.analysis.plots` (PNG) and :mod:`~compgraph.analysis.html`
  (a self-contained interactive circuit view).

Importing this package imports none of them (no matplotlib, igraph or powerlaw).
"""
