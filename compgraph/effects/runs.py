"""Forward passes over a task batch: logits at the last position, per-example metrics,
example chunks, captured site values, the values an ablation patches towards, and the
clean / corrupt baselines that every effect is measured against.

Shared by every effect method (:mod:`compgraph.effects.activation`,
:mod:`compgraph.effects.attribution`, :mod:`compgraph.effects.edges`, feature effects in
:mod:`compgraph.dictionaries.effects`). Definitions: :mod:`compgraph.effects.measure`.
"""

from __future__ import annotations

import inspect
import math
from typing import Iterable, NamedTuple

import torch

from compgraph.data.tasks import Inputs, TaskBatch
from compgraph.effects.components import Component, expert_contribution, site_of
from compgraph.effects.measure import Metric
from compgraph.errors import ConfigError
from compgraph.models import params
from compgraph.models.adapters.base import Adapter
from compgraph.models.hooks import capture


def device_of(model) -> torch.device:
    """Where the model's parameters are."""
    return next(model.parameters()).device


def _keeps_logits(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def forward_logits(model, inputs: Inputs) -> torch.Tensor:
    """The model's logits at the last position, [b, 1, vocab] (all positions when the model
    has no ``logits_to_keep``)."""
    device = device_of(model)
    kwargs = {"input_ids": inputs.ids.to(device), "use_cache": False}
    if inputs.attention_mask is not None:
        kwargs["attention_mask"] = inputs.attention_mask.to(device)
    if inputs.position_ids is not None:
        kwargs["position_ids"] = inputs.position_ids.to(device)
    if _keeps_logits(model):
        kwargs["logits_to_keep"] = 1
    out = model(**kwargs)
    logits = getattr(out, "logits", None)
    if logits is None:
        raise ConfigError("effects need a model with an LM head (logits); this model returns hidden states only")
    return logits[:, -1:]


def metric_values(model, inputs: Inputs, answer_ids, wrong_ids, metric: Metric) -> torch.Tensor:
    """Per-example metric [n] of an unpatched run (float64 on the CPU)."""
    with torch.no_grad():
        return per_example(metric, forward_logits(model, inputs), answer_ids, wrong_ids)


def per_example(metric: Metric, logits, answer_ids, wrong_ids) -> torch.Tensor:
    values = metric(logits, answer_ids.to(logits.device), wrong_ids.to(logits.device))
    if values.shape != (logits.shape[0],):
        raise ConfigError(f"the metric returned shape {tuple(values.shape)}; it must return one value per example")
    return values.detach().double().cpu()


def example_chunks(n: int, width: int, batch_tokens: int) -> list[torch.Tensor]:
    """Example indices split so that each chunk has at most ``batch_tokens`` tokens."""
    size = max(1, batch_tokens // max(1, width))
    return [torch.arange(i, min(n, i + size)) for i in range(0, n, size)]


def derangement(n: int, seed: int) -> torch.Tensor:
    """A permutation of range(n) with no fixed point, the same for the same (n, seed)."""
    if n < 2:
        raise ConfigError("resample ablation needs at least 2 examples")
    generator = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=generator)
        if not (perm == torch.arange(n)).any():
            return perm


# --- what a patch writes: per-site targets -------------------------------------------------------

def sites_of(components: Iterable[Component]) -> list[tuple[str, int]]:
    """The hook sites holding the components' activations (and each expert layer's
    ``experts_in``), by layer."""
    sites = {site_of(c) for c in components}
    sites |= {("experts_in", c.layer) for c in components if c.kind == "expert"}
    return sorted(sites, key=lambda s: (s[1], s[0]))


def capture_values(model, adapter: Adapter, inputs: Inputs, sites, answer_ids=None, wrong_ids=None,
                   metric: Metric | None = None) -> tuple[dict, torch.Tensor | None]:
    """One no-grad run: ``{site: value}`` (experts_in turned into every expert's
    contribution, [E, b, T, d_model]) and the per-example metric when a metric is given."""
    with torch.no_grad(), capture(model, adapter, list(sites)) as acts:
        logits = forward_logits(model, inputs)
    values = {}
    b, width = inputs.ids.shape
    for site, got in acts.items():
        if site[0] == "experts_in":
            n_experts = int(_experts_module(model, adapter, site[1]).gate_up_proj.shape[0])
            with torch.no_grad():
                contribution = expert_contribution(model, adapter, site[1], got[0], list(range(n_experts)))
            values[site] = contribution.unflatten(1, (b, width))
        else:
            values[site] = got[0]
    m = None if metric is None else per_example(metric, logits, answer_ids, wrong_ids)
    return values, m


def _experts_module(model, adapter, layer):
    return params.layer_module(model, adapter, layer, adapter.experts)


def site_means(model, adapter: Adapter, task: TaskBatch, sites, batch_tokens: int) -> dict:
    """Mean of each site's value over the clean run's prompt positions and examples:
    ``{site: [*value dims]}`` (experts: [E, 1, 1, d_model])."""
    sums, count = {}, 0.0
    for chunk in example_chunks(task.n, task.width, batch_tokens):
        inputs = task.clean.rows(chunk)
        values, _ = capture_values(model, adapter, inputs, sites)
        mask = inputs.mask.to(device_of(model))
        count += float(mask.sum())
        for site, value in values.items():
            if site[0] == "experts_in":  # [E, b, T, d]
                s = (value * mask[None, :, :, None]).sum(dim=(1, 2)).double()
            else:
                w = mask.view(*mask.shape, *([1] * (value.dim() - 2)))
                s = (value * w).sum(dim=(0, 1)).double()
            sums[site] = sums.get(site, 0) + s
    out = {}
    for site, s in sums.items():
        mean = s / count
        out[site] = mean[:, None, None, :] if site[0] == "experts_in" else mean
    return out


class Targets(NamedTuple):
    """For one chunk of examples: the base run (whose activations are replaced), its
    per-site values, the value each site is patched towards, and the per-example metrics
    of the runs made on the way (``clean`` / ``corrupt``, when made)."""

    base: Inputs
    base_values: dict | None
    target: dict
    """site -> tensor broadcastable to the base value ([n, T, ...]; experts_in: [E, n, T, d])."""
    metrics: dict


def targets(model, adapter: Adapter, task: TaskBatch, chunk: torch.Tensor, sites, ablation: str, direction: str,
            means: dict | None, perm: torch.Tensor | None, metric: Metric, *, with_base: bool = True,
            base_sites=None) -> Targets:
    """The :class:`Targets` of the examples ``chunk`` (see :mod:`compgraph.effects.measure` for
    what each ablation patches towards); ``base_sites``: the sites whose base-run values are
    kept (default ``sites``)."""
    sub = task.rows(chunk)
    answer, wrong = sub.answer_ids, sub.wrong_ids
    base_name = "corrupt" if direction == "denoising" else "clean"
    base = sub.corrupt if direction == "denoising" else sub.clean
    metrics, base_values = {}, None
    if with_base:
        base_values, metrics[base_name] = capture_values(model, adapter, base, sites if base_sites is None
                                                         else base_sites, answer, wrong, metric)
    if direction == "denoising":
        target, metrics["clean"] = capture_values(model, adapter, sub.clean, sites, answer, wrong, metric)
    elif ablation == "corrupt":
        target, metrics["corrupt"] = capture_values(model, adapter, sub.corrupt, sites, answer, wrong,
                                                    metric)
    elif ablation == "resample":
        target, _ = capture_values(model, adapter, task.clean.rows(perm[chunk]), sites)
    elif ablation == "mean":
        target = {site: means[site] for site in sites}
    else:  # zero
        target = {site: torch.zeros(()) for site in sites}
    dtype, device = next(model.parameters()).dtype, device_of(model)
    target = {site: v.to(device=device, dtype=dtype) for site, v in target.items()}
    return Targets(base, base_values, target, metrics)


class Baselines:
    """Per-example clean and corrupt metrics, filled from the runs the effect functions make
    anyway; :meth:`finish` runs the model for whatever is still missing."""

    def __init__(self, n: int):
        self.values = {"clean": torch.full((n,), math.nan, dtype=torch.float64),
                       "corrupt": torch.full((n,), math.nan, dtype=torch.float64)}

    def add(self, chunk: torch.Tensor, metrics: dict) -> None:
        for name, values in metrics.items():
            if values is not None:
                self.values[name][chunk] = values

    def finish(self, model, task: TaskBatch, metric: Metric, batch_tokens: int) -> dict:
        for name, inputs in (("clean", task.clean), ("corrupt", task.corrupt)):
            missing = torch.nonzero(torch.isnan(self.values[name])).flatten()
            for chunk in example_chunks(len(missing), task.width, batch_tokens):
                rows = missing[chunk]
                self.values[name][rows] = metric_values(model, inputs.rows(rows), task.answer_ids[rows],
                                                        task.wrong_ids[rows], metric)
        return {name: float(v.mean()) for name, v in self.values.items()}


@torch.no_grad()
def task_summary(model, batch: TaskBatch, metric: Metric, chunk: int = 32) -> dict:
    """Clean accuracy (the answer's logit above the wrong one's at the last position) and
    the mean metric on the clean and on the corrupt prompts: ``{"accuracy", "metric_clean",
    "metric_corrupt"}``."""
    values: dict[str, list[torch.Tensor]] = {"clean": [], "corrupt": [], "right": []}
    device = device_of(model)
    for start in range(0, len(batch), chunk):
        rows = torch.arange(start, min(start + chunk, len(batch)))
        answer, wrong = batch.answer_ids[rows].to(device), batch.wrong_ids[rows].to(device)
        for which, side in (("clean", batch.clean), ("corrupt", batch.corrupt)):
            logits = forward_logits(model, side.rows(rows)).float()
            values[which].append(metric(logits, answer, wrong))
            if which == "clean":
                last = logits[:, -1]
                values["right"].append(last.gather(1, answer[:, None]) > last.gather(1, wrong[:, None]))
    return {"accuracy": float(torch.cat(values["right"]).float().mean()),
            "metric_clean": float(torch.cat(values["clean"]).mean()),
            "metric_corrupt": float(torch.cat(values["corrupt"]).mean())}
