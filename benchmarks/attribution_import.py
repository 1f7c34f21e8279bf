"""Importing a folder of attribution graphs, and the named queries on the store it makes.

    python benchmarks/attribution_import.py [--graphs 1000] [--base FILE] [--out DIR]

The graphs: ``--base`` (a real circuit-tracer / Neuronpedia file) perturbed ``--graphs``
times, or by default a base built here in circuit-tracer's format: a 12-token prompt on a
26-layer model with 16,384-wide transcoders, 120 features drawn from a pool of 2,000 (Zipf
popularity, so features recur across graphs as real ones do), error nodes at the last three
positions, 12 embeddings, 5 logits; each feature has 4 incoming links from lower layers at
earlier or equal positions, each logit 30. Each perturbed copy keeps a seeded ~85 % of the
base's features, replaces the rest from the pool, and scales every weight by a factor in
[0.5, 1.5] (links between kept nodes only).

Measured, in one process on a fresh embedded store: the bare parse of every file (the
baseline: read + check, what no import can skip), the import (graphs/s, links/s and the
ratio to the parse) and the summary written after it (:func:`compgraph.attribution.summarise_graphs`), the resident memory after 10 % and after 100 % of the graphs (bounded:
one graph in memory at a time), then each named query of the attribution library twice
(the second time reported), :meth:`compgraph.kb.KB.graph_paths` and
:meth:`compgraph.kb.KB.cooccurrence_tables`.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import compgraph  # noqa: E402
from compgraph import schema  # noqa: E402
from compgraph.attribution import import_graphs  # noqa: E402
from compgraph.data import attribution as fmt  # noqa: E402
from compgraph.store.factory import open_store  # noqa: E402

N_LAYERS, WIDTH, POSITIONS, POOL = 26, 16_384, 12, 2_000


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def base_graph(rng: np.random.Generator, pool: np.ndarray, popularity: np.ndarray) -> dict:
    tokens = [f"t{i}" for i in range(POSITIONS)]
    nodes = [{"node_id": f"E_{100 + p}_{p}", "feature": p, "layer": "E", "ctx_idx": p, "feature_type": "embedding",
              "jsNodeId": f"E_{100 + p}-{p}", "clerp": "", "influence": None} for p in range(POSITIONS)]
    picks = rng.choice(len(pool), size=120, replace=False, p=popularity)
    features = []
    for i in picks:
        layer, index = (int(v) for v in pool[i])
        pos = int(rng.integers(0, POSITIONS))
        features.append((layer, index, pos))
        nodes.append({"node_id": f"{layer}_{index}_{pos}", "feature": fmt.cantor_pair(layer, index),
                      "layer": str(layer), "ctx_idx": pos, "feature_type": "cross layer transcoder",
                      "jsNodeId": f"{layer}_{index}-0", "clerp": "", "influence": float(rng.uniform(0, 0.8)),
                      "activation": float(rng.uniform(0.1, 10))})
    for layer in range(N_LAYERS):
        for pos in range(POSITIONS - 3, POSITIONS):
            nodes.append({"node_id": f"0_{layer}_{pos}", "feature": -1, "layer": str(layer), "ctx_idx": pos,
                          "feature_type": "mlp reconstruction error", "jsNodeId": f"{layer}_{pos}-0", "clerp": "",
                          "influence": float(rng.uniform(0, 1))})
    last = POSITIONS - 1
    for k, vocab in enumerate(rng.choice(200_000, size=5, replace=False)):
        nodes.append({"node_id": f"{N_LAYERS + 1}_{vocab}_{last}", "feature": int(vocab), "layer": str(N_LAYERS + 1),
                      "ctx_idx": last, "feature_type": "logit", "jsNodeId": f"L_{vocab}-{last}",
                      "is_target_logit": k == 0, "token_prob": 0.5 / (k + 1), "clerp": f'Output "w{vocab}" (p=0.1)',
                      "influence": None})
    links = []
    by_layer = sorted(features)
    for layer, index, pos in features:
        sources = [f"E_{100 + p}_{p}" for p in range(pos + 1)]
        sources += [f"{s_l}_{s_i}_{s_p}" for s_l, s_i, s_p in by_layer if s_l < layer and s_p <= pos]
        for src in rng.choice(sources, size=min(4, len(sources)), replace=False):
            links.append({"source": str(src), "target": f"{layer}_{index}_{pos}", "weight": float(rng.normal(0, 1))})
    logits = [n["node_id"] for n in nodes if n["feature_type"] == "logit"]
    feature_ids = [f"{layer}_{index}_{pos}" for layer, index, pos in features]
    for logit in logits:
        for src in rng.choice(feature_ids, size=30, replace=False):
            links.append({"source": str(src), "target": logit, "weight": float(rng.normal(0, 1))})
    meta = {"slug": "base", "scan": "gemma-2-2b", "transcoder_list": [], "prompt_tokens": tokens,
            "prompt": " ".join(tokens), "node_threshold": 0.8, "schema_version": 1}
    qparams = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    return {"metadata": meta, "qParams": qparams, "nodes": nodes, "links": links}


def perturbed(base: dict, i: int, rng: np.random.Generator, pool: np.ndarray, popularity: np.ndarray) -> dict:
    doc = copy.deepcopy(base)
    doc["metadata"]["slug"] = f"graph-{i:05d}"
    taken = {n["node_id"] for n in doc["nodes"]}
    renamed = {}
    for node in doc["nodes"]:
        if node["feature_type"] in fmt.FEATURE_TYPES and rng.random() > 0.85:
            layer, pos = int(node["layer"]), node["ctx_idx"]
            for _ in range(20):
                cand = pool[int(rng.choice(len(pool), p=popularity))]
                new_id = f"{layer}_{int(cand[1])}_{pos}"
                if new_id not in taken:
                    break
            else:
                continue
            taken.add(new_id)
            renamed[node["node_id"]] = new_id
            node.update(node_id=new_id, feature=fmt.cantor_pair(layer, int(cand[1])), jsNodeId=f"{layer}_{int(cand[1])}-0")
    for link in doc["links"]:
        link["source"] = renamed.get(link["source"], link["source"])
        link["target"] = renamed.get(link["target"], link["target"])
        link["weight"] *= float(rng.uniform(0.5, 1.5))
    return doc


def write_graphs(folder: Path, n: int, base_file: Path | None, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    pool = np.stack([rng.integers(0, N_LAYERS, POOL), rng.integers(0, WIDTH, POOL)], axis=1)
    popularity = 1.0 / np.arange(1, POOL + 1)
    popularity /= popularity.sum()
    base = json.loads(base_file.read_text()) if base_file else base_graph(rng, pool, popularity)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"graph-{i:05d}.json").write_text(json.dumps(perturbed(base, i, rng, pool, popularity)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--graphs", type=int, default=1000)
    parser.add_argument("--base", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="Keep the files and the store here.")
    args = parser.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="agbench-"))
    folder, kb_path = root / "graphs", root / "kb"
    write_graphs(folder, args.graphs, args.base)
    files = fmt.graph_files(folder)
    size = sum(p.stat().st_size for p in files)
    tick = time.perf_counter()
    n_links = sum(len(g.links) for _, g in fmt.iter_graphs(files))
    parse_s = time.perf_counter() - tick
    print(f"{len(files)} graphs, {size / 2**20:.1f} MB, {n_links:,} links; parse alone {parse_s:.1f} s")
    rss: dict[int, float] = {}
    done = [0]

    def progress(label, total):
        def advance():
            done[0] += 1
            if done[0] in (max(1, total // 10), total):
                rss[done[0]] = _rss_mb()
        return advance

    with open_store(kb_path) as store:
        report = import_graphs(store, folder, progress=progress)
    print(f"import: {report.seconds:.1f} s, {report.graphs_per_s:.1f} graphs/s, {report.links_per_s:,.0f} links/s, "
          f"{report.seconds / parse_s:.1f}x the bare parse; then the summary {report.summary_seconds:.1f} s; RSS " +
          ", ".join(f"{v:,.0f} MB after {k} graphs" for k, v in sorted(rss.items())))
    model, graph = "gemma-2-2b", schema.graph_uid("gemma-2-2b", "graph-00000")
    with compgraph.open(str(kb_path)) as kb:
        top = kb.named("feature_prevalence", model=model, limit=1)["feature"][0]
        cases = [("graphs_with_feature", {"uid": top}), ("feature_prevalence", {"model": model, "limit": 20}),
                 ("recurring_attributions", {"model": model, "min_graphs": 10, "limit": 20}),
                 ("graph_links", {"graph": graph}),
                 ("feature_cooccurrence", {"model": model, "min_graphs": 100})]
        for name, params in cases:
            for _ in range(2):
                tick = time.perf_counter()
                rows = kb.named(name, **params).height
                seconds = time.perf_counter() - tick
            print(f"{name}: {seconds:.2f} s, {rows} rows")
        for _ in range(2):
            tick = time.perf_counter()
            paths = kb.graph_paths(graph, limit=10)
            seconds = time.perf_counter() - tick
        print(f"KB.graph_paths: {seconds:.2f} s, {paths.height} paths")
        tick = time.perf_counter()
        nodes, edges = kb.cooccurrence_tables(model, min_graphs=100)
        print(f"KB.cooccurrence_tables(min_graphs=100): {time.perf_counter() - tick:.2f} s, "
              f"{nodes.height} features, {edges.height} pairs")
    print(f"files and store in {root}")


if __name__ == "__main__":
    main()
