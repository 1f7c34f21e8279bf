"""The graph vocabulary: labels, relationship types, uid builders, property names.

This is the one module that spells them; everything else imports from here.

Conventions
-----------
* Every node has a unique ``uid``. Lookups go through the node kind's *key label*,
  the label that carries the uniqueness constraint (``Component`` for every
  component kind), so a uid is unique across neurons, heads, experts and features.
* Every edge is identified by (source uid, type, target uid, *key properties*):
  ``DECODES_TO`` edges from one neuron to one token differ by ``via``; merging an
  edge with the same identity updates its other properties.
* Every edge carries ``run``: the uid of the :Run that wrote it (provenance).
* Provenance: a :Run is one stage computed for one model with one configuration
  (``run:{model}:{stage}:{identity hash}``; a stage that runs once per subject, such
  as a task, has one run per scope: ``run:{model}:{stage}/{scope}:{hash}``). Every node a stage writes records that
  run in ``run_{stage}`` (see :func:`run_marker`), so a node touched by several
  stages names each of them.
* ``DECODES_TO.rank``: 0 is the largest logit, 1 the next, ...; the bottom-k
  tokens get negative ranks, -1 the smallest logit, -2 the next. ``sign`` is
  ``+1`` for top-k and ``-1`` for bottom-k.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from compgraph.errors import ConfigError

SCHEMA_VERSION = 1
"""Bump when a change makes stores written by older code unreadable as they are."""

META_UID = "compgraph:schema"


class Label(StrEnum):
    MODEL = "Model"
    COMPONENT = "Component"
    NEURON = "Neuron"
    HEAD = "Head"
    EXPERT = "Expert"
    FEATURE = "Feature"
    SITE = "Site"
    TOKEN = "Token"
    TASK = "Task"
    CIRCUIT = "Circuit"
    DICTIONARY = "Dictionary"
    RUN = "Run"
    ATTRIBUTION_GRAPH = "AttributionGraph"
    META = "CompgraphMeta"


class Rel(StrEnum):
    DECODES_TO = "DECODES_TO"
    ACTIVATES_ON = "ACTIVATES_ON"
    CONNECTS = "CONNECTS"
    AFFECTS = "AFFECTS"
    CAUSES = "CAUSES"
    INCLUDES = "INCLUDES"
    FOR_TASK = "FOR_TASK"
    MATCHES = "MATCHES"
    EVALUATED_ON = "EVALUATED_ON"
    HAS_DICTIONARY = "HAS_DICTIONARY"
    CONTAINS = "CONTAINS"
    ATTRIBUTES = "ATTRIBUTES"
    RECURS = "RECURS"
    COOCCURS = "COOCCURS"


class Prop(StrEnum):
    """Property names: every one compgraph writes or reads is spelled here."""

    UID = "uid"
    NAME = "name"
    MODEL = "model"
    LAYER = "layer"
    INDEX = "index"
    HEAD = "head"
    KV_HEAD = "kv_head"
    EXPERT = "expert"
    DICTIONARY = "dictionary"
    SITE = "site"
    RUN = "run"
    # run nodes
    STAGE = "stage"
    SCOPE = "scope"
    STAGE_VERSION = "stage_version"
    STATUS = "status"
    DONE = "done"
    CONFIG = "config"
    INPUTS = "inputs"
    STARTED_AT = "started_at"
    FINISHED_AT = "finished_at"
    SECONDS = "seconds"
    COMPUTE_SECONDS = "compute_seconds"
    WRITE_SECONDS = "write_seconds"
    PROFILE = "profile"
    PEAK_MB = "peak_mb"
    ROWS_WRITTEN = "rows_written"
    CODE_VERSION = "code_version"
    SUPERSEDED_BY = "superseded_by"
    WROTE = "wrote"
    # model nodes
    SOURCE = "source"
    ARCHITECTURE = "architecture"
    MODEL_TYPE = "model_type"
    N_LAYERS = "n_layers"
    D_MODEL = "d_model"
    N_HEADS = "n_heads"
    N_KV_HEADS = "n_kv_heads"
    D_HEAD = "d_head"
    D_MLP = "d_mlp"
    N_EXPERTS = "n_experts"
    VOCAB_SIZE = "vocab_size"
    WEIGHTS_DIGEST = "weights_digest"
    TOKENIZER = "tokenizer"
    N_TOKENS = "n_tokens"
    # token nodes
    ID = "id"
    TEXT = "text"
    PIECE = "piece"
    # neuron and feature statistics
    ACT_MEAN = "act_mean"
    ACT_MAX = "act_max"
    ACT_FREQ = "act_freq"
    # head scores
    SINK = "sink_score"
    PREV_TOKEN = "prev_token_score"
    INDUCTION = "induction_score"
    DUPLICATE = "duplicate_token_score"
    ENTROPY = "entropy"
    COPY = "copy_score"
    RETRIEVAL_SCORE = "retrieval_score"
    RETRIEVAL = "retrieval"
    # expert statistics
    ROUTING_LOAD = "routing_load"
    # dictionary nodes
    KIND = "kind"
    WIDTH = "width"
    ACTIVATION = "activation"
    K = "k"
    FORMAT = "format"
    D_IN = "d_in"
    D_OUT = "d_out"
    OUTPUT_SITE = "output_site"
    OUTPUT_LAYER = "output_layer"
    HOOK = "hook"
    # task nodes
    DESCRIPTION = "description"
    N_PROMPTS = "n_prompts"
    # circuit nodes
    TASK = "task"
    METHOD = "method"
    LEVEL = "level"
    ABLATION = "ablation"
    SIZE = "size"
    N = "n"
    THRESHOLD = "threshold"
    METRIC_FULL = "metric_full"
    METRIC_EMPTY = "metric_empty"
    METRIC_CIRCUIT = "metric_circuit"
    FAITHFULNESS = "faithfulness"
    CPR = "cpr"
    CMD = "cmd"
    CURVE_FRACTIONS = "curve_fractions"
    CURVE_SIZES = "curve_sizes"
    CURVE_FAITHFULNESS = "curve_faithfulness"
    # edge properties
    LOGIT = "logit"
    RANK = "rank"
    SIGN = "sign"
    VIA = "via"
    MEAN_ACT = "mean_act"
    MAX_ACT = "max_act"
    COUNT = "count"
    WEIGHT = "weight"
    BASELINE = "baseline"
    EFFECT = "effect"
    EFFECT_NORM = "effect_norm"
    DIRECTION = "direction"
    METRIC = "metric"
    N_EXAMPLES = "n_examples"
    INPUT = "input"
    IN_CIRCUIT = "in_circuit"
    SCORE = "score"
    EXCESS = "excess"
    MUTUAL = "mutual"
    SAME_TOP = "same_top"
    ACCURACY = "accuracy"
    METRIC_CLEAN = "metric_clean"
    METRIC_CORRUPT = "metric_corrupt"
    # attribution graphs (imported: compgraph.attribution)
    SLUG = "slug"
    PROMPT = "prompt"
    PROMPT_TOKENS = "prompt_tokens"
    TRANSCODER_SET = "transcoder_set"
    TRANSCODER_LIST = "transcoder_list"
    GENERATOR = "generator"
    NODE_THRESHOLD = "node_threshold"
    SCHEMA_VERSION = "schema_version"
    DIGEST = "digest"
    N_NODES = "n_nodes"
    N_LINKS = "n_links"
    FEATURE_ID = "feature_id"
    GRAPH = "graph"
    POS = "pos"
    INFLUENCE = "influence"
    TOKEN_PROB = "token_prob"
    TARGET = "target"
    SOURCE_POS = "source_pos"
    TARGET_POS = "target_pos"
    GRAPHS = "graphs"
    LINKS = "links"
    MEAN_WEIGHT = "mean_weight"
    MEAN_INFLUENCE = "mean_influence"
    MEAN_ACTIVATION = "mean_activation"
    COOCCUR_MIN = "cooccur_min"


COMMUNITY_PREFIX = "community_"
"""``analyse modularity --write-back`` stores a component's community as ``community_<graph>``."""


def community_prop(graph: str) -> str:
    """The property holding a component's community in ``graph`` (``connects``, ``causes``)."""
    return f"{COMMUNITY_PREFIX}{graph}"


class ComponentKind(StrEnum):
    """What a causal-effect measurement is about (``Component.kind`` in :mod:`compgraph.effects`)."""

    HEAD = "head"
    """A query head (its output before W_O)."""
    NEURON = "neuron"
    """An MLP hidden unit of a dense layer."""
    MLP = "mlp"
    """A layer's whole MLP block (a ``:Site``)."""
    ATTN = "attn"
    """A layer's whole attention block (a ``:Site``)."""
    EXPERT = "expert"
    """A MoE expert's contribution to its block's output."""
    FEATURE = "feature"
    """A dictionary (SAE, transcoder) feature."""


class ConnectKind(StrEnum):
    """``CONNECTS.kind`` values written by the weights-based connections."""

    VIRTUAL = "virtual"
    """neuron -> neuron: write of i . folded up/in read of j (the OpenAI neuron-viewer weight)."""
    VIRTUAL_GATE = "virtual_gate"
    """neuron -> neuron: write of i . folded gate read of j (gated MLPs only)."""
    Q_COMP = "q_comp"
    """head -> head: the writer's OV output as the reader's query input."""
    K_COMP = "k_comp"
    """head -> head: the writer's OV output as the reader's key input."""
    V_COMP = "v_comp"
    """head -> head: the writer's OV output as the reader's value input."""
    OV_TO_MLP = "ov_to_mlp"
    """head -> neuron: the head's OV output read by the neuron's up/in projection."""
    OV_TO_MLP_GATE = "ov_to_mlp_gate"
    """head -> neuron: ... by the neuron's gate projection (gated MLPs only)."""
    MLP_TO_Q = "mlp_to_q"
    """neuron -> head: the neuron's write read by the head's query side (W_QK)."""
    MLP_TO_K = "mlp_to_k"
    """neuron -> head: ... by the head's key side (W_QK^T)."""
    MLP_TO_V = "mlp_to_v"
    """neuron -> head: ... by the head's value side (W_OV)."""
    TRANSCODER = "transcoder"
    """feature -> feature: an earlier transcoder feature's decoder row . a later one's (norm-folded)
    encoder column (Dunefsky et al. 2024; :mod:`compgraph.dictionaries.connections`)."""


class MatchMethod(StrEnum):
    """``MATCHES.method`` values (:mod:`compgraph.stages.match`)."""

    ACTIVATION = "activation"
    """Pearson correlation of the two units' activations over the same aligned text."""
    DECODING = "decoding"
    """Overlap of the two units' top-k decoded tokens (``same_top``: the same top token)."""


class SiteKind(StrEnum):
    """``:Site`` components: whole blocks and the ends of the causal edge graph (``site`` property)."""

    EMBED = "embed"
    """The token embeddings (the source every causal edge path starts from)."""
    ATTN = "attn"
    """A layer's whole attention block."""
    MLP = "mlp"
    """A layer's whole MLP block."""
    KV_HEAD = "kv_head"
    """A key/value head shared by several query heads (grouped-query attention): the
    destination of k and v edges. Without grouping, k and v edges end at the :Head."""
    LOGITS = "logits"
    """The unembedding's input (the final norm's input): where every causal path ends."""
    MLP_ERROR = "mlp_error"
    """What a layer's transcoder leaves unexplained of its MLP's output (an attribution graph's
    error nodes: :mod:`compgraph.attribution`)."""


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"
    SUPERSEDED = "superseded"
    """A later run of the same stage for the same model replaced what this one wrote."""


IDENTITY_PROPS: frozenset[str] = frozenset({
    Prop.UID, Prop.MODEL, Prop.LAYER, Prop.INDEX, Prop.HEAD, Prop.KV_HEAD, Prop.EXPERT, Prop.DICTIONARY, Prop.ID,
    Prop.TEXT, Prop.PIECE, Prop.TOKENIZER, Prop.NAME, Prop.SITE,
})
"""Node properties that identify a node rather than measure it: shared by every stage
that writes the node, never removed when a stage's earlier run is replaced."""

HEAD_SCORES: tuple[Prop, ...] = (
    Prop.SINK,
    Prop.PREV_TOKEN,
    Prop.INDUCTION,
    Prop.DUPLICATE,
    Prop.ENTROPY,
    Prop.COPY,
    Prop.RETRIEVAL_SCORE,
)

RETRIEVAL_THRESHOLD = 0.1
"""A head with ``retrieval_score`` above this is a retrieval head (Wu et al. 2024)."""


@dataclass(frozen=True)
class NodeKind:
    """A kind of node: the labels it carries and the one its uid is unique under."""

    labels: tuple[str, ...]
    key_label: str

    def __post_init__(self) -> None:
        if self.key_label not in self.labels:
            raise ConfigError(f"key label {self.key_label!r} not among {self.labels}")

    @property
    def name(self) -> str:
        return self.labels[-1]


@dataclass(frozen=True)
class RelKind:
    """A relationship type with its endpoint kinds and the properties that identify it."""

    type: str
    source: NodeKind
    target: NodeKind
    key: tuple[str, ...] = ()


def _node(*labels: str, key: str | None = None) -> NodeKind:
    return NodeKind(labels=tuple(labels), key_label=key or labels[0])


MODEL = _node(Label.MODEL)
NEURON = _node(Label.COMPONENT, Label.NEURON)
HEAD = _node(Label.COMPONENT, Label.HEAD)
EXPERT = _node(Label.COMPONENT, Label.EXPERT)
FEATURE = _node(Label.COMPONENT, Label.FEATURE)
SITE = _node(Label.COMPONENT, Label.SITE)
COMPONENT = _node(Label.COMPONENT)
TOKEN = _node(Label.TOKEN)
TASK = _node(Label.TASK)
CIRCUIT = _node(Label.CIRCUIT)
DICTIONARY = _node(Label.DICTIONARY)
RUN = _node(Label.RUN)
ATTRIBUTION_GRAPH = _node(Label.ATTRIBUTION_GRAPH)
META = _node(Label.META)

NODE_KINDS: tuple[NodeKind, ...] = (
    MODEL, NEURON, HEAD, EXPERT, FEATURE, SITE, TOKEN, TASK, CIRCUIT, DICTIONARY, RUN, ATTRIBUTION_GRAPH, META,
)

DECODES_TO = RelKind(Rel.DECODES_TO, COMPONENT, TOKEN, key=(Prop.VIA,))
ACTIVATES_ON = RelKind(Rel.ACTIVATES_ON, COMPONENT, TOKEN)
CONNECTS = RelKind(Rel.CONNECTS, COMPONENT, COMPONENT, key=(Prop.KIND,))
AFFECTS = RelKind(Rel.AFFECTS, COMPONENT, TASK, key=(Prop.METHOD, Prop.VIA, Prop.ABLATION, Prop.DIRECTION,
                                                   Prop.METRIC))
"""A component's effect on a task: ``method`` measured it, within the effects run of ``via``
(its ``--method``: a verified run's activation patching and an activation run's are two edges)."""
CAUSES = RelKind(Rel.CAUSES, COMPONENT, COMPONENT, key=(Prop.METHOD, Prop.TASK, Prop.INPUT))
INCLUDES = RelKind(Rel.INCLUDES, CIRCUIT, COMPONENT)
FOR_TASK = RelKind(Rel.FOR_TASK, CIRCUIT, TASK)
MATCHES = RelKind(Rel.MATCHES, COMPONENT, COMPONENT, key=(Prop.METHOD,))
"""A component's counterpart in another model (``method``, ``score``, ``excess``, ``rank`` 0 =
best, ``mutual``; ``same_top`` for the decoding method): :mod:`compgraph.stages.match`."""
EVALUATED_ON = RelKind(Rel.EVALUATED_ON, MODEL, TASK, key=(Prop.METRIC,))
"""A model's clean accuracy and mean clean / corrupt metric on a task."""
HAS_DICTIONARY = RelKind(Rel.HAS_DICTIONARY, MODEL, DICTIONARY)
"""A sparse dictionary (SAE, transcoder) read from the model's activations."""

CONTAINS = RelKind(Rel.CONTAINS, ATTRIBUTION_GRAPH, COMPONENT, key=(Prop.POS,))
"""An imported attribution graph's node: the component (a feature, an error or embedding
``:Site``) at prompt position ``pos``, with its ``influence`` and ``activation``."""
CONTAINS_TOKEN = RelKind(Rel.CONTAINS, ATTRIBUTION_GRAPH, TOKEN, key=(Prop.POS,))
"""An attribution graph's logit node: the output token at ``pos`` (``token_prob``, ``target``)."""
ATTRIBUTES = RelKind(Rel.ATTRIBUTES, COMPONENT, COMPONENT,
                     key=(Prop.GRAPH, Prop.SOURCE_POS, Prop.TARGET_POS, Prop.INPUT))
"""A link of an imported attribution graph (``graph`` its uid): ``weight``, from the source
at ``source_pos`` to the target at ``target_pos`` (``input``: a head's q, k or v; "" else)."""
ATTRIBUTES_TOKEN = RelKind(Rel.ATTRIBUTES, COMPONENT, TOKEN,
                           key=(Prop.GRAPH, Prop.SOURCE_POS, Prop.TARGET_POS, Prop.INPUT))
"""A link into a logit node (the output token)."""
RECURS = RelKind(Rel.RECURS, FEATURE, FEATURE)
"""Feature -> feature links that recur across a model's attribution graphs (``model``): in
``graphs`` >= 2 graphs, ``links`` links, ``mean_weight``; rewritten by every import
(:mod:`compgraph.data.attribution_summary`). A feature's own ``graphs``, ``mean_influence``
and ``mean_activation`` are written on it by the same run."""
COOCCURS = RelKind(Rel.COOCCURS, FEATURE, FEATURE)
"""Two features (src < dst by uid) found together in ``graphs`` of a model's attribution
graphs, at least the ``cooccur_min`` its summary run records; rewritten by every import."""

CONTAINS_FEATURE = RelKind(Rel.CONTAINS, ATTRIBUTION_GRAPH, FEATURE, key=(Prop.POS,))
"""A read of :data:`CONTAINS` limited to the features (no error or embedding sites)."""
FEATURE_LINKS = RelKind(Rel.ATTRIBUTES, FEATURE, FEATURE, key=ATTRIBUTES.key)
"""A read of :data:`ATTRIBUTES` limited to feature -> feature links."""

REL_KINDS: tuple[RelKind, ...] = (
    DECODES_TO, ACTIVATES_ON, CONNECTS, AFFECTS, CAUSES, INCLUDES, FOR_TASK, MATCHES, EVALUATED_ON, HAS_DICTIONARY,
    CONTAINS, ATTRIBUTES, RECURS, COOCCURS,
)

NODE_KIND_BY_NAME: dict[str, NodeKind] = {k.name: k for k in NODE_KINDS}
REL_KIND_BY_TYPE: dict[str, RelKind] = {r.type: r for r in REL_KINDS}
TOKEN_TARGETED: tuple[RelKind, ...] = (CONTAINS_TOKEN, ATTRIBUTES_TOKEN)
"""Relationship kinds of a type in :data:`REL_KINDS` that end at a :Token instead."""


def rel_kind(type_: str, target_labels) -> RelKind | None:
    """The relationship kind of a stored edge of ``type_`` whose target carries ``target_labels``."""
    for kind in TOKEN_TARGETED:
        if kind.type == type_ and kind.target.key_label in target_labels:
            return kind
    return REL_KIND_BY_TYPE.get(type_)

UNIQUE_KEY_LABELS: tuple[str, ...] = tuple(dict.fromkeys(k.key_label for k in NODE_KINDS))
"""Labels that get a uniqueness constraint on ``uid``."""

INDEXED: tuple[tuple[str, str], ...] = ((Label.COMPONENT, Prop.MODEL), (Label.COMPONENT, Prop.LAYER))
"""(label, property) pairs that get a plain index."""
EDGE_INDEXED: tuple[tuple[str, str], ...] = ((Rel.ATTRIBUTES, Prop.GRAPH),)
"""(relationship type, property) pairs that get an index: one attribution graph's links are
found through it, not by walking the embeddings and features every graph shares."""


# ---- uid builders -------------------------------------------------------------

def model_uid(name: str) -> str:
    return name


def neuron_uid(model: str, layer: int, index: int) -> str:
    return f"{model}/L{layer}/N{index}"


def head_uid(model: str, layer: int, head: int) -> str:
    return f"{model}/L{layer}/H{head}"


def kv_head_uid(model: str, layer: int, kv_head: int) -> str:
    """A key/value head under grouped-query attention (a ``:Site`` of kind ``kv_head``)."""
    return f"{model}/L{layer}/KV{kv_head}"


def expert_uid(model: str, layer: int, expert: int) -> str:
    return f"{model}/L{layer}/E{expert}"


def dictionary_uid(model: str, name: str, site: str, layer: int | None) -> str:
    """A dictionary of ``model`` named ``name`` (its folder), reading ``site`` of ``layer``."""
    return f"{model}/D:{name}/{site}" if layer is None else f"{model}/D:{name}/L{layer}/{site}"


def feature_uid(dictionary: str, index: int) -> str:
    return f"{dictionary}/F{index}"


def site_uid(model: str, site: str, layer: int | None = None) -> str:
    return f"{model}/{site}" if layer is None else f"{model}/L{layer}/{site}"


def token_uid(tokenizer: str, token_id: int) -> str:
    return f"{tokenizer}:{token_id}"


def task_uid(name: str) -> str:
    return f"task:{name}"


def circuit_uid(model: str, task: str, level: str, method: str) -> str:
    return f"circuit:{model}:{task}:{level}:{method}"


def graph_uid(model: str, slug: str) -> str:
    """An imported attribution graph (its ``metadata.slug``)."""
    return f"graph:{model}:{slug}"


def run_uid(model: str, stage: str, identity_hash: str) -> str:
    return f"run:{model}:{stage}:{identity_hash[:12]}"


def run_marker(stage: str) -> str:
    """The node property naming the run of ``stage`` that last set the node's properties."""
    return f"run_{stage}"


def tokenizer_uid(name: str, vocab: dict[str, int]) -> str:
    """Identify a tokenizer by its vocabulary, so models sharing one share :Token nodes."""
    digest = hashlib.sha256()
    for piece, idx in sorted(vocab.items(), key=lambda kv: kv[1]):
        digest.update(f"{idx}\t{piece}\n".encode())
    return f"{name}-{digest.hexdigest()[:10]}"
