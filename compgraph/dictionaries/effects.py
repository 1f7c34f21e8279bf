"""Causal effects of dictionary features on tasks: attribution and activation patching.

A feature j of a dictionary D is patched where D *writes* (its output site, at its
output layer), through the error-preserving decomposition of that site's value:

- an SAE on site s: x = decode(f(x)) + ε, with ε = x − decode(f(x)) its reconstruction
  error and f = D.encode;
- a transcoder reading s_in and writing s_out: y = decode(f(x_in), x_in) + ε, with
  ε = y − D.forward(x_in) its prediction error.

Patching feature j to a value a replaces the written value v (x or y) by

    v + (a − f_j) · W_dec[j]

that is, the decoding with f_j swapped for a, plus the *same* error ε. Keeping ε makes the
unpatched run (a = f_j) the model's own run exactly, whatever the dictionary's
reconstruction quality; only feature j moves (other features, and later dictionaries,
are not held fixed). ``f_j`` is the feature's value on the base run (the base run is
unpatched below the write, so it is f(x) of the clean prompt at the same position).

Targets ``a`` (``ablation``): ``corrupt`` — f_j on the corrupt prompt at the same position;
``zero`` — 0; ``mean`` — the mean of f_j over the clean prompts' positions (attention
mask 1) and examples.

- **activation patching** (:func:`feature_patching`): M(clean run with feature j patched
  at every position) − M(clean); one forward pass per feature and example chunk, so meant
  for a short list of features.
- **attribution patching** (:func:`feature_attribution`): Σ over positions of
  (a − f_j) · ∂M/∂f_j on the clean run, averaged over examples, where
  ∂M/∂f_j = W_dec[j] · ∂M/∂v: with ε held constant, v is linear in f_j with slope
  W_dec[j]. All features of a dictionary from one forward and one backward pass per
  example chunk. The first-order estimate of the activation-patching effect.

M is the mean over examples of the task's per-example metric (as in
:mod:`compgraph.effects.measure`); ``effect_norm`` = effect ÷ (M(corrupt) − M(clean)).
"""

from __future__ import annotations

import polars as pl
import torch

from compgraph.schema import ComponentKind
from compgraph.dictionaries.base import Dictionary
from compgraph.data.tasks import Inputs, TaskBatch
from compgraph.effects.measure import ACTIVATION, ATTRIBUTION, DEFAULT_BATCH_TOKENS, NODE_SCHEMA, Metric, effect_norm
from compgraph.effects.runs import capture_values, device_of, example_chunks, forward_logits, metric_values
from compgraph.errors import ConfigError
from compgraph.models.hooks import capture, overwrite

ABLATIONS = ("corrupt", "zero", "mean")


def write_site(d: Dictionary) -> tuple[str, int | None]:
    """Where the dictionary writes: its input site for an SAE, its output site for a transcoder."""
    if d.kind == "transcoder":
        return d.output_site, d.output_layer
    return d.site, d.layer


def read_site(d: Dictionary) -> tuple[str, int | None]:
    return d.site, d.layer


def _features(d: Dictionary, values: dict) -> torch.Tensor:
    """f(x) [n, T, width] from captured site values."""
    return d.encode(values[read_site(d)])


def _mean_features(model, adapter, d: Dictionary, task: TaskBatch, batch_tokens: int) -> torch.Tensor:
    """[width]: the mean of f over the clean prompts' positions (attention mask 1)."""
    total, count = 0.0, 0.0
    for chunk in example_chunks(task.n, task.width, batch_tokens):
        inputs = task.clean.rows(chunk)
        values, _ = capture_values(model, adapter, inputs, [read_site(d)])
        mask = inputs.mask.to(device_of(model))
        total = total + (_features(d, values) * mask[..., None]).sum((0, 1)).double()
        count += float(mask.sum())
    return (total / max(count, 1.0)).float()


def _targets(model, adapter, d: Dictionary, sub: TaskBatch, ablation: str, f_clean: torch.Tensor,
             mean: torch.Tensor | None) -> torch.Tensor:
    """The values a [n, T, width] each feature is patched towards."""
    if ablation == "corrupt":
        values, _ = capture_values(model, adapter, sub.corrupt, [read_site(d)])
        return _features(d, values)
    if ablation == "mean":
        return mean.to(f_clean.dtype).expand_as(f_clean)
    return torch.zeros_like(f_clean)


def _check(d: Dictionary, ablation: str) -> None:
    if ablation not in ABLATIONS:
        raise ConfigError(f"feature effects take ablation {', '.join(ABLATIONS)}, not {ablation!r}")
    if d.kind == "transcoder" and d.output_site is None:
        raise ConfigError(f"{d.source}: a transcoder needs an output site")


def _clean_with_grad(model, adapter, d: Dictionary, inputs: Inputs, answer, wrong,
                     metric: Metric) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward + backward on ``inputs``: (f on it [n, T, width], ∂Σm/∂v at the write site
    [n, T, d_out], per-example metric [n])."""
    out_site, in_site = write_site(d), read_site(d)
    with torch.enable_grad(), capture(model, adapter, [] if in_site == out_site else [in_site]) as plain, \
            capture(model, adapter, [out_site], grad=True) as live:
        logits = forward_logits(model, inputs)
        values = metric(logits, answer.to(logits.device), wrong.to(logits.device))
        (grad,) = torch.autograd.grad(values.sum(), [live[out_site][0]])
    x = (live if in_site == out_site else plain)[in_site][0].detach()
    with torch.no_grad():
        f = d.encode(x)
    return f, grad, values.detach().double().cpu()


def feature_attribution(model, adapter, d: Dictionary, task: TaskBatch, metric: Metric, *, ablation: str = "corrupt",
                        batch_tokens: int = DEFAULT_BATCH_TOKENS) -> pl.DataFrame:
    """Attribution-patching effect of every feature of ``d`` (module docstring); columns of
    :data:`compgraph.effects.measure.NODE_SCHEMA` (component ``feature``, index j)."""
    _check(d, ablation)
    mean = _mean_features(model, adapter, d, task, batch_tokens) if ablation == "mean" else None
    scores = torch.zeros(d.width, dtype=torch.float64)
    clean = torch.zeros(task.n, dtype=torch.float64)
    for chunk in example_chunks(task.n, task.width, max(1, batch_tokens // 4)):
        sub = task.rows(chunk)
        f, grad, clean[chunk] = _clean_with_grad(model, adapter, d, sub.clean, sub.answer_ids, sub.wrong_ids, metric)
        with torch.no_grad():
            slope = grad.to(d.W_dec.dtype) @ d.W_dec.T  # ∂Σm/∂f_j = W_dec[j] · ∂Σm/∂v
            delta = _targets(model, adapter, d, sub, ablation, f, mean) - f
            scores += (delta.double() * slope.double()).sum((0, 1)).cpu()
    corrupt = _metric_over(model, task.corrupt, task, metric, batch_tokens)
    return _frame(d, scores / task.n, float(clean.mean()), corrupt, ATTRIBUTION, ablation)


def feature_patching(model, adapter, d: Dictionary, features: list[int], task: TaskBatch, metric: Metric, *,
                     ablation: str = "corrupt", batch_tokens: int = DEFAULT_BATCH_TOKENS) -> pl.DataFrame:
    """Activation-patching effect of each listed feature of ``d``, one at a time (module
    docstring); rows in the order of ``features``."""
    _check(d, ablation)
    mean = _mean_features(model, adapter, d, task, batch_tokens) if ablation == "mean" else None
    totals = torch.zeros(len(features), dtype=torch.float64)
    clean = torch.zeros(task.n, dtype=torch.float64)
    for chunk in example_chunks(task.n, task.width, batch_tokens):
        sub = task.rows(chunk)
        values, clean[chunk] = capture_values(model, adapter, sub.clean, [read_site(d)], sub.answer_ids,
                                              sub.wrong_ids, metric)
        f = _features(d, values)
        delta = _targets(model, adapter, d, sub, ablation, f, mean) - f
        for slot, j in enumerate(features):
            shift = delta[..., j, None] * d.W_dec[j]
            with torch.no_grad(), overwrite(model, adapter, write_site(d), lambda v, s=shift: v + s.to(v.dtype)):
                totals[slot] += float(metric_values(model, sub.clean, sub.answer_ids, sub.wrong_ids, metric).sum())
    effects = totals / task.n - clean.mean()
    corrupt = _metric_over(model, task.corrupt, task, metric, batch_tokens)
    return _frame(d, effects, float(clean.mean()), corrupt, ACTIVATION, ablation, features)


def _metric_over(model, inputs: Inputs, task: TaskBatch, metric: Metric, batch_tokens: int) -> float:
    total = 0.0
    for chunk in example_chunks(task.n, task.width, batch_tokens):
        total += float(metric_values(model, inputs.rows(chunk), task.answer_ids[chunk], task.wrong_ids[chunk],
                                     metric).sum())
    return total / task.n


def _frame(d: Dictionary, effects: torch.Tensor, clean: float, corrupt: float, method: str, ablation: str,
           features: list[int] | None = None) -> pl.DataFrame:
    index = list(range(d.width)) if features is None else list(features)
    values = effects.double().tolist()
    n = len(index)
    return pl.DataFrame({
        "component": [str(ComponentKind.FEATURE)] * n, "layer": [d.layer] * n, "index": index, "effect": values,
        "effect_norm": [effect_norm(e, clean, corrupt) for e in values],
        "method": [method] * n, "ablation": [ablation] * n, "direction": ["noising"] * n,
    }, schema=NODE_SCHEMA)
