"""Attribution-graph JSON documents written by hand, in each node-id variant circuit-tracer and
Neuronpedia have used (see compgraph.data.attribution): the tests' independent fixtures."""

from __future__ import annotations

import json
from pathlib import Path

N_LAYERS = 4
TOKENS = ["<bos>", "The", " capital", " of"]


def cantor(x: int, y: int) -> int:  # written out here, not imported from the code under test
    return (x + y) * (x + y + 1) // 2 + y


def feature(layer, index, pos, influence, activation, variant="current"):
    if variant == "legacy":  # 2025-05: feature = index + 10**ceil(log10(width)) * layer, layer an int
        return {"node_id": f"{layer}_{index}_{pos}", "feature": index + 100_000 * layer, "layer": layer,
                "ctx_idx": pos, "feature_type": "cross layer transcoder", "jsNodeId": f"{layer}_{index}-0",
                "clerp": "", "influence": influence, "activation": activation}
    return {"node_id": f"{layer}_{index}_{pos}", "feature": cantor(layer, index), "layer": str(layer), "ctx_idx": pos,
            "feature_type": "cross layer transcoder", "jsNodeId": f"{layer}_{index}-0", "clerp": "",
            "influence": influence, "activation": activation}


def error(layer, pos, influence, variant="current"):
    node_id = {"current": f"0_{layer}_{pos}", "v051": f"{layer}_-1_{pos}", "legacy": f"0_{layer}_{pos}",
               "neuronpedia": f"0_{layer}_{pos}"}[variant]
    return {"node_id": node_id, "feature": -1, "layer": str(layer), "ctx_idx": pos,
            "feature_type": "mlp reconstruction error", "jsNodeId": f"{layer}_{pos}-0", "clerp": "",
            "influence": influence}


def embedding(vocab, pos, influence=None):
    return {"node_id": f"E_{vocab}_{pos}", "feature": pos, "layer": "E", "ctx_idx": pos, "feature_type": "embedding",
            "jsNodeId": f"E_{vocab}-{pos}", "clerp": "", "influence": influence}


def logit(vocab, token, prob, target, pos=len(TOKENS) - 1):
    layer = N_LAYERS + 1
    return {"node_id": f"{layer}_{vocab}_{pos}", "feature": vocab, "layer": str(layer), "ctx_idx": pos,
            "feature_type": "logit", "jsNodeId": f"L_{vocab}-{pos}", "is_target_logit": target, "token_prob": prob,
            "clerp": f'Output "{token}" (p={prob:.3f})', "influence": None}


def document(slug, nodes, links, *, scan="gemma-2-2b", variant="current", prompt="The capital of"):
    meta = {"slug": slug, "scan": scan, "transcoder_list": [], "prompt_tokens": TOKENS, "prompt": prompt,
            "node_threshold": 0.8}
    if variant != "legacy":
        meta["schema_version"] = 1
    if variant == "neuronpedia":
        meta["info"] = {"creator_name": "test", "generator": {"name": "circuit-tracer", "version": "0.1.0"}}
    doc = {"metadata": meta, "nodes": nodes, "links": [{"source": s, "target": t, "weight": w} for s, t, w in links]}
    if variant != "neuronpedia":  # Neuronpedia's own files may leave the viewer state out
        doc["qParams"] = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    return doc


def capital_graph(slug="capital", variant="current", *, weight=4.0):
    """Embeddings at positions 0-3; features L1 #7 at 2 and L3 #42 at 3 (and at 2); an error node of
    layer 2 at 3; two logits at 3 (" Paris" the target). Eight links; the paths from the
    embeddings to " Paris": e3 -> L3#42@3 -> Paris (1.0 * weight), e2 -> L1#7 -> L3#42@3 -> Paris
    (2.0 * 0.5 * weight) and e2 -> L1#7 -> L3#42@2 -> Paris (2.0 * 1.5 * 0.8)."""
    nodes = [embedding(2, 0), embedding(651, 1), embedding(6037, 2, 0.2), embedding(576, 3, 0.3),
             feature(1, 7, 2, 0.4, 1.5, variant), feature(3, 42, 3, 0.5, 2.0, variant),
             feature(3, 42, 2, 0.7, 0.5, variant), error(2, 3, 0.6, variant),
             logit(7127, " Paris", 0.812, True), logit(5134, " London", 0.05, False)]
    e2, e3 = nodes[2]["node_id"], nodes[3]["node_id"]
    f1, f3, f3b, err = (n["node_id"] for n in nodes[4:8])
    paris, london = nodes[8]["node_id"], nodes[9]["node_id"]
    links = [(e2, f1, 2.0), (f1, f3b, 1.5), (f1, f3, 0.5), (e3, f3, 1.0), (f3, paris, weight), (err, paris, -1.5),
             (f3, london, 0.25), (f3b, paris, 0.8)]
    return document(slug, nodes, links, variant=variant)


def write(folder: Path, *docs) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for doc in docs:
        path = folder / f"{doc['metadata']['slug']}.json"
        path.write_text(json.dumps(doc))
        paths.append(path)
    return paths
