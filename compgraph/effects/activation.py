"""Activation patching: each component's effect measured by running the model with the
component patched (definitions: :mod:`compgraph.effects.measure`).

Batched: a chunk of c components is patched in one forward pass on the examples
replicated c times along the batch ([c·n, T]: rows j·n..(j+1)·n carry component j's
patch), with c chosen so that c·n·T ≤ ``batch_tokens``. The layers below the lowest layer
patched in a chunk run once on the n base rows (:func:`~compgraph.effects.patch.fan_out`):
components sorted by layer (as :func:`~compgraph.effects.components.list_components`
returns them) skip, on average, half the model. Examples are split into chunks when n·T
alone exceeds ``batch_tokens``; effects are exact sums over chunks.
"""

from __future__ import annotations

import polars as pl
import torch

from compgraph.data.tasks import TaskBatch
from compgraph.effects.components import Component, check_kinds, dims, list_components
from compgraph.effects.measure import ACTIVATION, DEFAULT_BATCH_TOKENS, Metric, check, node_frame
from compgraph.effects.patch import fan_out, patch_hooks
from compgraph.effects.runs import Baselines, derangement, example_chunks, forward_logits, per_example, \
    site_means, sites_of, targets
from compgraph.errors import HookError
from compgraph.models.adapters.base import Adapter


def resolve_components(model, adapter, components, kinds) -> list[Component]:
    """The components given (as tuples), or every component of ``kinds``; checked against the model."""
    if components is None:
        return list_components(model, adapter, kinds)
    components = [Component(*c) for c in components]
    check_kinds({c.kind for c in components}, model, adapter)
    return components



def patched_metrics(model, adapter: Adapter, task: TaskBatch, plans: list[list[Component]], metric: Metric, *,
                    ablation: str = "corrupt", direction: str = "noising", seed: int = 0,
                    batch_tokens: int = DEFAULT_BATCH_TOKENS, per_pass: int | None = None,
                    progress=None) -> tuple[torch.Tensor, dict]:
    """M of every plan: the base run (clean; corrupt when denoising) with all of the plan's
    components patched at once towards their ablation target. Returns ([len(plans)] float64,
    baselines ``{"clean": M(clean), "corrupt": M(corrupt)}``). ``per_pass`` caps the plans
    run in one forward pass (default: as many as ``batch_tokens`` allows; 1 runs every plan
    on its own, so that two equal plans give bit-identical results)."""
    check(ablation, direction)
    d = dims(model, adapter)
    sites = sites_of({c for plan in plans for c in plan})
    means = site_means(model, adapter, task, sites, batch_tokens) if ablation == "mean" else None
    perm = derangement(task.n, seed) if ablation == "resample" else None
    totals = torch.zeros(len(plans), dtype=torch.float64)
    baselines = Baselines(task.n)
    chunks = example_chunks(task.n, task.width, batch_tokens)
    done, total = 0, len(plans) * len(chunks)
    for chunk in chunks:
        k = len(chunk)
        answer, wrong = task.answer_ids[chunk], task.wrong_ids[chunk]
        if sites:
            got = targets(model, adapter, task, chunk, sites, ablation, direction, means, perm, metric)
            baselines.add(chunk, got.metrics)
            base, target = got.base, got.target
        else:
            base, target = (task.rows(chunk).corrupt if direction == "denoising" else task.rows(chunk).clean), {}
        per = max(1, batch_tokens // (k * task.width))
        per = per if per_pass is None else min(per, per_pass)
        for start in range(0, len(plans), per):
            block = plans[start:start + per]
            c = len(block)
            first = min((comp.layer for plan in block for comp in plan), default=0)
            with torch.no_grad(), fan_out(model, adapter, first, c, k), \
                    patch_hooks(model, adapter, block, k, target, d):
                logits = forward_logits(model, base)
            if logits.shape[0] != c * k:
                raise HookError(f"fan-out gave {logits.shape[0]} rows, expected {c * k}")
            values = per_example(metric, logits, answer.repeat(c), wrong.repeat(c)).view(c, k)
            totals[start:start + c] += values.sum(1)
            done += c
            if progress is not None:
                progress(done, total)
    return totals / task.n, baselines.finish(model, task, metric, batch_tokens)


def activation_patching(model, adapter: Adapter, task: TaskBatch, metric: Metric, *, components=None,
                        kinds=("head",), ablation: str = "corrupt", direction: str = "noising", seed: int = 0,
                        batch_tokens: int = DEFAULT_BATCH_TOKENS, progress=None) -> pl.DataFrame:
    """Each component patched alone (batched: many per forward pass); one row per component
    with the columns of :data:`~compgraph.effects.measure.NODE_SCHEMA`, ``method`` ``activation``."""
    check(ablation, direction)
    comps = resolve_components(model, adapter, components, kinds)
    patched, baselines = patched_metrics(model, adapter, task, [[c] for c in comps], metric, ablation=ablation,
                                         direction=direction, seed=seed, batch_tokens=batch_tokens, progress=progress)
    base = baselines["corrupt" if direction == "denoising" else "clean"]
    return node_frame(comps, (patched - base).tolist(), baselines, ACTIVATION, ablation, direction)
