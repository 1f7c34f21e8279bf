"""The ``effects`` stage: causal effects of components on tasks, runs per task and method.

For each task (``--tasks``; a shipped name or a user's ``.jsonl``), runs scoped so that
neither tasks nor methods replace each other's (``--method activation`` after the default
keeps the default's effects): ``{task}/{method}`` (shard ``nodes``: heads and blocks by
``--method``) and ``{task}/gradients/{attribution|eap-ig}`` (shards ``neurons`` and
``edges``, which every method but eap-ig computes by attribution: switching between
verified, activation and attribution leaves that run complete). Every ``AFFECTS`` carries
``via``, the ``--method`` of the run that wrote it (part of its key, so two runs never
write the same edge).

- shard ``nodes``: the task's clean accuracy and mean clean / corrupt metric
  (``EVALUATED_ON`` from the model to the ``:Task``), the effect of every head, MLP
  block and attention block by ``--method`` (``AFFECTS``): ``verified`` by default
  (attribution patching of every one, then activation patching of the top ``circuit_n``
  and of every other whose estimate reaches ``--verify-margin`` times the smallest of
  their measured effects: :mod:`compgraph.effects.verified`; both measurements are
  stored, each ``AFFECTS`` saying its method), or ``activation`` (activation patching of
  every one — noising, ``--ablation``), ``attribution``, ``eap-ig``; and the node-level
  circuit: the top ``circuit_n`` heads and MLP blocks by |effect| (measured where
  measured; an attention block is the sum of its heads, so blocks are not members), its
  faithfulness measured by running the model with everything outside patched
  (``:Circuit``, ``INCLUDES``, ``FOR_TASK``);
- shard ``neurons``: attribution patching of every neuron (``AFFECTS``, method
  ``attribution``), when ``neuron`` is among ``effect_components``; with the task summary
  (``EVALUATED_ON``) as in ``nodes``;
- run ``{task}/features/{dictionary}``, one per ``--dictionary`` when ``feature`` is
  among ``effect_components``: shard ``features/0``, every feature's effect
  (:mod:`compgraph.dictionaries.effects`); a run of its own, so features added later
  leave the task's other effects in place;
- shard ``edges`` (``effect_edges``): edge attribution patching (EAP-IG with ``--method
  eap-ig``) of every edge of the residual graph embeddings → heads' q/k/v and MLPs →
  logits (``CAUSES``), and the edge-level circuit: the top ``circuit_edges`` edges by
  |effect|, pruned to those on an embeddings → logits path, faithfulness measured by edge
  patching (:mod:`compgraph.effects.edges`).

Each circuit also carries its faithfulness curve over sizes from 0.1 % to 100 % of the
scored components or edges, and its areas CPR and CMD (:mod:`compgraph.effects.circuits`).
``--threshold X`` replaces the top-n of both levels by |effect| >= X.

Definitions: :mod:`compgraph.effects.measure`, :mod:`compgraph.effects.circuits`.
Whole blocks are ``:Site`` components (``{model}/L{layer}/mlp``, ``.../attn``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields, replace
from pathlib import Path

import polars as pl

from compgraph import schema
from compgraph.data.digests import files_digest
from compgraph.data.tasks import Task, TaskBatch, compute_metric, encode_task, fitting, load_task
from compgraph.dictionaries.catalog import (
    check_dictionary, dictionary_digest, dictionary_name, dictionary_uids, load_dictionaries, to_model,
)
from compgraph.dictionaries.effects import ABLATIONS as FEATURE_ABLATIONS
from compgraph.dictionaries.effects import feature_attribution
from compgraph.effects.activation import activation_patching
from compgraph.effects.attribution import attribution_patching
from compgraph.effects.circuits import edge_circuit, faithfulness_curve, node_circuit
from compgraph.effects.edges import edge_attribution, unsupported
from compgraph.effects.measure import ABLATIONS, ACTIVATION, ATTRIBUTION, EAP_IG, METHODS, VERIFIED
from compgraph.effects.runs import device_of, task_summary
from compgraph.effects.verified import DEFAULT_MARGIN, best, verified_patching
from compgraph.options import option
from compgraph.engine.registry import register
from compgraph.engine.stage import Frames, Stage
from compgraph.errors import ConfigError
from compgraph.models.adapters.registry import adapter_for
from compgraph.models.info import ModelInfo
from compgraph.schema import ComponentKind as K
from compgraph.stages import rows
from compgraph.stages.shared import DictionariesConfig

PATCHED_KINDS = (K.HEAD, K.MLP, K.ATTN)
"""Kinds measured by ``--method`` (verified by default); neurons and features are always
measured by a gradient method."""
CIRCUIT_KINDS = (K.HEAD, K.MLP)
"""The node circuit's universe: heads and MLP blocks (an attention block is its heads)."""
_OWN_KINDS = (K.HEAD, K.NEURON, K.MLP, K.ATTN)


@dataclass(frozen=True, kw_only=True)
class EffectsConfig(DictionariesConfig):
    tasks: tuple[str, ...] = option((), "Comma list of tasks (shipped names or .jsonl paths): adds the effects stage.",
                                    metavar="TASKS", show_default=False)
    """Task names or .jsonl paths; one run each."""
    effect_method: str = option(VERIFIED, "Effects of heads and blocks: verified (attribution, then activation "
                                "patching of the candidates), activation, attribution or eap-ig.",
                                flags=("--method",), choices=METHODS)
    """How heads and blocks are measured: verified (attribution for all, activation patching
    of the candidates), activation (patching of all), attribution, eap-ig. Neurons are
    always measured by a gradient method (eap-ig when asked, else attribution)."""
    verify_margin: float = option(DEFAULT_MARGIN, "verified: also measure every component whose attribution "
                                  "reaches this fraction of the smallest measured top-n effect.",
                                  flags=("--verify-margin",), minimum=0)
    """ρ of :mod:`compgraph.effects.verified` (in (0, 1]; verified only)."""
    ablation: str = option("corrupt", "corrupt, zero, mean or resample.", choices=ABLATIONS)
    """What a patched component takes: its corrupt-run value, zero, its mean, another example's."""
    effect_components: tuple[str, ...] = option(
        (K.HEAD, K.MLP, K.ATTN, K.NEURON), "Component kinds whose effects are measured (neurons by attribution "
        "patching; feature needs --dictionary).", flags=("--effect-components", "--components"),
        choices=(*_OWN_KINDS, K.FEATURE, "features"))
    """Kinds measured: head, mlp, attn by ``effect_method``; neuron and feature by attribution patching."""
    circuit_n: int = option(20, "Components in each node circuit (top by |effect|).",
                            flags=("--top-n", "--circuit-n"), minimum=1)
    """Components in the node circuit (top by |effect| among the activation-patched ones)."""
    unfit_examples: str | None = option(None, "Examples that do not fit the tokenizer (an answer of several "
                                        "tokens, clean and corrupt of two lengths): refuse the task [default], "
                                        "or drop them.", choices=("refuse", "drop"), show_default=False)
    """``drop``: the task's examples that fit this model's tokenizer are its examples
    (:func:`compgraph.data.tasks.fitting`), before ``task_examples`` takes the first N.
    None (or ``refuse``, kept as None so that runs made before the option keep their
    identity): a task with an unfit example is refused."""
    task_examples: int = option(64, "Examples per task: the first N of the file (0: all).", flags=("--examples",),
                                minimum=0)
    """The first N examples of each task (0: all). Activation patching costs components x
    examples forward passes."""
    effect_edges: bool = option(True, "Score causal edges (CAUSES) and build the edge circuit.",
                                flags=("--edges/--no-edges",))
    """Also score the edges (CAUSES) and build the edge-level circuit."""
    circuit_edges: int = option(200, "Edges in each edge circuit (top by |effect|, before pruning).",
                                flags=("--top-n-edges", "--circuit-edges"), minimum=1)
    """Edges in the edge circuit before pruning (top by |effect|)."""
    circuit_threshold: float | None = option(None, "Circuits keep every member with |effect| >= X instead of a top-n.",
                                             flags=("--threshold",), minimum=0, show_default=False)
    """If set, circuits keep every member with |effect| >= this instead of a top-n."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.tasks:
            raise ConfigError("the effects stage needs --tasks")
        if not 0 < self.verify_margin <= 1:
            raise ConfigError(f"--verify-margin must lie in (0, 1], not {self.verify_margin}")
        if self.unfit_examples == "refuse":  # the default, spelled out: the same run
            object.__setattr__(self, "unfit_examples", None)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The component kinds asked for (``features`` read as ``feature``)."""
        return tuple(K.FEATURE if k == "features" else k for k in self.effect_components)


_DEFAULTS = {f.name: f.default for f in fields(EffectsConfig)}
"""What the node and the gradient runs reset the fields only the other one reads to."""


class EffectsStage(Stage):
    name = "effects"
    version = 2
    Config = EffectsConfig
    trigger = "tasks"
    inputs = ("weights",)
    description = "Causal effects on tasks: node effects, edge attribution, node and edge circuits."

    def instances(self, config: EffectsConfig) -> list[tuple[str, EffectsConfig]]:
        """Per task, one run for the model's own components (scope ``{task}/{method}``) and
        one per dictionary for its features (scope ``{task}/features/{dictionary}``), so that
        another method, or a dictionary's features added later, neither recomputes nor
        replaces the task's other effects."""
        kinds = config.kinds
        if K.FEATURE in kinds and not config.dictionaries:
            raise ConfigError("--components feature needs --dictionary PATH")
        patched = tuple(k for k in kinds if k in PATCHED_KINDS)
        gradient = self._gradient_method(config)
        out = []
        for spec in config.tasks:
            task = load_task(spec)  # the whole file is checked here, before anything runs
            if patched:
                out.append((f"{task.name}/{config.effect_method}",
                            replace(config, tasks=(spec,), effect_components=patched, dictionaries=(),
                                    effect_edges=False, circuit_edges=_DEFAULTS["circuit_edges"])))
            if K.NEURON in kinds or (config.effect_edges and patched):
                # the same run for every method computing it by ``gradient``: its identity
                # ignores what only the node run reads
                out.append((f"{task.name}/gradients/{gradient}",
                            replace(config, tasks=(spec,), effect_method=gradient, dictionaries=(),
                                    effect_components=(K.NEURON,) if K.NEURON in kinds else (),
                                    circuit_n=_DEFAULTS["circuit_n"], verify_margin=_DEFAULTS["verify_margin"])))
            if K.FEATURE in kinds:
                out += [(f"{task.name}/features/{dictionary_name(d)}",
                         replace(config, tasks=(spec,), effect_components=(K.FEATURE,), dictionaries=(d,),
                                 effect_edges=False)) for d in config.dictionaries]
        return out

    def replaces(self, scope: str) -> tuple[str, ...]:
        """A node run ``{task}/{method}`` replaces version 1's run of the task (scope
        ``{task}``, every method in one run), so a store ingested before keeps no stale
        effects or circuits (its neurons and edges are written again by the gradient run)."""
        task, _, method = scope.rpartition("/")
        return (task,) if method in METHODS and "/" not in task else ()

    def digests(self, config: EffectsConfig) -> dict[str, str]:
        path = Path(load_task(config.tasks[0]).path)
        meta = path.with_suffix(".json")
        files = [(path.name, path)] + ([(meta.name, meta)] if meta.exists() else [])
        dictionaries = {f"dictionary:{dictionary_name(p)}": dictionary_digest(p) for p in config.dictionaries
                        if K.FEATURE in config.kinds}
        return {"task": files_digest(files)} | dictionaries

    def skip_reason(self, info: ModelInfo) -> str | None:
        return None if info.causal else "effects need a causal LM"

    def validate(self, info: ModelInfo, config: EffectsConfig) -> None:
        if K.FEATURE in config.kinds:
            if config.ablation not in FEATURE_ABLATIONS:
                raise ConfigError("feature effects take --ablation corrupt, zero or mean")
            for spec in config.dictionaries:
                for d in load_dictionaries(spec):
                    check_dictionary(info, d)

    def check_inputs(self, ctx, config: EffectsConfig) -> None:
        encode_task(self._task(ctx, config), ctx.model().tokenizer)

    @staticmethod
    def _task(ctx, config: EffectsConfig) -> Task:
        """The task's examples this run reads: those that fit the tokenizer (``drop``), the first N."""
        task = load_task(config.tasks[0])
        if config.unfit_examples == "drop":
            task = fitting(task, ctx.model().tokenizer)
        return task.head(config.task_examples)

    def shards(self, info: ModelInfo, config: EffectsConfig, execution) -> list[str]:
        if config.kinds == (K.FEATURE,):  # a dictionary's own run (see instances)
            return [f"features/{i}" for i in range(len(config.dictionaries))]
        if any(k in PATCHED_KINDS for k in config.kinds):  # a node run
            return ["nodes"]
        shards = []
        if K.NEURON in config.effect_components and not info.is_moe:
            shards.append("neurons")
        if config.effect_edges:
            reason = unsupported(adapter_for(info.model_type))
            if reason:
                warnings.warn(f"{info.name}: no CAUSES edges: {reason}", stacklevel=1)
            else:
                shards.append("edges")
        return shards

    def run(self, ctx, config: EffectsConfig, shard: str) -> Frames:
        loaded = ctx.model()
        task = self._task(ctx, config)
        batch = encode_task(task, loaded.tokenizer)
        if shard == "nodes":
            return self._nodes(ctx, loaded, task, batch, config)
        if shard == "edges":
            return self._edges(ctx, loaded, task, batch, config)
        if shard.startswith("features/"):
            return self._features(ctx, loaded, task, batch, config.dictionaries[int(shard.split("/")[1])],
                                  config.ablation)
        return self._neurons(ctx, loaded, task, batch, config)

    @staticmethod
    def _metric(task: Task):
        return lambda logits, answer, wrong: compute_metric(task.metric, logits, answer, wrong)

    @staticmethod
    def _size(config: EffectsConfig, top_n: int, total: int) -> dict:
        if config.circuit_threshold is not None:
            return {"threshold": config.circuit_threshold}
        return {"n": min(top_n, total)}

    @staticmethod
    def _gradient_method(config: EffectsConfig) -> str:
        """The method of neuron, feature and edge effects: eap-ig when asked, else attribution."""
        return EAP_IG if config.effect_method == EAP_IG else ATTRIBUTION

    def _nodes(self, ctx, loaded, task: Task, batch: TaskBatch, config: EffectsConfig) -> Frames:
        model, adapter, name = loaded.model, loaded.adapter, ctx.info.name
        metric = self._metric(task)
        kinds = tuple(k for k in config.effect_components if k in PATCHED_KINDS)
        summary = task_summary(model, batch, metric)
        if summary["accuracy"] < 0.6:
            warnings.warn(f"{name} fails task {task.name}: clean accuracy {summary['accuracy']:.2f}", stacklevel=1)
        effects, scores = self._node_effects(model, adapter, batch, metric, kinds, config)
        universe = scores.filter(pl.col("component").is_in([str(k) for k in CIRCUIT_KINDS]))
        cache: dict = {}  # circuits the circuit and its curve share are run once
        circuit = node_circuit(model, adapter, batch, metric, universe, cache=cache,
                               **self._size(config, config.circuit_n, universe.height), ablation=config.ablation)
        curve = faithfulness_curve(model, adapter, batch, metric, universe, level="node", ablation=config.ablation,
                                   cache=cache)
        node, includes, for_task = rows.circuit_rows(name, task.name, config.effect_method, circuit, curve,
                                                     rows.node_circuit_members(name, circuit.members))
        return Frames.of(
            nodes=[(schema.MODEL, rows.model_identity(name)), (schema.TASK, rows.task_rows(task, len(load_task(task.path)))),
                   *rows.component_nodes(name, scores), (schema.CIRCUIT, node)],
            edges=[(schema.EVALUATED_ON, rows.evaluated_rows(name, task.name, task.metric, summary, len(task))),
                   (schema.AFFECTS, rows.affects_rows(name, task.name, task.metric, len(task), effects,
                                                      via=config.effect_method)),
                   (schema.INCLUDES, includes), (schema.FOR_TASK, for_task)])

    @staticmethod
    def _node_effects(model, adapter, batch: TaskBatch, metric, kinds,
                      config: EffectsConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Heads and blocks by ``--method``: (every measurement, a node-effect frame with one
        row per measurement; the scores circuits are built from, one row per component).
        Verified: the estimates and the measured effects; scores the best estimates."""
        if config.effect_method == VERIFIED:
            got = verified_patching(model, adapter, batch, metric, kinds=kinds, n=config.circuit_n,
                                    margin=config.verify_margin, circuit_kinds=CIRCUIT_KINDS,
                                    ablation=config.ablation)
            return pl.concat([got.estimated, got.measured]), best(got)
        if config.effect_method == ACTIVATION:
            effects = activation_patching(model, adapter, batch, metric, kinds=kinds, ablation=config.ablation)
        else:
            effects = attribution_patching(model, adapter, batch, metric, kinds=kinds, method=config.effect_method,
                                           ablation=config.ablation)
        return effects, effects

    def _edges(self, ctx, loaded, task: Task, batch: TaskBatch, config: EffectsConfig) -> Frames:
        model, adapter, name = loaded.model, loaded.adapter, ctx.info.name
        metric, method = self._metric(task), self._gradient_method(config)
        scores = edge_attribution(model, adapter, batch, metric, method=method)
        cache: dict = {}
        circuit = edge_circuit(model, adapter, batch, metric, scores, ablation=config.ablation, cache=cache,
                               **self._size(config, config.circuit_edges, scores.height))
        curve = faithfulness_curve(model, adapter, batch, metric, scores, level="edge", ablation=config.ablation,
                                   cache=cache)
        group = ctx.info.group
        members = rows.edge_circuit_members(name, circuit.members, group=group)
        node, includes, for_task = rows.circuit_rows(name, task.name, method, circuit, curve, members)
        causes = rows.causes_rows(name, task.name, scores, circuit.members, group=group)
        return Frames.of(
            nodes=[(schema.TASK, rows.task_identity(task.name)), *rows.edge_nodes(name, scores, group=group),
                   (schema.CIRCUIT, node)],
            edges=[(schema.CAUSES, causes), (schema.INCLUDES, includes), (schema.FOR_TASK, for_task)])

    def _neurons(self, ctx, loaded, task: Task, batch: TaskBatch, config: EffectsConfig) -> Frames:
        name = ctx.info.name
        effects = attribution_patching(loaded.model, loaded.adapter, batch, self._metric(task), kinds=(K.NEURON,),
                                       method=self._gradient_method(config))
        summary = task_summary(loaded.model, batch, self._metric(task))
        return Frames.of(nodes=[(schema.MODEL, rows.model_identity(name)), (schema.TASK, rows.task_rows(task, len(load_task(task.path)))),
                                *rows.component_nodes(name, effects)],
                         edges=[(schema.EVALUATED_ON, rows.evaluated_rows(name, task.name, task.metric, summary, len(task))),
                                (schema.AFFECTS, rows.affects_rows(name, task.name, task.metric, len(task), effects,
                                                                   via=config.effect_method))])

    def _features(self, ctx, loaded, task: Task, batch: TaskBatch, spec: str, ablation: str) -> Frames:
        """Every feature of every dictionary at ``spec`` (identity rows, as the features stage
        writes them) and its ``AFFECTS`` on the task, by attribution patching."""
        model, name = loaded.model, ctx.info.name
        dicts = load_dictionaries(spec)
        out = Frames()
        for uid, d in zip(dictionary_uids(name, spec, dicts), dicts):
            d = to_model(d, device_of(model), next(model.parameters()).dtype)
            effects = feature_attribution(model, loaded.adapter, d, batch, self._metric(task), ablation=ablation)
            src = [schema.feature_uid(uid, j) for j in effects["index"].to_list()]
            out += Frames.of(nodes=[(schema.FEATURE, rows.feature_identity(name, uid, d))],
                             edges=[(schema.AFFECTS, rows.affects_rows(name, task.name, task.metric, len(batch),
                                                                       effects, via=ATTRIBUTION, src=src))])
        return out


STAGE = register(EffectsStage())
