"""Activation patching: each component's effect measured by running the model with the
component patched (definitions: :mod:`compgraph.effects.measure`).

Batched: a chunk of c components is patched in one forward pass on the examples
replicated c times along the batch ([c·n, T]: rows j·n..(j+1)·n carry component j's
patch), with c chosen so that c·n·T ≤ ``batch_tokens``. Plans run in order of their
lowest layer, and a pass starts at the lowest layer patched in it: the base run (made
with the targets, chunk by chunk: :func:`prepare`) keeps its residual stream at the
input of every layer a pass starts at, the layers below are skipped and that saved input,
tiled c times, takes their place (:func:`~compgraph.effects.patch.fan_out`): the values
those layers would compute, so effects are the same up to float rounding (which plans
share a pass, and so the batch size of a kernel, may differ); components sorted by layer
skip, on average, half the model. A caller that patches the same task in several rounds
(the verified method) makes :func:`prepare` once, kept for every layer, and passes it to
every round. Examples are split into chunks when n·T alone exceeds ``batch_tokens``;
effects are exact sums over chunks.
"""

from __future__ import annotations

from typing import Callable, Iterator, NamedTuple

import polars as pl
import torch

from compgraph.data.tasks import TaskBatch
from compgraph.effects.components import Component, check_kinds, dims, list_components
from compgraph.effects.measure import ACTIVATION, DEFAULT_BATCH_TOKENS, Metric, check, node_frame
from compgraph.effects.patch import fan_out, patch_hooks
from compgraph.effects.runs import Baselines, Targets, derangement, example_chunks, forward_logits, per_example, \
    site_means, sites_of, targets
from compgraph.errors import ConfigError, HookError
from compgraph.models import params
from compgraph.models.adapters.base import Adapter
from compgraph.models.hooks import can_skip


def resolve_components(model, adapter, components, kinds) -> list[Component]:
    """The components given (as tuples), or every component of ``kinds``; checked against the model."""
    if components is None:
        return list_components(model, adapter, kinds)
    components = [Component(*c) for c in components]
    check_kinds({c.kind for c in components}, model, adapter)
    return components



class Prepared(NamedTuple):
    """The runs every patched pass over a task starts from (:func:`prepare`)."""

    task: TaskBatch
    chunks: list[torch.Tensor]
    """The example chunks (:func:`~compgraph.effects.runs.example_chunks`)."""
    runs: list[Targets] | None
    """Per chunk: the base run, its ``resid_pre`` at each of ``layers`` (``base_values``),
    the targets of ``sites`` and the baseline metrics; None when not kept (each chunk's
    are made by ``make`` when the passes reach it, so one chunk's are held at a time)."""
    make: Callable[[torch.Tensor], Targets]
    sites: frozenset
    layers: tuple[int, ...]
    """The layers whose input is kept: a pass starting at one of them skips those below."""
    made_for: tuple
    """(metric, ablation, direction, seed, batch_tokens)."""

    def each(self) -> Iterator[tuple[torch.Tensor, Targets]]:
        """Every chunk with its runs (made now when not kept)."""
        for i, chunk in enumerate(self.chunks):
            yield chunk, (self.make(chunk) if self.runs is None else self.runs[i])


def prepare(model, adapter: Adapter, task: TaskBatch, components, metric: Metric, *, ablation: str = "corrupt",
            direction: str = "noising", seed: int = 0, batch_tokens: int = DEFAULT_BATCH_TOKENS,
            layers=None, keep: bool = True) -> Prepared:
    """The base and target runs for patching any of ``components`` (or a plan of them) on
    ``task``, keeping the base run's residual stream at the input of each of ``layers``
    (default: every layer but the first; none where blocks cannot be skipped). ``keep``:
    make every chunk's runs now, to share them between calls (the verified method's
    rounds); else each chunk's are made when used."""
    check(ablation, direction)
    sites = sites_of({Component(*c) for c in components})
    if not can_skip(adapter):
        layers = ()
    layers = tuple(sorted(set(range(params.n_layers(model, adapter)) if layers is None else layers) - {0}))
    means = site_means(model, adapter, task, sites, batch_tokens) if ablation == "mean" else None
    perm = derangement(task.n, seed) if ablation == "resample" else None
    chunks = example_chunks(task.n, task.width, batch_tokens)
    starts = [("resid_pre", layer) for layer in layers]

    def make(chunk: torch.Tensor) -> Targets:
        return targets(model, adapter, task, chunk, sites, ablation, direction, means, perm, metric, base_sites=starts)

    return Prepared(task, chunks, [make(chunk) for chunk in chunks] if keep else None, make, frozenset(sites), layers,
                    (metric, ablation, direction, seed, batch_tokens))


def _lowest(plan: list[Component]) -> int:
    return min((comp.layer for comp in plan), default=0)


def _order(plans: list[list[Component]]) -> list[int]:
    """The order the plans run in: by lowest layer (stable), so that each pass starts high."""
    return sorted(range(len(plans)), key=lambda j: _lowest(plans[j]))


def patched_metrics(model, adapter: Adapter, task: TaskBatch, plans: list[list[Component]], metric: Metric, *,
                    ablation: str = "corrupt", direction: str = "noising", seed: int = 0,
                    batch_tokens: int = DEFAULT_BATCH_TOKENS, per_pass: int | None = None,
                    progress=None, prepared: Prepared | None = None) -> tuple[torch.Tensor, dict]:
    """M of every plan: the base run (clean; corrupt when denoising) with all of the plan's
    components patched at once towards their ablation target. Returns ([len(plans)] float64,
    baselines ``{"clean": M(clean), "corrupt": M(corrupt)}``). ``per_pass`` caps the plans
    run in one forward pass (default: as many as ``batch_tokens`` allows; 1 runs every plan
    on its own, so that two equal plans give bit-identical results). ``prepared``: the runs
    made by :func:`prepare` for these settings and (at least) these plans' components."""
    check(ablation, direction)
    d = dims(model, adapter)
    comps = {c for plan in plans for c in plan}
    made_for = (metric, ablation, direction, seed, batch_tokens)
    if prepared is None:
        prepared = prepare(model, adapter, task, comps, metric, ablation=ablation, direction=direction, seed=seed,
                           batch_tokens=batch_tokens, layers={_lowest(plan) for plan in plans}, keep=False)
    elif prepared.task is not task or prepared.made_for != made_for or not set(sites_of(comps)) <= prepared.sites:
        raise ConfigError("prepared runs were made for another task, other components, metric or ablation "
                          "settings than these plans")
    order = _order(plans)
    ordered = [plans[j] for j in order]
    totals = torch.zeros(len(plans), dtype=torch.float64)
    baselines = Baselines(task.n)
    done, total = 0, len(plans) * len(prepared.chunks)
    for chunk, got in prepared.each():
        k = len(chunk)
        answer, wrong = task.answer_ids[chunk], task.wrong_ids[chunk]
        baselines.add(chunk, got.metrics)
        per = max(1, batch_tokens // (k * task.width))
        per = per if per_pass is None else min(per, per_pass)
        for start in range(0, len(plans), per):
            block = ordered[start:start + per]
            c = len(block)
            first = min(_lowest(plan) for plan in block)
            saved = got.base_values.get(("resid_pre", first))
            with torch.no_grad(), fan_out(model, adapter, first, c, k, saved), \
                    patch_hooks(model, adapter, block, k, got.target, d):
                logits = forward_logits(model, got.base)
            if logits.shape[0] != c * k:
                raise HookError(f"fan-out gave {logits.shape[0]} rows, expected {c * k}")
            values = per_example(metric, logits, answer.repeat(c), wrong.repeat(c)).view(c, k)
            totals[start:start + c] += values.sum(1)
            done += c
            if progress is not None:
                progress(done, total)
    result = torch.empty_like(totals)
    result[torch.tensor(order, dtype=torch.long)] = totals
    return result / task.n, baselines.finish(model, task, metric, batch_tokens)


def activation_patching(model, adapter: Adapter, task: TaskBatch, metric: Metric, *, components=None,
                        kinds=("head",), ablation: str = "corrupt", direction: str = "noising", seed: int = 0,
                        batch_tokens: int = DEFAULT_BATCH_TOKENS, progress=None,
                        prepared: Prepared | None = None) -> pl.DataFrame:
    """Each component patched alone (batched: many per forward pass); one row per component
    with the columns of :data:`~compgraph.effects.measure.NODE_SCHEMA`, ``method`` ``activation``
    (``prepared``: as for :func:`patched_metrics`)."""
    check(ablation, direction)
    comps = resolve_components(model, adapter, components, kinds)
    patched, baselines = patched_metrics(model, adapter, task, [[c] for c in comps], metric, ablation=ablation,
                                         direction=direction, seed=seed, batch_tokens=batch_tokens, progress=progress,
                                         prepared=prepared)
    base = baselines["corrupt" if direction == "denoising" else "clean"]
    return node_frame(comps, (patched - base).tolist(), baselines, ACTIVATION, ablation, direction)
