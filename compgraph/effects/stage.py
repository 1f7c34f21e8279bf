"""The ``effects`` stage: causal effects of components on tasks, one run per task.

For each task (``--tasks``; a shipped name or a user's ``.jsonl``), scoped so that tasks
never replace each other's runs:

- shard ``nodes``: the task's clean accuracy and mean clean / corrupt metric
  (``EVALUATED_ON`` from the model to the ``:Task``), the effect of every head, MLP
  block and attention block by ``--method`` (activation patching — noising,
  ``--ablation`` — by default; attribution; EAP-IG) (``AFFECTS``), and the
  node-level circuit: the top ``circuit_n`` heads and MLP blocks by |effect| (an
  attention block is the sum of its heads, so blocks are not members), its faithfulness
  measured by running the model with everything outside patched (``:Circuit``,
  ``INCLUDES``, ``FOR_TASK``);
- shard ``neurons``: attribution patching of every neuron (``AFFECTS``, method
  ``attribution``), when ``neuron`` is among ``effect_components``;
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

Definitions: :mod:`compgraph.effects.patching`, :mod:`compgraph.effects.circuits`.
Whole blocks are ``:Site`` components (``{model}/L{layer}/mlp``, ``.../attn``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl
import torch

from compgraph import schema
from compgraph.effects import frames
from compgraph.engine import identity
from compgraph.engine.registry import register
from compgraph.engine.stage import Frames, ModelInfo, Stage
from compgraph.errors import ConfigError

P = schema.Prop
PATCHED_KINDS = ("head", "mlp", "attn")
ABLATIONS = ("corrupt", "zero", "mean", "resample")
METHODS = ("activation", "attribution", "eap-ig")


@dataclass(frozen=True, kw_only=True)
class EffectsConfig:
    tasks: tuple[str, ...]
    """Task names or .jsonl paths; one run each."""
    effect_method: str
    """How heads and blocks are measured: activation (patching), attribution, eap-ig.
    Neurons are always measured by a gradient method (eap-ig when asked, else attribution)."""
    ablation: str
    """What a patched component takes: its corrupt-run value, zero, its mean, another example's."""
    effect_components: tuple[str, ...]
    """Kinds measured: head, mlp, attn by activation patching; neuron by attribution patching."""
    circuit_n: int
    """Components in the node circuit (top by |effect| among the activation-patched ones)."""
    task_examples: int
    """The first N examples of each task (0: all)."""
    dictionaries: tuple[str, ...]
    """SAEs / transcoders whose features are measured (by attribution) when ``feature`` is
    among ``effect_components``; one shard each."""
    effect_edges: bool
    """Also score the edges (CAUSES) and build the edge-level circuit."""
    circuit_edges: int
    """Edges in the edge circuit before pruning (top by |effect|)."""
    circuit_threshold: float | None
    """If set, circuits keep every member with |effect| >= this instead of a top-n."""


class EffectsStage(Stage):
    name = "effects"
    version = 1
    Config = EffectsConfig
    inputs = ("weights",)
    description = "Causal effects on tasks: node effects, edge attribution, node and edge circuits."

    def instances(self, config: EffectsConfig) -> list[tuple[str, EffectsConfig]]:
        """Per task, one run for the model's own components (scope: the task's name) and one
        per dictionary for its features (scope ``{task}/features/{dictionary}``), so that
        adding a dictionary's features later neither recomputes nor replaces the task's
        other effects."""
        from compgraph.dictionaries.features import dictionary_name
        from compgraph.effects.tasks import load_task

        kinds = _kinds(config)
        if "feature" in kinds and not config.dictionaries:
            raise ConfigError("--components feature needs --dictionary PATH")
        own = tuple(k for k in kinds if k != "feature")
        out = []
        for spec in config.tasks:
            task = load_task(spec)  # the whole file is checked here, before anything runs
            if own:
                out.append((task.name, replace(config, tasks=(spec,), effect_components=own, dictionaries=())))
            if "feature" in kinds:
                out += [(f"{task.name}/features/{dictionary_name(d)}",
                         replace(config, tasks=(spec,), effect_components=("feature",), dictionaries=(d,),
                                 effect_edges=False)) for d in config.dictionaries]
        return out

    def digests(self, config: EffectsConfig) -> dict[str, str]:
        from compgraph.effects.tasks import load_task

        path = Path(load_task(config.tasks[0]).path)
        files = [(path.name, path)] + ([(path.with_suffix(".json").name, path.with_suffix(".json"))]
                                       if path.with_suffix(".json").exists() else [])
        from compgraph.dictionaries.features import dictionary_digest, dictionary_name

        dictionaries = {f"dictionary:{dictionary_name(p)}": dictionary_digest(p) for p in config.dictionaries
                        if "feature" in _kinds(config)}
        return {"task": identity.files_digest(files)} | dictionaries

    def skip_reason(self, info: ModelInfo) -> str | None:
        return None if info.causal else "effects need a causal LM"

    def validate(self, info: ModelInfo, config: EffectsConfig) -> None:
        from compgraph.effects.components import KINDS

        if config.effect_method not in METHODS:
            raise ConfigError(f"--method must be one of {', '.join(METHODS)}, not {config.effect_method!r}")
        if config.ablation not in ABLATIONS:
            raise ConfigError(f"--ablation must be one of {', '.join(ABLATIONS)}, not {config.ablation!r}")
        kinds = _kinds(config)
        unknown = [k for k in kinds if (k not in KINDS and k != "feature") or k == "expert"]
        if unknown:
            raise ConfigError(f"--effect-components takes head, neuron, mlp, attn, feature; got {', '.join(unknown)}")
        if "feature" in kinds:
            self._validate_features(info, config)
        if config.circuit_n < 1 or config.circuit_edges < 1:
            raise ConfigError(f"--top-n and --top-n-edges must be at least 1, not {config.circuit_n}, "
                              f"{config.circuit_edges}")
        if config.circuit_threshold is not None and not config.circuit_threshold >= 0:
            raise ConfigError(f"--threshold must be a number >= 0, not {config.circuit_threshold}")

    @staticmethod
    def _validate_features(info: ModelInfo, config: EffectsConfig) -> None:
        from compgraph.dictionaries.features import check_dictionary, load_dictionaries

        if config.ablation == "resample":
            raise ConfigError("feature effects take --ablation corrupt, zero or mean")
        for spec in config.dictionaries:
            for d in load_dictionaries(spec):
                check_dictionary(info, d)

    def check_inputs(self, ctx, config: EffectsConfig) -> None:
        from compgraph.effects.tasks import encode_task, load_task

        encode_task(load_task(config.tasks[0]), ctx.model().tokenizer)

    def shards(self, info: ModelInfo, config: EffectsConfig, execution) -> list[str]:
        if _kinds(config) == ("feature",):  # a dictionary's own run (see instances)
            return [f"features/{i}" for i in range(len(config.dictionaries))]
        shards = ["nodes"]
        if "neuron" in config.effect_components and not info.is_moe:
            shards.append("neurons")
        if config.effect_edges:
            from compgraph.effects.edges import unsupported
            from compgraph.models.adapters.registry import adapter_for

            reason = unsupported(adapter_for(info.model_type))
            if reason:
                warnings.warn(f"{info.name}: no CAUSES edges: {reason}", stacklevel=1)
            else:
                shards.append("edges")
        return shards

    def run(self, ctx, config: EffectsConfig, shard: str) -> Frames:
        from compgraph.effects.tasks import encode_task, load_task

        loaded = ctx.model()
        task = load_task(config.tasks[0]).head(config.task_examples)
        enc = encode_task(task, loaded.tokenizer)
        if shard == "nodes":
            return self._nodes(ctx, loaded, task, enc, config)
        if shard == "edges":
            return self._edges(ctx, loaded, task, enc, config)
        if shard.startswith("features/"):
            from compgraph.dictionaries.effects import feature_effect_frames

            return feature_effect_frames(loaded.model, loaded.adapter, model_name=ctx.info.name,
                                         spec=config.dictionaries[int(shard.split("/")[1])], task_name=task.name,
                                         metric_name=task.metric, enc=enc, metric=self._metric(task),
                                         ablation=config.ablation)
        return self._neurons(ctx, loaded, task, enc, config)

    @staticmethod
    def _inputs(enc) -> dict:
        return dict(clean_ids=enc.clean_ids, corrupt_ids=enc.corrupt_ids, answer_ids=enc.answer_ids,
                    wrong_ids=enc.wrong_ids)

    @staticmethod
    def _metric(task):
        from compgraph.effects.tasks import compute_metric

        return lambda logits, answer, wrong: compute_metric(task.metric, logits, answer, wrong)

    @staticmethod
    def _size(config: EffectsConfig, top_n: int, total: int) -> dict:
        if config.circuit_threshold is not None:
            return {"threshold": config.circuit_threshold}
        return {"n": min(top_n, total)}

    def _nodes(self, ctx, loaded, task, enc, config: EffectsConfig) -> Frames:
        from compgraph.effects.circuits import faithfulness_curve, node_circuit
        from compgraph.effects.patching import node_effects

        model, adapter, name = loaded.model, loaded.adapter, ctx.info.name
        kinds = tuple(k for k in config.effect_components if k in PATCHED_KINDS)
        summary = task_summary(model, enc, self._metric(task))
        if summary["accuracy"] < 0.6:
            warnings.warn(f"{name} fails task {task.name}: clean accuracy {summary['accuracy']:.2f}", stacklevel=1)
        extra = dict(attention_mask=enc.attention_mask, position_ids=enc.position_ids, ablation=config.ablation)
        inputs = self._inputs(enc) | {"metric": self._metric(task)}
        effects = node_effects(model, adapter, **inputs, kinds=kinds, method=config.effect_method, **extra)
        # the circuit's universe: heads and MLP blocks (an attention block is its heads)
        universe = effects.filter(pl.col("component").is_in(["head", "mlp"]))
        circuit = node_circuit(model, adapter, **inputs, scores=universe,
                               **self._size(config, config.circuit_n, universe.height), **extra)
        curve = faithfulness_curve(model, adapter, **inputs, scores=universe, level="node", **extra)
        node, includes, for_task = frames.circuit_frames(name, task.name, config.effect_method, circuit, curve,
                                                         frames.node_circuit_members(name, circuit.members))
        task_node = pl.DataFrame([{"uid": schema.task_uid(task.name), "name": task.name,
                                   "description": task.description, "source": task.source, "metric": task.metric,
                                   "n_prompts": len(task)}])
        model_row = pl.DataFrame([{"uid": schema.model_uid(name)}])
        evaluated = pl.DataFrame([{"src": schema.model_uid(name), "dst": schema.task_uid(task.name),
                                   "metric": task.metric, **summary}])
        return Frames.of(
            nodes=[(schema.MODEL, model_row), (schema.TASK, task_node), *frames.component_nodes(name, effects),
                   (schema.CIRCUIT, node)],
            edges=[(schema.EVALUATED_ON, evaluated),
                   (schema.AFFECTS, frames.affects_rows(name, task.name, task.metric, len(task), effects)),
                   (schema.INCLUDES, includes), (schema.FOR_TASK, for_task)])

    def _edges(self, ctx, loaded, task, enc, config: EffectsConfig) -> Frames:
        from compgraph.effects.circuits import edge_circuit, faithfulness_curve
        from compgraph.effects.edges import edge_attribution

        model, adapter, name = loaded.model, loaded.adapter, ctx.info.name
        method = "eap-ig" if config.effect_method == "eap-ig" else "attribution"
        inputs = self._inputs(enc) | {"metric": self._metric(task), "attention_mask": enc.attention_mask,
                                      "position_ids": enc.position_ids}
        scores = edge_attribution(model, adapter, **inputs, method=method)
        circuit = edge_circuit(model, adapter, **inputs, scores=scores, ablation=config.ablation,
                               **self._size(config, config.circuit_edges, scores.height))
        curve = faithfulness_curve(model, adapter, **inputs, scores=scores, level="edge", ablation=config.ablation)
        group = ctx.info.n_heads // ctx.info.n_kv_heads
        members = frames.edge_circuit_members(name, circuit.members, group=group)
        node, includes, for_task = frames.circuit_frames(name, task.name, method, circuit, curve, members)
        causes = frames.causes_rows(name, task.name, scores, circuit.members, group=group)
        return Frames.of(
            nodes=[(schema.TASK, pl.DataFrame([{"uid": schema.task_uid(task.name), "name": task.name}])),
                   *frames.edge_nodes(name, scores, group=group), (schema.CIRCUIT, node)],
            edges=[(schema.CAUSES, causes), (schema.INCLUDES, includes), (schema.FOR_TASK, for_task)])

    def _neurons(self, ctx, loaded, task, enc, config: EffectsConfig) -> Frames:
        from compgraph.effects.patching import attribution_patching

        name = ctx.info.name
        method = "eap-ig" if config.effect_method == "eap-ig" else "attribution"
        effects = attribution_patching(loaded.model, loaded.adapter, **self._inputs(enc), metric=self._metric(task),
                                       kinds=("neuron",), method=method, attention_mask=enc.attention_mask,
                                       position_ids=enc.position_ids)
        return Frames.of(nodes=frames.component_nodes(name, effects),
                         edges=[(schema.AFFECTS, frames.affects_rows(name, task.name, task.metric, len(task),
                                                                     effects))])


def _kinds(config: EffectsConfig) -> tuple[str, ...]:
    """The component kinds asked for (``features`` read as ``feature``)."""
    return tuple("feature" if k == "features" else k for k in config.effect_components)


@torch.no_grad()
def task_summary(model, enc, metric, batch: int = 32) -> dict:
    """Clean accuracy (logit of the answer above the wrong one at the last position) and the
    mean metric on the clean and on the corrupt prompts."""
    values: dict[str, list[torch.Tensor]] = {"clean": [], "corrupt": [], "right": []}
    for start in range(0, len(enc), batch):
        rows = slice(start, start + batch)
        answer, wrong = enc.answer_ids[rows], enc.wrong_ids[rows]
        for which, ids in (("clean", enc.clean_ids), ("corrupt", enc.corrupt_ids)):
            logits = model(input_ids=ids[rows], attention_mask=enc.attention_mask[rows],
                           position_ids=enc.position_ids[rows]).logits.float()
            values[which].append(metric(logits, answer, wrong))
            if which == "clean":
                last = logits[:, -1]
                values["right"].append(last.gather(1, answer[:, None]) > last.gather(1, wrong[:, None]))
    return {"accuracy": float(torch.cat(values["right"]).float().mean()),
            "metric_clean": float(torch.cat(values["clean"]).mean()),
            "metric_corrupt": float(torch.cat(values["corrupt"]).mean())}


STAGE = register(EffectsStage())
