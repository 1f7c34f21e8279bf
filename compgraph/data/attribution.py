"""Attribution graphs as circuit-tracer writes them and Neuronpedia serves them: read, check, write.

A file is one JSON object: ``metadata`` (``slug``, ``scan``: the transcoder set,
``prompt``, ``prompt_tokens``, ``node_threshold``, ``schema_version``, optionally
``transcoder_list`` and ``info``), ``qParams`` (the viewer's state: pinned ids,
supernodes), ``nodes`` and ``links`` (``source``, ``target``, ``weight``). The schema
is circuit-tracer's ``frontend/graph_models.py``.

Node ids differ between backends and versions (a feature ``{layer}_{index}_{pos}``; an
error node ``{layer}_-1_{pos}`` in one, ``0_{layer}_{pos}`` in another; the ``feature``
field a Cantor pair of layer and index in one, ``layer * width + index`` in another), so a
node is read by its ``feature_type`` and fields, never by one id pattern:

* ``cross layer transcoder`` / ``transcoder`` (a feature): ``layer`` the layer it reads,
  the index the middle part of an id ``{layer}_{index}_{pos}``, else the second
  member of the Cantor pair ``feature``; ``feature`` is kept as it is (``feature_id``);
* ``mlp reconstruction error``: ``layer``; the position is ``ctx_idx``;
* ``embedding`` (``layer`` "E"): the token id is the middle part of ``E_{id}_{pos}``;
* ``logit``: the token id is ``feature``, with ``token_prob`` and ``is_target_logit``.

compgraph's own exports (:func:`compgraph.attribution.circuit_document`) add node kinds for
its components: ``attention head``, ``mlp neuron``, ``attention block``, ``mlp block``, ``kv
head`` and ``expert`` (``feature``: :func:`component_feature`; the viewer draws them as
generic nodes), and an ``input`` key on links (:data:`LINK_INPUTS`: which input of its
destination an edge reaches; the viewer ignores it).

What cannot be read is refused with :class:`~compgraph.errors.ConfigError` naming the file
and the node or link: nothing of such a file is imported.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from compgraph.errors import ConfigError

FEATURE_TYPES = ("cross layer transcoder", "transcoder")
ERROR_TYPE = "mlp reconstruction error"
EMBEDDING_TYPE = "embedding"
LOGIT_TYPE = "logit"
COMPONENT_TYPES = {
    "attention head": "head", "mlp neuron": "neuron", "expert": "expert", "kv head": "kv_head",
    "attention block": "attn", "mlp block": "mlp",
}
"""compgraph's exported components: feature_type -> component kind
(:class:`compgraph.schema.ComponentKind` or :class:`compgraph.schema.SiteKind` value)."""
COMPONENT_CODES = ("head", "neuron", "expert", "kv_head", "attn", "mlp")
"""A compgraph component's ``feature`` is the Cantor pair of its layer and ``index * 6 + code``
(its kind's position here; a block has no index: ``code``), so that no two components of a
layer share the viewer's ``{layer}_{feature}_{pos}`` identity."""
KNOWN_TYPES = (*FEATURE_TYPES, ERROR_TYPE, EMBEDDING_TYPE, LOGIT_TYPE, *COMPONENT_TYPES)
LINK_INPUTS = ("q", "k", "v", "mlp", "logits")
"""``input`` of compgraph's edge-circuit links: ``CAUSES.input`` (:data:`compgraph.effects.edges.INPUTS`)."""

_CLERP_TOKEN = re.compile(r'^Output "(.*)" \(p=[-+0-9.eE]+\)$', re.S)


def cantor_pair(x: int, y: int) -> int:
    """The Cantor pairing ``(x + y)(x + y + 1)/2 + y`` (circuit-tracer's feature ids)."""
    return (x + y) * (x + y + 1) // 2 + y


def cantor_unpair(z: int) -> tuple[int, int]:
    """The (x, y) whose :func:`cantor_pair` is ``z`` (z >= 0)."""
    w = (math.isqrt(8 * z + 1) - 1) // 2
    y = z - w * (w + 1) // 2
    return w - y, y


def component_feature(kind: str, layer: int, index: int | None) -> int:
    """The ``feature`` field of a compgraph component (:data:`COMPONENT_CODES`)."""
    code = COMPONENT_CODES.index(kind)
    return cantor_pair(layer, code if index is None else index * len(COMPONENT_CODES) + code)


def _component_index(feature: Any, layer: int, kind: str, where: str) -> int | None:
    if isinstance(feature, bool) or not isinstance(feature, int) or feature < 0:
        raise _bad(where, f"feature must be a non-negative integer, not {feature!r}")
    x, slot = cantor_unpair(feature)
    index, code = divmod(slot, len(COMPONENT_CODES))
    if x != layer or COMPONENT_CODES[code] != kind or (kind in ("attn", "mlp") and index):
        raise _bad(where, f"feature {feature} is not the id of a {kind} of layer {layer}")
    return None if kind in ("attn", "mlp") else index


@dataclass(frozen=True)
class GraphNode:
    """One node of an attribution graph, read by its kind.

    ``kind``: ``feature``, ``error``, ``embedding``, ``logit``, or a compgraph component
    kind (:data:`COMPONENT_TYPES`). ``layer`` is None for embeddings and logits; ``index``
    is the feature's (or the component's) index within its layer, the token id for
    embeddings and logits (None for errors and for an embedding whose id does not say it).
    """

    node_id: str
    kind: str
    feature_type: str
    layer: int | None
    index: int | None
    pos: int
    feature: int | None = None
    influence: float | None = None
    activation: float | None = None
    token_prob: float | None = None
    is_target_logit: bool = False
    token: str | None = None
    clerp: str = ""


@dataclass(frozen=True)
class GraphLink:
    source: str
    target: str
    weight: float
    input: str = ""
    """Which input of its target the link reaches (compgraph's exports: :data:`LINK_INPUTS`); "" else."""


@dataclass(frozen=True)
class AttributionGraph:
    """A whole file, checked: every link names nodes of the file."""

    slug: str
    scan: str | None
    """``metadata.scan``: Neuronpedia's model id (``gemma-2-2b``), or circuit-tracer's transcoder set."""
    prompt: str
    prompt_tokens: tuple[str, ...]
    nodes: tuple[GraphNode, ...]
    links: tuple[GraphLink, ...]
    node_threshold: float | None = None
    schema_version: int | None = None
    transcoder_list: tuple[str, ...] = ()
    generator: str | None = None
    transcoder_set: str | None = None
    """The transcoder set its features belong to: ``metadata.info.transcoder_set`` (Neuronpedia), else ``scan``."""
    n_layers: int | None = None
    """The model's layer count as the file implies it (a logit node's layer is n_layers + 1)."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """The file's metadata object as read (kept whole when writing a graph back)."""

    def node(self, node_id: str) -> GraphNode:
        return self._by_id[node_id]

    @property
    def _by_id(self) -> dict[str, GraphNode]:
        cache = self.__dict__.get("_index")
        if cache is None:
            cache = {n.node_id: n for n in self.nodes}
            object.__setattr__(self, "_index", cache)
        return cache



# ---- reading ---------------------------------------------------------------------------------

def _bad(where: str, problem: str) -> ConfigError:
    return ConfigError(f"{where}: {problem}")


def _int(value: Any, where: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _bad(where, f"{what} must be an integer, not {value!r}")
    try:
        return int(value)
    except ValueError:
        raise _bad(where, f"{what} must be an integer, not {value!r}") from None


def _float(value: Any, where: str, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(where, f"{what} must be a finite number, not {value!r}")
    return float(value)


def _id_parts(node_id: str) -> list[str]:
    return node_id.split("_")


def _feature_index(raw: dict, layer: int, pos: int, where: str) -> int:
    parts = _id_parts(raw["node_id"])
    if len(parts) == 3 and parts[0] == str(layer) and parts[2] == str(pos) and parts[1].isdigit():
        return int(parts[1])
    feature = raw.get("feature")
    if isinstance(feature, int) and not isinstance(feature, bool) and feature >= 0:
        x, y = cantor_unpair(feature)
        if x == layer:
            return y
    raise _bad(where, f"cannot tell the feature's index: the id is not {{layer}}_{{index}}_{{pos}} and "
                      f"feature {feature!r} is not a Cantor pair of layer {layer}")


def _node(raw: Any, where: str, logit_layers: set[int]) -> GraphNode:
    if not isinstance(raw, dict):
        raise _bad(where, "a node must be a JSON object")
    node_id = raw.get("node_id")
    if not isinstance(node_id, str) or not node_id:
        raise _bad(where, f"node_id must be a non-empty string, not {node_id!r}")
    where = f"{where} ({node_id})"
    for key in ("feature_type", "layer", "ctx_idx"):
        if key not in raw:
            raise _bad(where, f"the node has no {key!r}")
    ftype = raw["feature_type"]
    if ftype not in KNOWN_TYPES:
        raise _bad(where, f"unknown feature_type {ftype!r}; known: {', '.join(KNOWN_TYPES)}")
    pos = _int(raw["ctx_idx"], where, "ctx_idx")
    common = dict(node_id=node_id, feature_type=ftype, pos=pos, clerp=str(raw.get("clerp") or ""),
                  influence=_float(raw.get("influence"), where, "influence"),
                  activation=_float(raw.get("activation"), where, "activation"))
    if ftype == EMBEDDING_TYPE:
        parts = _id_parts(node_id)
        index = int(parts[1]) if len(parts) == 3 and parts[0] == "E" and parts[1].isdigit() else None
        return GraphNode(kind="embedding", layer=None, index=index, **common)
    layer = _int(raw["layer"], where, "layer")
    if ftype == LOGIT_TYPE:
        token = _CLERP_TOKEN.match(common["clerp"])
        logit_layers.add(layer)
        return GraphNode(kind="logit", layer=None, index=_int(raw.get("feature"), where, "feature (the token id)"),
                         token_prob=_float(raw.get("token_prob"), where, "token_prob"),
                         is_target_logit=bool(raw.get("is_target_logit", False)),
                         token=token.group(1) if token else None, **common)
    if ftype == ERROR_TYPE:
        return GraphNode(kind="error", layer=layer, index=None, **common)
    if ftype in FEATURE_TYPES:
        feature = raw.get("feature")
        return GraphNode(kind="feature", layer=layer, index=_feature_index(raw, layer, pos, where),
                         feature=feature if isinstance(feature, int) and not isinstance(feature, bool) else None,
                         **common)
    kind = COMPONENT_TYPES[ftype]
    return GraphNode(kind=kind, layer=layer, index=_component_index(raw.get("feature"), layer, kind, where),
                     feature=raw.get("feature"), **common)


def _link(raw: Any, where: str, ids: set[str]) -> GraphLink:
    if not isinstance(raw, dict):
        raise _bad(where, "a link must be a JSON object")
    for key in ("source", "target", "weight"):
        if key not in raw:
            raise _bad(where, f"the link has no {key!r}")
    for end in ("source", "target"):
        if raw[end] not in ids:
            raise _bad(where, f"the link's {end} {raw[end]!r} is no node of the file")
    weight = _float(raw["weight"], where, "weight")
    if weight is None:
        raise _bad(where, "weight must be a number, not null")
    input_ = raw.get("input", "") or ""
    if input_ not in ("", *LINK_INPUTS):
        raise _bad(where, f"input must be one of {', '.join(LINK_INPUTS)}, not {input_!r}")
    return GraphLink(raw["source"], raw["target"], weight, input_)


def parse_graph(doc: Any, where: str) -> AttributionGraph:
    """Check a parsed JSON document and read it (``where``: the file, for messages)."""
    if not isinstance(doc, dict):
        raise _bad(where, "an attribution graph must be a JSON object")
    for key in ("metadata", "nodes", "links"):
        if key not in doc:
            raise _bad(where, f"no {key!r}")
    meta = doc["metadata"]
    if not isinstance(meta, dict):
        raise _bad(where, "metadata must be an object")
    for key in ("slug", "prompt"):
        if not isinstance(meta.get(key), str) or (key == "slug" and not meta[key]):
            raise _bad(where, f"metadata.{key} must be a {'non-empty ' if key == 'slug' else ''}string")
    tokens = meta.get("prompt_tokens", [])
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise _bad(where, "metadata.prompt_tokens must be a list of strings")
    if not isinstance(doc["nodes"], list) or not isinstance(doc["links"], list):
        raise _bad(where, "nodes and links must be lists")
    logit_layers: set[int] = set()
    nodes = tuple(_node(raw, f"{where}: node {i}", logit_layers) for i, raw in enumerate(doc["nodes"]))
    ids: set[str] = set()
    for i, node in enumerate(nodes):
        if node.node_id in ids:
            raise _bad(f"{where}: node {i} ({node.node_id})", "a second node with this node_id")
        ids.add(node.node_id)
    links = tuple(_link(raw, f"{where}: link {i}", ids) for i, raw in enumerate(doc["links"]))
    info = meta.get("info") if isinstance(meta.get("info"), dict) else {}
    generator = info.get("generator")
    if isinstance(generator, dict):
        generator = " ".join(str(generator[k]) for k in ("name", "version") if generator.get(k))
    scan = meta.get("scan")
    return AttributionGraph(
        slug=meta["slug"], scan=str(scan) if scan is not None else None, prompt=meta["prompt"],
        prompt_tokens=tuple(tokens), nodes=nodes, links=links,
        node_threshold=_float(meta.get("node_threshold"), f"{where}: metadata", "node_threshold"),
        schema_version=meta.get("schema_version") if isinstance(meta.get("schema_version"), int) else None,
        transcoder_list=tuple(str(t) for t in meta.get("transcoder_list") or ()),
        generator=str(generator) if generator else None,
        transcoder_set=str(info.get("transcoder_set") or scan) if (info.get("transcoder_set") or scan) else None,
        n_layers=max(logit_layers) - 1 if logit_layers else None, metadata=dict(meta))


def read_graph(path: str | Path) -> AttributionGraph:
    """Read and check one attribution-graph file."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            doc = json.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not JSON: {e}") from None
    return parse_graph(doc, str(path))


def graph_files(path: str | Path) -> list[Path]:
    """The ``.json`` files a FILE|DIR argument names (a folder: its ``*.json``, sorted, not
    ``graph-metadata.json``, the viewer's index)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.json") if p.name != INDEX_FILE)
        if not files:
            raise ConfigError(f"{path}: no attribution-graph .json file in the folder")
        return files
    if not path.exists():
        raise ConfigError(f"{path}: no such file or folder")
    return [path]


def iter_graphs(files: list[Path]) -> Iterator[tuple[Path, AttributionGraph]]:
    """Each file read and checked, one at a time (memory: one graph)."""
    for path in files:
        yield path, read_graph(path)


# ---- writing ---------------------------------------------------------------------------------

INDEX_FILE = "graph-metadata.json"
"""The viewer's list of the graphs in a folder (``{"graphs": [metadata, ...]}``)."""
