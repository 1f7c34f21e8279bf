"""Attribution graphs in, circuits out.

:func:`import_graphs` takes the attribution-graph JSON files circuit-tracer writes and
Neuronpedia serves (:mod:`compgraph.data.attribution`) into the store:

* one ``:AttributionGraph`` node per file (uid ``graph:{model}:{slug}``);
* its transcoder features as ``:Feature`` components of the set's ``:Dictionary`` (one per
  layer, created when missing; the file's ``feature`` id kept as ``feature_id``), shared by
  every graph that uses them; error nodes as the ``mlp_error`` ``:Site`` of their layer,
  embedding nodes as the model's ``embed`` site, logit nodes as ``:Token`` nodes;
* ``(:AttributionGraph)-[:CONTAINS {pos, influence, activation}]->(component)`` (a token:
  ``token_prob``, ``target``) and each link as ``(a)-[:ATTRIBUTES {weight, graph,
  source_pos, target_pos, input}]->(b)``.

Every file is one run (``run:{model}:import_graph/{slug}:{digest}``): importing the same
file again changes nothing; a changed file of the same slug replaces what the earlier one
wrote (its links found through the index on ``ATTRIBUTES.graph``). A new graph's links are
created without reading what the shared sources hold (``merge_edges(known_new=True)``). Every file is read and checked before anything is written, so a malformed file (a
missing field, a link to no node) leaves the store unchanged. Memory holds one graph.

:func:`circuit_document` writes a stored circuit in the same format, for circuit-tracer's
viewer (:func:`write_viewer_folder` adds its ``graph-metadata.json`` index).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from compgraph import __version__, schema
from compgraph.data import attribution as fmt
from compgraph.data import attribution_summary as S
from compgraph.data.attribution_summary import COOCCUR_MIN
from compgraph.data.digests import file_digest
from compgraph.engine.context import Progress, no_progress
from compgraph.errors import ConfigError
from compgraph.stages import rows as R

P = schema.Prop
STAGE = "import_graph"
STAGE_VERSION = 1
SUMMARY_STAGE = "graph_summary"
SUMMARY_VERSION = 1


@dataclass
class ImportReport:
    files: int = 0
    imported: int = 0
    unchanged: int = 0
    replaced: int = 0
    nodes: int = 0
    links: int = 0
    seconds: float = 0.0
    summary_seconds: float = 0.0
    graphs: list[str] = field(default_factory=list)

    @property
    def graphs_per_s(self) -> float:
        return self.imported / self.seconds if self.seconds else 0.0

    @property
    def links_per_s(self) -> float:
        return self.links / self.seconds if self.seconds else 0.0


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _model_name(graph: fmt.AttributionGraph, model: str | None, where: Path) -> str:
    name = model or graph.scan
    if not name:
        raise ConfigError(f"{where}: metadata.scan names no model: give --model")
    if "/" in name or ":" in name:
        raise ConfigError(f"{where}: model name {name!r} contains '/' or ':': give --model")
    return name


def _check_unique(graph: fmt.AttributionGraph, model: str, tokenizer: str, where: Path) -> None:
    """Two nodes of a file landing on one (component, position), or two links on one edge,
    would merge into one row: refuse the file."""
    seen: dict[tuple, str] = {}
    for node in graph.nodes:
        key = (R.graph_node_uid(model, tokenizer, graph.transcoder_set, node), node.pos)
        if key in seen:
            raise ConfigError(f"{where}: nodes {seen[key]} and {node.node_id} are both {key[0]} at position "
                              f"{node.pos}")
        seen[key] = node.node_id
    links: set[tuple] = set()
    for i, link in enumerate(graph.links):
        key = (link.source, link.target, link.input)
        if key in links:
            raise ConfigError(f"{where}: link {i} repeats {link.source} -> {link.target}")
        links.add(key)


def _tokenizer(store, model: str) -> tuple[str, bool]:
    """The tokenizer id for ``model``'s tokens (the store's, else the model's name) and whether
    the tokens' texts come from the files (no tokenizer in the store)."""
    found = store.nodes(schema.MODEL, uids=[schema.model_uid(model)])
    if found.height and P.TOKENIZER in found.columns and found[P.TOKENIZER][0]:
        return str(found[P.TOKENIZER][0]), False
    return model, True


def import_graphs(store, path: str | Path, *, model: str | None = None, cooccur_min: int | None = None,
                  progress: Progress = no_progress) -> ImportReport:
    """Import one attribution-graph file, or every ``*.json`` of a folder (module docstring),
    then :func:`summarise_graphs` each model they are of (also when every file was
    imported before: a store whose summary is missing or cut off gets one)."""
    if cooccur_min is not None and cooccur_min < 1:
        raise ConfigError(f"--cooccur-min must be at least 1, not {cooccur_min}")
    files = fmt.graph_files(path)
    report = ImportReport(files=len(files))
    slugs: dict[tuple[str, str], Path] = {}
    plans = []
    for where, graph in fmt.iter_graphs(files):  # every file checked before anything is written
        name = _model_name(graph, model, where)
        if (name, graph.slug) in slugs:
            raise ConfigError(f"{where}: slug {graph.slug!r} is also the slug of {slugs[name, graph.slug]}")
        slugs[name, graph.slug] = where
        _check_unique(graph, name, name, where)
        plans.append((where, name))
    tokenizers: dict[str, tuple[str, bool]] = {}
    advance = progress("import-graph", len(plans))
    start = time.perf_counter()
    for where, name in plans:
        graph = fmt.read_graph(where)
        if name not in tokenizers:
            tokenizers[name] = _tokenizer(store, name)
        state = _import_one(store, graph, where, name, *tokenizers[name])
        if state == "unchanged":
            report.unchanged += 1
        else:
            report.imported += 1
            report.replaced += state == "replaced"
            report.nodes += len(graph.nodes)
            report.links += len(graph.links)
        report.graphs.append(schema.graph_uid(name, graph.slug))
        advance()
    report.seconds = time.perf_counter() - start
    tick = time.perf_counter()
    for name in dict.fromkeys(name for _, name in plans):
        summarise_graphs(store, name, cooccur_min=cooccur_min)
    report.summary_seconds = time.perf_counter() - tick
    return report


def _import_one(store, graph: fmt.AttributionGraph, where: Path, model: str, tokenizer: str,
                token_texts: bool) -> str:
    digest = file_digest(where)  # not cached: thousands of graph files would fill the weights' digest cache
    scope = graph.slug
    run = schema.run_uid(model, f"{STAGE}/{scope}", digest)
    found = store.nodes(schema.RUN, uids=[run])
    if found.height and found[P.STATUS][0] == schema.RunStatus.COMPLETE:
        return "unchanged"
    uid = schema.graph_uid(model, graph.slug)
    started = _now()
    others = store.nodes(schema.RUN, where={P.MODEL: model, P.STAGE: STAGE, P.SCOPE: scope})
    old = [r for r in others[P.UID].to_list() if r != run] if others.height else []
    _set_run(store, run, **{P.MODEL: model, P.STAGE: STAGE, P.SCOPE: scope, P.STAGE_VERSION: STAGE_VERSION,
                            P.STATUS: schema.RunStatus.RUNNING, P.STARTED_AT: started, P.CODE_VERSION: __version__,
                            P.CONFIG: json.dumps({"file": where.name, "model": model}),
                            P.INPUTS: json.dumps({"graph": digest})})
    for other in old:
        _set_run(store, other, **{P.STATUS: schema.RunStatus.SUPERSEDED, P.SUPERSEDED_BY: run})
    nodes, edges = R.graph_rows(graph, model=model, tokenizer_id=tokenizer, uid=uid, digest=digest,
                                source=str(where), token_texts=token_texts)
    marker = schema.run_marker(STAGE)
    rows = 0
    for kind, frame in nodes:
        if frame.height:
            if kind is schema.ATTRIBUTION_GRAPH:
                frame = frame.with_columns(pl.lit(run).alias(marker))
            store.merge_nodes(kind, frame)
            rows += frame.height
    if old or found.height:  # an earlier version of the file, or this one cut off: its links go first
        for rel in (schema.CONTAINS, schema.CONTAINS_TOKEN):
            store.delete_edges(rel, source_where={P.UID: uid})
        for rel in (schema.ATTRIBUTES, schema.ATTRIBUTES_TOKEN):
            store.delete_edges(rel, where={P.GRAPH: uid})  # through the index on ATTRIBUTES.graph
    for rel, frame in edges:
        if not frame.height:
            continue
        frame = frame.with_columns(pl.lit(run).alias(P.RUN))
        # the graph's edges are new now: no read of what the shared sources (embeddings, features) hold
        store.merge_edges(rel, frame, known_new=rel is not schema.HAS_DICTIONARY)
        rows += frame.height
    _finish_run(store, run, started, rows)
    return "replaced" if old else "imported"


def _floor(store, model: str, cooccur_min: int | None) -> int:
    """``cooccur_min``, else the floor of the model's latest summary, else :data:`COOCCUR_MIN`."""
    if cooccur_min is not None:
        return cooccur_min
    runs = store.nodes(schema.RUN, where={P.MODEL: model, P.STAGE: SUMMARY_STAGE})
    if not runs.height:
        return COOCCUR_MIN
    latest = runs.sort(P.STARTED_AT).row(-1, named=True)
    return int(json.loads(latest[P.CONFIG])[P.COOCCUR_MIN])


def summarise_graphs(store, model: str, *, cooccur_min: int | None = None) -> str:
    """Rewrite what ``model``'s imported graphs share (:mod:`compgraph.data.attribution_summary`):
    each contained feature's ``graphs``, ``mean_influence`` and ``mean_activation``, ``RECURS``
    between features linked in at least two graphs, ``COOCCURS`` between features found
    together in at least ``cooccur_min`` graphs. One run (``run:{model}:graph_summary:{hash}``,
    its identity the model's complete import runs and ``cooccur_min``): "unchanged" when that
    run is complete, else everything earlier summaries wrote is deleted and written again
    ("written"), so a summary cut off is redone whole. It reads the model's features'
    ``CONTAINS`` and feature -> feature links: about 15 s for 1,000 graphs of 3,500 links).
    ``cooccur_min`` None: the floor of the model's latest summary, else :data:`COOCCUR_MIN`."""
    cooccur_min = _floor(store, model, cooccur_min)
    if cooccur_min < 1:
        raise ConfigError(f"--cooccur-min must be at least 1, not {cooccur_min}")
    imports = store.nodes(schema.RUN, where={P.MODEL: model, P.STAGE: STAGE,
                                             P.STATUS: str(schema.RunStatus.COMPLETE)})
    identity = {"version": SUMMARY_VERSION, P.COOCCUR_MIN: cooccur_min,
                "imports": sorted(imports[P.UID].to_list()) if imports.height else []}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    run = schema.run_uid(model, SUMMARY_STAGE, digest)
    found = store.nodes(schema.RUN, uids=[run])
    if found.height and found[P.STATUS][0] == schema.RunStatus.COMPLETE:
        return "unchanged"
    if found.height and found.row(0, named=True).get(P.SUPERSEDED_BY):
        store.remove_properties(schema.RUN, [P.SUPERSEDED_BY], where={P.UID: run})  # an earlier floor again
    started = _now()
    others = store.nodes(schema.RUN, where={P.MODEL: model, P.STAGE: SUMMARY_STAGE})
    _set_run(store, run, **{P.MODEL: model, P.STAGE: SUMMARY_STAGE, P.SCOPE: model,
                            P.STAGE_VERSION: SUMMARY_VERSION, P.STATUS: schema.RunStatus.RUNNING,
                            P.STARTED_AT: started, P.CODE_VERSION: __version__,
                            P.CONFIG: json.dumps({P.COOCCUR_MIN: cooccur_min}),
                            P.INPUTS: json.dumps({"imports": len(identity["imports"])})})
    for other in (others[P.UID].to_list() if others.height else []):
        if other != run:
            _set_run(store, other, **{P.STATUS: schema.RunStatus.SUPERSEDED, P.SUPERSEDED_BY: run})
    for rel in (schema.RECURS, schema.COOCCURS):
        store.delete_edges(rel, where={P.MODEL: model})
    store.remove_properties(schema.FEATURE, [P.GRAPHS, P.MEAN_INFLUENCE, P.MEAN_ACTIVATION],
                            where={P.MODEL: model})
    contains = store.edges(schema.CONTAINS_FEATURE, source_where={P.MODEL: model},
                           properties=(P.INFLUENCE, P.ACTIVATION))
    contains = contains.rename({"src": "graph", "dst": "feature"}) if contains.height else \
        pl.DataFrame(schema={"graph": pl.String, "feature": pl.String, "influence": pl.Float64,
                             "activation": pl.Float64})
    links = store.edges(schema.FEATURE_LINKS, source_where={P.MODEL: model}, properties=(P.GRAPH, P.WEIGHT))
    features = S.feature_summary(contains)
    recurring = S.recurring_pairs(links) if links.height else pl.DataFrame(schema=S.RECURRING_COLUMNS)
    cooccurring = S.cooccurring_pairs(contains, cooccur_min)
    rows = 0
    if features.height:
        store.merge_nodes(schema.FEATURE, features)
        rows += features.height
    for rel, frame in ((schema.RECURS, recurring), (schema.COOCCURS, cooccurring)):
        if frame.height:
            store.merge_edges(rel, frame.with_columns(pl.lit(model).alias(P.MODEL), pl.lit(run).alias(P.RUN)),
                              known_new=True)  # every earlier summary edge of the model is deleted above
            rows += frame.height
    _finish_run(store, run, started, rows)
    return "written"


def _finish_run(store, run: str, started: str, rows: int) -> None:
    finished = _now()
    seconds = (dt.datetime.fromisoformat(finished) - dt.datetime.fromisoformat(started)).total_seconds()
    _set_run(store, run, **{P.STATUS: schema.RunStatus.COMPLETE, P.FINISHED_AT: finished, P.SECONDS: seconds,
                            P.ROWS_WRITTEN: rows})


def _set_run(store, uid: str, **props: Any) -> None:
    store.merge_nodes(schema.RUN, pl.DataFrame([{P.UID: uid, **props}]))


# ---- export ----------------------------------------------------------------------------------

_EXPORT_TYPES = {kind: ftype for ftype, kind in fmt.COMPONENT_TYPES.items()}
_TAGS = {"head": "H", "neuron": "N", "expert": "E", "kv_head": "KV", "attn": "attn", "mlp": "mlp"}
_SITE_KINDS = {str(schema.SiteKind.ATTN), str(schema.SiteKind.MLP), str(schema.SiteKind.KV_HEAD)}


def _component(row: dict) -> tuple[str, int | None, int | None]:
    """(kind, layer, index) of a stored component row (its properties)."""
    if P.SITE in row and row.get(P.SITE):
        site = str(row[P.SITE])
        return site, row.get(P.LAYER), row.get(P.KV_HEAD) if site == schema.SiteKind.KV_HEAD else None
    if row.get(P.HEAD) is not None:
        return "head", row[P.LAYER], row[P.HEAD]
    if row.get(P.EXPERT) is not None:
        return "expert", row[P.LAYER], row[P.EXPERT]
    if row.get(P.DICTIONARY) is not None:
        raise ConfigError(f"{row[P.UID]}: dictionary features in a circuit cannot be exported yet")
    return "neuron", row[P.LAYER], row.get(P.INDEX)


def _clerp(kind: str, layer: int | None, index: int | None) -> str:
    names = {"head": f"L{layer} H{index} (attention head)", "neuron": f"L{layer} N{index} (MLP neuron)",
             "expert": f"L{layer} E{index} (MoE expert)", "kv_head": f"L{layer} KV{index} (key/value head)",
             "attn": f"L{layer} attention block", "mlp": f"L{layer} MLP block"}
    return names[kind]


def _cumulative_influence(scores: dict[str, float]) -> dict[str, float]:
    """circuit-tracer's ``influence``: a node's share of the total |score| summed over it and every
    node ranked before it (lower = more important; the viewer prunes above a threshold)."""
    total = sum(abs(s) for s in scores.values()) or 1.0
    out, running = {}, 0.0
    for uid, score in sorted(scores.items(), key=lambda kv: (-abs(kv[1]), kv[0])):
        running += abs(score)
        out[uid] = running / total
    return out


def circuit_document(store, model: str, task: str, *, level: str = "node", method: str | None = None,
                     slug: str | None = None, prompt: str, prompt_ids: list[int], prompt_tokens: list[str],
                     answer_id: int, answer: str) -> dict:
    """One stored circuit as an attribution-graph document (:mod:`compgraph.data.attribution`).

    Nodes: an embedding node per prompt position; the circuit's components at the last
    position (feature types :data:`compgraph.data.attribution.COMPONENT_TYPES`, ``feature``
    the Cantor pair of layer and ``index * 8 + kind code``, so no two share the viewer's id);
    the answer token as the target logit. Links: a node circuit links each member to the
    logit with its ``INCLUDES`` score; an edge circuit has its ``CAUSES`` edges (``effect``;
    ``input`` the destination's q, k, v, mlp or logits input), the embeddings' from the last
    position. ``influence`` is the cumulative |score| share (:func:`_cumulative_influence`).
    compgraph's circuits sum over positions and measure a metric, not one token's
    probability: ``token_prob`` is 0."""
    if level not in ("node", "edge"):
        raise ConfigError(f"--level must be node or edge, not {level!r}")
    where = {P.MODEL: model, P.TASK: task, P.LEVEL: level, **({P.METHOD: method} if method else {})}
    circuits = store.nodes(schema.CIRCUIT, where=where)
    if circuits.height == 0:
        raise ConfigError(f"no {level} circuit of {model} for task {task!r}"
                          f"{f' by method {method}' if method else ''} in the store")
    if circuits.height > 1:
        raise ConfigError(f"{model} has {level} circuits for {task!r} by several methods "
                          f"({', '.join(sorted(circuits[P.METHOD].to_list()))}): give --method")
    circuit = circuits.row(0, named=True)
    models = store.nodes(schema.MODEL, uids=[schema.model_uid(model)])
    n_layers = int(models[P.N_LAYERS][0]) if models.height and P.N_LAYERS in models.columns else 0
    last = len(prompt_ids) - 1
    includes = store.edges(schema.INCLUDES, where=None, source_where={P.UID: circuit[P.UID]})
    scores = dict(zip(includes["dst"].to_list(), includes[P.SCORE].to_list())) if includes.height else {}
    links_in: list[tuple[str, str, float, str]] = []
    if level == "edge":
        causes = store.edges(schema.CAUSES, where={P.TASK: task, P.IN_CIRCUIT: True, P.METHOD: circuit[P.METHOD]},
                             source_where={P.MODEL: model})
        links_in = [(r["src"], r["dst"], float(r[P.EFFECT]), str(r[P.INPUT] or "")) for r in causes.to_dicts()]
    uids = sorted(set(scores) | {u for s, d, _, _ in links_in for u in (s, d)})
    found = {r[P.UID]: r for r in store.nodes(schema.COMPONENT, uids=uids).to_dicts()} if uids else {}
    influence = _cumulative_influence(scores)
    logit_id = f"{n_layers + 1}_{answer_id}_{last}"
    embed_id = f"E_{prompt_ids[last]}_{last}"
    nodes = [{"node_id": f"E_{t}_{p}", "feature": p, "layer": "E", "ctx_idx": p, "feature_type": fmt.EMBEDDING_TYPE,
              "jsNodeId": f"E_{t}-{p}", "clerp": "", "influence": None} for p, t in enumerate(prompt_ids)]
    ids: dict[str, str] = {}
    for uid in uids:
        row = found.get(uid)
        if row is None:
            raise ConfigError(f"circuit member {uid} is not a component in the store")
        kind, layer, index = _component(row)
        if kind == schema.SiteKind.EMBED:
            ids[uid] = embed_id
            nodes[last]["influence"] = influence.get(uid)
            continue
        if kind == schema.SiteKind.LOGITS:
            ids[uid] = logit_id
            continue
        node_id = f"{layer}_{_TAGS[kind]}{'' if index is None else index}_{last}"
        ids[uid] = node_id
        nodes.append({"node_id": node_id, "feature": fmt.component_feature(kind, int(layer), index), "layer": str(layer),
                      "ctx_idx": last, "feature_type": _EXPORT_TYPES[kind], "jsNodeId": node_id,
                      "clerp": _clerp(kind, layer, index), "influence": influence.get(uid, 1.0),
                      "activation": None})
    nodes.append({"node_id": logit_id, "feature": answer_id, "layer": str(n_layers + 1), "ctx_idx": last,
                  "feature_type": fmt.LOGIT_TYPE, "jsNodeId": f"L_{answer_id}-{last}", "is_target_logit": True,
                  "token_prob": 0.0, "clerp": f'Output "{answer}" (p=0.000)', "influence": None})
    if level == "node":
        links = [{"source": ids[u], "target": logit_id, "weight": float(s)} for u, s in sorted(scores.items())]
    else:
        links = [{"source": ids[s], "target": ids[d], "weight": w, **({"input": i} if i else {})}
                 for s, d, w, i in sorted(links_in)]
    slug = slug or f"{model}-{task}-{level}"
    metadata = {
        "slug": slug, "scan": model, "transcoder_list": [], "prompt_tokens": prompt_tokens, "prompt": prompt,
        "node_threshold": 1.0, "schema_version": 1,
        "info": {"generator": {"name": "compgraph", "version": __version__}, "circuit": circuit[P.UID],
                 "task": task, "level": level, "method": circuit[P.METHOD],
                 "faithfulness": circuit.get(P.FAITHFULNESS)},
    }
    qparams = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    return {"metadata": metadata, "qParams": qparams, "nodes": nodes, "links": links}


def write_viewer_file(doc: dict, out: str | Path) -> Path:
    """Write ``doc`` to ``out`` and list it in the folder's ``graph-metadata.json`` (the viewer's
    index: the entry of the same slug replaced). The viewer fetches ``{slug}.json``: ``out``'s
    stem must be the slug."""
    out = Path(out)
    if out.suffix != ".json":
        raise ConfigError(f"{out}: the output must be a .json file")
    if out.stem != doc["metadata"]["slug"]:
        raise ConfigError(f"{out}: the viewer finds a graph by its slug: name the file {doc['metadata']['slug']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    index_path = out.parent / fmt.INDEX_FILE
    index = {"graphs": []}
    if index_path.exists():
        try:
            index = json.loads(index_path.read_text())
        except json.JSONDecodeError:
            raise ConfigError(f"{index_path}: not JSON; move it away first") from None
    entry = {k: v for k, v in doc["metadata"].items() if k != "info"}
    index["graphs"] = [g for g in index.get("graphs", []) if g.get("slug") != entry["slug"]] + [entry]
    out.write_text(json.dumps(doc, indent=1))
    index_path.write_text(json.dumps(index, indent=1))
    return out


def task_prompt(model_source: str, task: str) -> dict:
    """The prompt an exported circuit shows: the first example of ``task`` that fits the model's
    tokenizer (clean prompt, its token ids with the tokenizer's special tokens as the effects
    read them, each token's text, the answer and its id)."""
    from compgraph.data.tasks import fitting, load_task
    from compgraph.models.loading import load_tokenizer

    tokenizer = load_tokenizer(model_source)
    example = fitting(load_task(task), tokenizer).examples[0]
    ids = list(tokenizer(example.clean)["input_ids"])
    return {"prompt": example.clean, "prompt_ids": ids, "prompt_tokens": [tokenizer.decode([i]) for i in ids],
            "answer_id": int(tokenizer(example.answer, add_special_tokens=False)["input_ids"][0]),
            "answer": example.answer}
