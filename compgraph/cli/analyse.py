"""``compgraph analyse``: the analyses of :mod:`compgraph.analysis` over an ingested model.

Subcommands (every one takes ``--model`` (required), ``--format table|json``, ``--out DIR``
(figures and pages written there, their paths on stderr), ``--store`` and ``--database``):

- ``modularity``: for the weights-based graph (``CONNECTS``) and the causal graph
  (``CAUSES``, all tasks; ``--method`` keeps one attribution method), each restricted to
  the components with at least one such edge: one row each with nodes, edges,
  communities, the largest community's size, Q, the null model's mean and std, z and
  the number of null samples, and the ``engine`` that found the communities (``--engine``:
  igraph here, or Neo4j GDS's Leiden in the server, the default on a Neo4j store with
  GDS; Q is computed here either way). ``--write-back`` stores each component's community as
  ``community_connects`` / ``community_causes``. ``--out``: ``communities_<rel>.png``.
  ``--graphs`` picks the graphs; ``COOCCURS`` is the co-occurrence of transcoder features
  across the model's imported attribution graphs (weight: the graphs holding both, pairs in
  at least ``--min-graphs``; igraph only): its communities are supernode candidates.
- ``degrees``: the same two graphs: nodes, edges, mean and max degree, and the
  power-law fit of the degrees. ``--out``: ``degrees_<rel>.png``.
- ``overlap``: two tasks' circuits (``--tasks A,B``, at ``--level`` and ``--method``):
  one row for all members, then one per kind and one per layer (``group_by``,
  ``group``, counts and measures as :func:`compgraph.analysis.overlap.overlap`).
  ``--out``: ``overlap_by_layer.png`` and ``circuit_<task>.html`` for each.
- ``reuse``: every task with a circuit at ``--level``/``--method`` (or ``--tasks``):
  the overlap matrix (``--measure``), the reuse counts, and the stratified permutation
  test. Tables, or one JSON object ``{"matrix", "reuse", "test"}``.
  ``--out``: ``reuse_heatmap.png``.
- ``convergence``: two models' neurons matched (``compgraph match``; ``--models A,B``
  instead of ``--model``): one summary row of A's units' best matches in B (units,
  share universal at ``--threshold``, mean score and excess, share mutual, excess
  quantiles; with ``--method decoding`` the share whose best match has the same top
  decoded token), then one row per layer of A (:mod:`compgraph.analysis.convergence`).
  ``--out``: ``convergence_<A>_<B>.png`` (the best-match depth map and the excess histogram).
  ``--kind head`` compares heads (``compgraph match --match-components head``).
- ``cross-reuse``: two models' circuits for the same tasks (``--models A,B``): per task, the
  share of A's circuit members whose best match (``--match-method``) is in B's circuit,
  the exact mean share and the p-value under random circuits of B with as many units of
  each kind in each layer (:func:`compgraph.analysis.convergence.circuit_reuse`).

Graphs and circuits come from :class:`compgraph.kb.KB`; the analyses are the pure
functions of :mod:`compgraph.analysis`; the only write (``--write-back``) is this
command's (:func:`write_communities`). Heavy imports happen inside the commands.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Iterator

import click

from compgraph import schema
from compgraph.cli.common import emit, handle_errors, require_model, split, store_options
from compgraph.errors import ConfigError
from compgraph.render import REPORT_FORMATS

GRAPHS = (str(schema.Rel.CONNECTS), str(schema.Rel.CAUSES))
"""The relationships whose component graphs ``modularity`` and ``degrees`` analyse."""
COOCCURS = str(schema.Rel.COOCCURS)
MODULAR = (*GRAPHS, COOCCURS)
"""The graphs ``modularity`` analyses: the two component graphs and the co-occurrence of
features across imported attribution graphs (:meth:`compgraph.kb.KB.cooccurrence_tables`)."""


# ---- shared options and helpers ---------------------------------------------------------------

def _common(fn):
    """--model, --format, --out, --store, --database, and compgraph's errors as one line."""
    fn = handle_errors(fn)
    fn = store_options(fn)
    fn = click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
                      help="Write the figures (and circuit pages) into DIR.")(fn)
    fn = click.option("--format", "fmt", type=click.Choice(REPORT_FORMATS), default="table",
                      show_default=True)(fn)
    fn = click.option("--model", required=True, help="The model's name in the store.")(fn)
    return fn


def _circuit_options(fn):
    fn = click.option("--method", default=None,
                      help="The circuits' method (verified, activation, attribution, eap-ig) "
                           "[default: the one each task has].")(fn)
    fn = click.option("--level", type=click.Choice(["node", "edge"]), default="node", show_default=True,
                      help="Node circuits or edge circuits.")(fn)
    return fn


@contextlib.contextmanager
def _kb(store, database, model: str) -> Iterator:
    """The knowledge base over an existing store, refusing a model it does not hold."""
    from compgraph import kb as kb_module

    with kb_module.open(store, database=database) as kb:
        require_model(kb.store, model)
        yield kb


def _graphs(kb, model: str, method: str | None) -> Iterator[tuple[str, object]]:
    for rel in GRAPHS:
        yield rel, kb.component_graph(model, edges=(rel,), method=method, isolates=False)


def _wrote(path: Path) -> None:
    click.echo(f"wrote {path}", err=True)


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def _held(kb, model: str) -> str:
    held = kb.circuits(model).select("task", "level", "method").unique().sort("task", "level", "method").rows()
    return ", ".join(f"{t} ({lv}, {m})" for t, lv, m in held) or "none"


def _circuits(kb, model: str, tasks: list[str] | None, level: str, method: str | None) -> dict:
    """Task -> its circuit's members (all tasks with a circuit at level/method when None)."""
    import polars as pl

    members = kb.circuit_members(model, level=level, method=method)
    found = sorted(members["task"].unique().drop_nulls().to_list())
    tasks = found if tasks is None else tasks
    missing = [t for t in tasks if t not in found]
    if missing:
        by = f" by {method}" if method else ""
        raise ConfigError(f"no {level} circuit{by} of {model} for task(s) {', '.join(missing)}; "
                          f"circuits held (task, level, method): {_held(kb, model)}")
    several = members.filter(pl.col("task").is_in(tasks)).group_by("task").agg(pl.col("method").n_unique()) \
        .filter(pl.col("method") > 1)["task"].sort().to_list()
    if several:
        raise ConfigError(f"task(s) {', '.join(several)} have {level} circuits by several methods; choose one with "
                          f"--method (held: {_held(kb, model)})")
    return {t: members.filter(pl.col("task") == t) for t in tasks}


@click.group("analyse")
def analyse() -> None:
    """Analyses of an ingested model: communities, degrees, circuit overlap and reuse."""


# ---- modularity ----------------------------------------------------------------------------------

def write_communities(store, partition: dict, graph: str, *, model: str | None = None):
    """Set ``community_<graph>`` (:func:`compgraph.schema.community_prop`: the label) on each
    component named in ``partition`` (by uid), through the store's node merge; every uid must
    already be a component (nothing is written otherwise). With ``model``, the property is
    first removed from that model's other components, so none keeps a label from an earlier
    partition. Returns the store's WriteResult."""
    import polars as pl

    if not re.fullmatch(r"[A-Za-z0-9_]+", graph):
        raise ConfigError(f"community name must be letters, digits and '_', not {graph!r}")
    prop = schema.community_prop(graph)
    uids = [str(node) for node in partition]
    P = schema.Prop
    found = set(store.nodes(schema.COMPONENT, uids=uids).get_column(P.UID).to_list()) if uids else set()
    missing = [u for u in uids if u not in found]
    if missing:
        raise ConfigError(f"{len(missing)} node(s) of the partition are not components in the store, "
                          f"e.g. {', '.join(missing[:3])}; nothing was written")
    if model is not None:
        store.remove_properties(schema.COMPONENT, [prop], where={str(P.MODEL): model})
    frame = pl.DataFrame({P.UID: uids, prop: [int(partition[n]) for n in partition]},
                         schema={P.UID: pl.String, prop: pl.Int64})
    return store.merge_nodes(schema.COMPONENT, frame)


def _modularity_row(rel: str, n_nodes: int, n_edges: int, partition: dict, null: dict) -> dict:
    sizes = {}
    for label in partition.values():
        sizes[label] = sizes.get(label, 0) + 1
    return {"graph": rel, "nodes": n_nodes, "edges": n_edges, "communities": len(sizes),
            "largest": max(sizes.values(), default=0), "q": null["q"], "null_mean": null["mean"],
            "null_std": null["std"], "z": null["z"], "null_samples": len(null["samples"])}


PARALLEL_EDGES = 100_000
"""From this many edges on, the null model's samples run in one process per core (one swap
chain each: :func:`compgraph.analysis.modularity.null_model_z`)."""


def _workers(n_edges: int) -> int:
    """One per core this process may run on, for a large graph."""
    return len(os.sched_getaffinity(0)) if n_edges >= PARALLEL_EDGES else 1


def _heaviest_graph(nodes, edges, limit: int):
    """Every node and the ``limit`` heaviest edges (|weight|) as a networkx graph: all a
    community figure draws (:func:`compgraph.analysis.plots.community_graph`)."""
    import networkx as nx
    import polars as pl

    G = nx.DiGraph()
    G.add_nodes_from((row.pop("uid"), row) for row in nodes.iter_rows(named=True))
    top = edges.with_columns(pl.col("weight").abs().fill_null(1.0).alias("_abs")).top_k(limit, by="_abs")
    G.add_weighted_edges_from(top.select("src", "dst", "weight").iter_rows())
    return G


@analyse.command()
@click.option("--method", default=None, help="CAUSES edges of this attribution method only [default: any].")
@click.option("--null-samples", type=click.IntRange(min=0), default=10, show_default=True,
              help="Degree-preserving randomised graphs for the z-score (one community search each).")
@click.option("--resolution", type=float, default=1.0, show_default=True, help="Modularity resolution.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--write-back", is_flag=True, help="Store the communities on the components "
                                                 "(community_connects, community_causes).")
@click.option("--engine", type=click.Choice(["auto", "igraph", "gds"]), default="auto", show_default=True,
              help="Leiden by igraph here, or by Neo4j Graph Data Science in the server (auto: GDS when the "
                   "store has it).")
@click.option("--graphs", "graphs", default=",".join(GRAPHS), show_default=True, metavar="LIST",
              help=f"Comma list of {', '.join(MODULAR)}: COOCCURS is the features' co-occurrence across the "
                   "model's imported attribution graphs (weight: graphs containing both; igraph only).")
@click.option("--min-graphs", type=click.IntRange(min=1), default=1, show_default=True,
              help="COOCCURS: keep the feature pairs found together in at least this many graphs.")
@_common
def modularity(model, method, null_samples, resolution, seed, write_back, engine, graphs, min_graphs, fmt, out,
               store, database):
    """Communities, modularity Q and its z-score.

    For the weights-based (CONNECTS) and the causal (CAUSES) component graph, or the
    co-occurrence of features across attribution graphs (COOCCURS: supernode candidates):
    Leiden communities, Q, and Q against degree-preserving randomised graphs."""
    import polars as pl

    from compgraph.analysis import modularity as M
    from compgraph.store import gds

    asked = split(graphs)
    if bad := [g for g in asked if g not in MODULAR]:
        raise ConfigError(f"--graphs takes {', '.join(MODULAR)}, not {', '.join(bad)}")
    rows = []
    with _kb(store, database, model) as kb:
        version = gds.gds_version(kb.store) if engine != "igraph" else None
        if engine == "gds" and version is None:
            raise ConfigError("--engine gds needs a Neo4j store with the Graph Data Science library")
        for rel in asked:  # frames, not networkx: the weights-based graph has millions of edges
            if rel == COOCCURS:
                nodes, edges = kb.cooccurrence_tables(model, min_graphs=min_graphs)
            else:
                nodes, edges = kb.component_tables(model, edges=(rel,), method=method, isolates=False)
            view = M.from_frames(nodes["uid"].to_list(), edges)
            if version is None or not view.graph.ecount() or rel == COOCCURS:  # GDS: stored relationships only
                null = M.null_model_z(view, n=null_samples, seed=seed, resolution=resolution,
                                      workers=_workers(edges.height))
            else:  # the observed graph projected from the store, the samples from here; Q computed here
                causes = rel == str(schema.Rel.CAUSES)
                found = gds.stored_leiden(kb.store, rel, model=model, method=method if causes else None,
                                          seed=seed, resolution=resolution)
                if stray := set(found) - set(view.nodes):
                    raise ConfigError(f"GDS projected {len(stray)} component(s) outside the {rel} graph read here, "
                                      f"e.g. {sorted(stray)[0]}")
                fresh = max(found.values(), default=-1) + 1
                membership = [found.get(uid, fresh + i) for i, uid in enumerate(view.nodes)]
                null = M.null_model_z(view, n=null_samples, seed=seed, resolution=resolution, membership=membership,
                                      leiden=gds.GdsLeiden(kb.store, resolution=resolution))
            partition = null["partition"]
            rows.append({**_modularity_row(rel, nodes.height, edges.height, partition, null),
                         "engine": "igraph" if version is None else f"gds {version}"})
            if write_back:
                write_communities(kb.store, partition, rel.lower(), model=model)
            if out is not None and edges.height:
                from compgraph.analysis.plots import MAX_EDGES, community_graph

                G = _heaviest_graph(nodes, edges, MAX_EDGES)
                _wrote(community_graph(G, partition, out / f"communities_{rel.lower()}.png",
                                       title=f"{model}: {rel} communities"))
    emit(pl.DataFrame(rows), fmt, f"modularity of {model}")


# ---- degrees -----------------------------------------------------------------------------------

def _degree_row(rel: str, G) -> dict:
    from compgraph.analysis.degrees import degree_frame, fit_heavy_tail

    degrees = degree_frame(G)["degree"]
    return {"graph": rel, "nodes": G.number_of_nodes(), "edges": G.number_of_edges(),
            "mean_degree": float(degrees.mean()) if degrees.len() else None,
            "max_degree": degrees.max(), **fit_heavy_tail(degrees.to_list())}


@analyse.command()
@click.option("--method", default=None, help="CAUSES edges of this attribution method only [default: any].")
@_common
def degrees(model, method, fmt, out, store, database):
    """Degree distributions and power-law fits.

    For the weights-based (CONNECTS) and the causal (CAUSES) component graph."""
    import polars as pl

    rows = []
    with _kb(store, database, model) as kb:
        for rel, G in _graphs(kb, model, method):
            rows.append(_degree_row(rel, G))
            if out is not None and G.number_of_edges():
                from compgraph.analysis.plots import degree_distribution

                _wrote(degree_distribution([d for _, d in G.degree()], out / f"degrees_{rel.lower()}.png",
                                           title=f"{model}: {rel} degrees"))
    emit(pl.DataFrame(rows), fmt, f"degrees of {model}")


# ---- overlap -------------------------------------------------------------------------------------

def _overlap_table(a, b):
    """All members, then per kind, then per layer: group_by, group, counts, measures."""
    import polars as pl

    from compgraph.analysis.overlap import overlap

    parts = [overlap(a, b).select(pl.lit("all").alias("group_by"), pl.lit("all").alias("group"), pl.all())]
    for by in ("kind", "layer"):
        parts.append(overlap(a, b, by=by).select(pl.lit(by).alias("group_by"),
                                                 pl.col(by).cast(pl.String).alias("group"), pl.exclude(by)))
    return pl.concat(parts)


def _circuit_edges(kb, model: str, task: str, members):
    """Edges between the circuit's members: the model's CONNECTS and the task's CAUSES (one
    per ordered pair of each, as in :meth:`compgraph.kb.KB.component_graph`), read for the
    members only."""
    import polars as pl

    connects, causes = GRAPHS
    ids = members["component"].drop_nulls().to_list()
    table = pl.concat([kb.edges_among(model, ids, edges=(connects,)), kb.edges_among(model, ids, edges=(causes,),
                                                                                      task=task)])
    return table.select("src", "dst", "weight", "rel").cast(
        {"src": pl.String, "dst": pl.String, "weight": pl.Float64, "rel": pl.String})


def _overlap_figures(kb, model: str, circuits: dict, out: Path) -> None:
    from compgraph.analysis.html import circuit_html
    from compgraph.analysis.overlap import overlap
    from compgraph.analysis.plots import overlap_by_layer

    (ta, a), (tb, b) = circuits.items()
    layers = [v for f in (a, b) for v in f["layer"].drop_nulls().to_list()]
    groups = range(min(layers), max(layers) + 1) if layers else None
    table = overlap(a, b, by="layer", groups=groups)
    _wrote(overlap_by_layer(table, out / "overlap_by_layer.png", labels=(ta, tb),
                            title=f"{model}: {ta} and {tb} circuits by layer"))
    for task, members in circuits.items():
        edges = _circuit_edges(kb, model, task, members)
        _wrote(circuit_html(members, out / f"circuit_{_file_name(task)}.html", edges=edges,
                            title=f"{model}: {task} circuit"))


@analyse.command()
@click.option("--tasks", required=True, metavar="A,B", help="The two tasks whose circuits to compare.")
@_circuit_options
@_common
def overlap(model, tasks, level, method, fmt, out, store, database):
    """Overlap of two tasks' circuits.

    Jaccard, overlap coefficient, weighted Jaccard and shared fractions; over all
    members, per kind and per layer."""
    names = list(dict.fromkeys(split(tasks)))
    if len(names) != 2:
        raise ConfigError(f"overlap compares exactly two tasks, got {len(names)}: {', '.join(names)}")
    with _kb(store, database, model) as kb:
        circuits = _circuits(kb, model, names, level, method)
        a, b = circuits.values()
        table = _overlap_table(a, b)
        if out is not None:
            _overlap_figures(kb, model, circuits, out)
    emit(table, fmt, f"overlap of the {level} circuits of {names[0]} (a) and {names[1]} (b)")


# ---- reuse ------------------------------------------------------------------------------------------

def _universe(kb, model: str, circuits: dict):
    """The components a null circuit draws from: the model's components of the kinds the
    circuits hold (the null keeps each stratum's kind, so no other kind is ever drawn; a
    model's 46k neurons are not read for circuits of heads and blocks)."""
    import polars as pl

    kinds = sorted({k for frame in circuits.values() for k in frame["kind"].drop_nulls().unique().to_list()})
    return pl.concat([kb.components(model, kind=k).select(pl.col("uid").alias("component"), "kind", "layer")
                      for k in kinds]) if kinds else pl.DataFrame(schema={"component": pl.String, "kind": pl.String,
                                                                          "layer": pl.Int64})


@analyse.command()
@click.option("--tasks", default=None, metavar="T1,T2,...",
              help="Tasks to compare [default: every task with a circuit].")
@_circuit_options
@click.option("--measure", type=click.Choice(["jaccard", "overlap_coef", "weighted", "shared_fraction_a"]),
              default="jaccard", show_default=True, help="The overlap matrix's measure.")
@click.option("--statistic", type=click.Choice(["mean_pairwise_jaccard", "n_reused"]),
              default="mean_pairwise_jaccard", show_default=True, help="The permutation test's statistic.")
@click.option("--permutations", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Null samples of the permutation test.")
@click.option("--seed", type=int, default=0, show_default=True)
@_common
def reuse(model, tasks, level, method, measure, statistic, permutations, seed, fmt, out, store, database):
    """Component reuse across tasks' circuits.

    The overlap matrix, the components shared by several circuits, and a permutation
    test against random circuits with the same count per layer and kind."""
    import polars as pl

    from compgraph.analysis.reuse import overlap_matrix, permutation_test, reuse_counts
    from compgraph.render import json_text

    with _kb(store, database, model) as kb:
        circuits = _circuits(kb, model, None if tasks is None else list(dict.fromkeys(split(tasks))), level,
                             method)
        if len(circuits) < 2:
            raise ConfigError(f"reuse needs circuits of at least two tasks; {model} has {len(circuits)} "
                              f"{level} circuit(s){f' by {method}' if method else ''}")
        method = method or "/".join(sorted({m for f in circuits.values() for m in f["method"].unique().to_list()}))
        test = {"statistic": statistic, **permutation_test(circuits, _universe(kb, model, circuits), n=permutations,
                                                           seed=seed, statistic=statistic)}
    matrix, counts = overlap_matrix(circuits, measure), reuse_counts(circuits)
    if out is not None:
        from compgraph.analysis.plots import reuse_heatmap

        _wrote(reuse_heatmap(matrix, out / "reuse_heatmap.png", title=f"{model}: {measure} of {level} circuits"))
    if fmt == "json":
        click.echo(json_text({"matrix": matrix.to_dicts(), "reuse": counts.to_dicts(), "test": test}))
        return
    emit(matrix, "table", f"{measure} of the {level} circuits ({method})")
    emit(counts, "table", "components by the number of task circuits holding them")
    emit(pl.DataFrame([test]), "table", "permutation test (null: same count per layer and kind)")


# ---- convergence ------------------------------------------------------------------------------------

@analyse.command()
@click.option("--models", required=True, metavar="A,B", help="The two models whose matched units to compare.")
@click.option("--method", default="activation", show_default=True, help="The MATCHES method.")
@click.option("--kind", type=click.Choice(["neuron", "head"]), default="neuron", show_default=True,
              help="The units compared.")
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="Excess above which a unit counts as universal (Gurnee et al.: 0.5).")
@click.option("--bins", type=click.IntRange(min=1), default=10, show_default=True,
              help="Relative-depth bands of the depth map.")
@click.option("--format", "fmt", type=click.Choice(REPORT_FORMATS), default="table", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Write the figure into DIR.")
@store_options
@handle_errors
def convergence(models, method, kind, threshold, bins, fmt, out, store, database):
    """How many of A's neurons (or heads) have a counterpart in B, and at what depth (from MATCHES)."""
    import polars as pl

    from compgraph.analysis import convergence as conv
    from compgraph.render import json_text

    a, b = _two_models(models, "convergence")
    with _kb(store, database, a) as kb:
        require_model(kb.store, b)
        best = kb.matches(a, b, method=method, rank=0).filter(pl.col("kind") == kind)
        if method != str(schema.MatchMethod.DECODING):
            best = best.drop(str(schema.Prop.SAME_TOP))
        layers = {m: kb.store.nodes(schema.MODEL, uids=[schema.model_uid(m)])[str(schema.Prop.N_LAYERS)][0]
                  for m in (a, b)}
    if best.height == 0:
        flag = "" if kind == "neuron" else f" --match-components {kind}"
        hint = (f"heads match by activation only" if kind == "head" and method != "activation" else
                f"run `compgraph match {a} {b}{flag}{'' if method == 'activation' else f' --match-methods {method}'}`"
                " first")
        raise ConfigError(f"no MATCHES by {method} from {a}'s {kind}s to {b}; {hint}")
    summary, per_layer = conv.summary(best, threshold=threshold), conv.by_layer(best, layers[b], threshold=threshold)
    if out is not None:
        from compgraph.analysis.plots import depth_heatmap

        _wrote(depth_heatmap(conv.depth_map(best, layers[a], layers[b], bins), best["excess"].to_numpy(),
                             out / f"convergence_{_file_name(a)}_{_file_name(b)}.png", labels=(a, b),
                             threshold=threshold, title=f"{a} {kind}s' best {method} match in {b}"))
    if fmt == "json":
        click.echo(json_text({"summary": summary.to_dicts()[0], "by_layer": per_layer.to_dicts()}))
        return
    emit(summary, "table", f"{a}'s {kind}s matched in {b} ({method}; universal: excess > {threshold})")
    emit(per_layer, "table", "by layer of " + a)


def _two_models(models: str, what: str) -> tuple[str, str]:
    names = list(dict.fromkeys(split(models)))
    if len(names) != 2:
        raise ConfigError(f"{what} compares exactly two models, got {len(names)}: {', '.join(names)}")
    return names[0], names[1]


@analyse.command("cross-reuse")
@click.option("--models", required=True, metavar="A,B", help="The two models whose circuits to compare.")
@click.option("--tasks", default=None, metavar="T1,T2,...",
              help="Tasks [default: every task with a circuit in both that both pass (--min-accuracy)].")
@_circuit_options
@click.option("--match-method", default="activation", show_default=True, help="The MATCHES method.")
@click.option("--min-accuracy", type=click.FloatRange(0, 1), default=0.8, show_default=True,
              help="Clean accuracy both models need for a task to be chosen by default.")
@click.option("--trials", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Null samples of the permutation test.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--format", "fmt", type=click.Choice(REPORT_FORMATS), default="table", show_default=True)
@store_options
@handle_errors
def cross_reuse(models, tasks, level, method, match_method, min_accuracy, trials, seed, fmt, store, database):
    """Cross-model reuse: per task, the share of A's circuit members whose best match lies in
    B's circuit for the task, against random circuits of B with as many units of each kind
    in each layer."""
    import polars as pl

    from compgraph.analysis.convergence import circuit_reuse
    from compgraph.render import json_text

    a, b = _two_models(models, "cross-reuse")
    with _kb(store, database, a) as kb:
        require_model(kb.store, b)
        accuracy = {m: dict(kb.named("task_accuracy", model=schema.model_uid(m)).select("task", "accuracy")
                            .iter_rows()) for m in (a, b)}
        if tasks is None:
            held = [set(kb.circuit_members(m, level=level, method=method)["task"].drop_nulls().to_list())
                    for m in (a, b)]
            chosen = sorted(t for t in held[0] & held[1]
                            if min(accuracy[a].get(t) or 0.0, accuracy[b].get(t) or 0.0) >= min_accuracy)
            if not chosen:
                raise ConfigError(f"no task has a {level} circuit in both {a} and {b} with clean accuracy >= "
                                  f"{min_accuracy} in both")
        else:
            chosen = list(dict.fromkeys(split(tasks)))
        circuits = {m: _circuits(kb, m, chosen, level, method) for m in (a, b)}
        best = kb.matches(a, b, method=match_method, rank=0)
        if best.height == 0:
            raise ConfigError(f"no MATCHES by {match_method} from {a} to {b}; run `compgraph match {a} {b} "
                              f"--match-components neuron,head --match-methods {match_method}` first")
        kinds = sorted(set(best["dst_kind"].drop_nulls().to_list()))
        units_b = pl.concat([kb.components(b, kind=k).select("uid", "kind", "layer") for k in kinds])
    rows = []
    for task in chosen:
        got = circuit_reuse(best, circuits[a][task]["component"].to_list(), circuits[b][task]["component"].to_list(),
                            units_b, trials=trials, seed=seed)
        rows.append({"task": task, "accuracy_a": accuracy[a].get(task), "accuracy_b": accuracy[b].get(task), **got})
    frame = pl.DataFrame(rows)
    if fmt == "json":
        click.echo(json_text({"tasks": frame.to_dicts()}))
        return
    emit(frame, "table", f"{a}'s {level} circuit members whose best {match_method} match is in {b}'s circuit "
                         f"(null: random circuits of {b}, as many per kind and layer; {trials} trials)")


COMMANDS = (analyse,)
