"""Attribution patching and EAP-IG: every component's effect from gradients.

- **attribution patching** (``method="attribution"``): Σ over positions (and the
  activation's own dimensions) of (target − clean activation) · ∂M/∂activation on the clean
  run, i.e. mean over examples of Σ_t Δa_t · ∂m_i/∂a_t: the first-order estimate of the
  noising effect (:mod:`compgraph.effects.measure`), in metric units. The target is the
  corrupt value (or, with an ablation, the ablation's value; denoising: the clean value,
  gradient on the corrupt run). Every component's score comes from one forward and one
  backward pass per example chunk.
- **EAP-IG** (``method="eap-ig"``, Hanna et al. 2024; noising with corrupt values only):
  the same, with ∂M/∂activation replaced by its mean over ``steps`` = m runs whose token
  embeddings (the ``embed`` site: the embedding module's output, before GPT-2's position
  embeddings are added, which are the same in both runs) are interpolated, run k (k = 1..m)
  receiving ``(1 − k/m)·embed(corrupt) + (k/m)·embed(clean)``; the activation difference is
  still the one between the real corrupt and clean runs. This is the right-endpoint
  Riemann sum of the paper's formula (k = 1..m: the last run is the clean run itself, so
  ``steps=1`` is plain attribution patching). (The reference implementation sums k = 0..m-1.)
"""

from __future__ import annotations

import contextlib
from collections import defaultdict

import polars as pl
import torch

from compgraph.data.tasks import Inputs, TaskBatch
from compgraph.effects.activation import resolve_components
from compgraph.effects.components import Component, Dims, dims, expert_contribution, site_of
from compgraph.effects.measure import DEFAULT_BATCH_TOKENS, EAP_IG, GRADIENT_METHODS, Metric, check, node_frame
from compgraph.effects.runs import Baselines, derangement, example_chunks, forward_logits, site_means, sites_of, \
    targets
from compgraph.errors import ConfigError
from compgraph.models import params
from compgraph.models.adapters.base import Adapter
from compgraph.models.hooks import capture, overwrite


def _score_site(components_at_site: list[Component], delta: torch.Tensor, grad: torch.Tensor | None,
                d: Dims) -> list[float]:
    """Σ over examples, positions and the component's own dims of delta · grad, per component."""
    if grad is None:
        return [0.0] * len(components_at_site)
    product = (delta.double() * grad.double())
    kind = components_at_site[0].kind
    if kind == "head":
        per = product.sum(dim=(0, 1, 3))
        return [float(per[c.index]) for c in components_at_site]
    if kind == "neuron":
        per = product.sum(dim=(0, 1))
        return [float(per[c.index]) for c in components_at_site]
    return [float(product.sum())] * len(components_at_site)


def _gradients(model, adapter: Adapter, inputs: Inputs, sites, answer_ids, wrong_ids, metric: Metric,
               embed: torch.Tensor | None = None) -> tuple[dict, dict, torch.Tensor]:
    """One forward + backward: ``{site: ∂(Σ_examples m)/∂value}``, ``{site: value}`` (detached;
    ``experts_in`` as every expert's contribution) and the per-example metric. ``embed``
    replaces the token embeddings (the ``embed`` site) when given."""
    grad_sites = [s for s in sites if s[0] != "experts_in"]
    plain_sites = [s for s in sites if s[0] == "experts_in"]
    with torch.enable_grad(), contextlib.ExitStack() as stack:
        if embed is not None:
            stack.enter_context(overwrite(model, adapter, ("embed", None), lambda _: embed))
        plain = stack.enter_context(capture(model, adapter, plain_sites))
        acts = stack.enter_context(capture(model, adapter, grad_sites, grad=True))
        logits = forward_logits(model, inputs)
        values = metric(logits, answer_ids.to(logits.device), wrong_ids.to(logits.device))
        tensors = [acts[s][0] for s in grad_sites]
        grads = torch.autograd.grad(values.sum(), tensors, allow_unused=True)
    seen = {s: acts[s][0].detach() for s in grad_sites}
    b, width = inputs.ids.shape
    for site in plain_sites:
        n_experts = int(params.layer_module(model, adapter, site[1], adapter.experts).gate_up_proj.shape[0])
        with torch.no_grad():
            seen[site] = expert_contribution(model, adapter, site[1], plain[site][0], list(range(n_experts))) \
                .unflatten(1, (b, width))
    return dict(zip(grad_sites, grads)), seen, values.detach().double().cpu()


def attribution_patching(model, adapter: Adapter, task: TaskBatch, metric: Metric, *, components=None,
                         kinds=("head",), method: str = "attribution", steps: int = 5, ablation: str = "corrupt",
                         direction: str = "noising", seed: int = 0,
                         batch_tokens: int = DEFAULT_BATCH_TOKENS) -> pl.DataFrame:
    """First-order effects of every component from gradients (``method`` ``attribution``, or
    ``eap-ig`` with ``steps`` interpolation steps); columns of :data:`NODE_SCHEMA`.

    Runs per chunk of examples: the target run (corrupt; none for zero / mean) and one
    forward + backward on the base run (``steps`` of them for eap-ig, plus the clean run
    whose activations the differences start from)."""
    if method not in GRADIENT_METHODS:
        raise ConfigError(f"attribution_patching computes 'attribution' or 'eap-ig', not {method!r}")
    check(ablation, direction, method)
    if steps < 1:
        raise ConfigError("steps must be at least 1")
    comps = resolve_components(model, adapter, components, kinds)
    d = dims(model, adapter)
    sites = sites_of(comps)
    means = site_means(model, adapter, task, sites, batch_tokens) if ablation == "mean" else None
    perm = derangement(task.n, seed) if ablation == "resample" else None
    by_site = defaultdict(list)
    for i, c in enumerate(comps):
        by_site[(site_of(c), c.kind == "expert")].append(i)
    scores = [0.0] * len(comps)
    baselines = Baselines(task.n)
    integrated = method == EAP_IG
    base_name = "corrupt" if direction == "denoising" else "clean"
    # a backward pass keeps every layer's activations: chunk examples to a quarter of the budget
    for chunk in example_chunks(task.n, task.width, max(1, batch_tokens // 4)):
        run_sites = sites + [("embed", None)] if integrated else sites
        t = targets(model, adapter, task, chunk, run_sites, ablation, direction, means, perm, metric,
                    with_base=integrated)
        baselines.add(chunk, t.metrics)
        answer, wrong = task.answer_ids[chunk], task.wrong_ids[chunk]
        if integrated:
            grads = _integrated(model, adapter, t.base, sites, answer, wrong, metric, steps,
                                t.base_values[("embed", None)], t.target[("embed", None)])
            base_values = t.base_values
        else:
            grads, base_values, m_base = _gradients(model, adapter, t.base, sites, answer, wrong, metric)
            baselines.add(chunk, {base_name: m_base})
        for (site, is_expert), idx in by_site.items():
            members = [comps[i] for i in idx]
            if is_expert:
                key = ("experts_in", site[1])
                delta_all = t.target[key] - base_values[key]  # [E, n, T, d]
                for i, comp in zip(idx, members):
                    scores[i] += _score_site([comp], delta_all[comp.index], grads.get(site), d)[0]
            else:
                delta = (t.target[site] - base_values[site]).expand_as(base_values[site])
                for i, s in zip(idx, _score_site(members, delta, grads.get(site), d)):
                    scores[i] += s
    return node_frame(comps, [s / task.n for s in scores], baselines.finish(model, task, metric, batch_tokens),
                      method, ablation, direction)


def _integrated(model, adapter, inputs: Inputs, sites, answer, wrong, metric, steps: int, e_clean, e_corrupt) -> dict:
    """Gradients averaged over ``steps`` runs on interpolated embeddings (see the module doc)."""
    total: dict = {}
    for k in range(1, steps + 1):
        alpha = k / steps
        embed = (1 - alpha) * e_corrupt + alpha * e_clean
        grads, _, _ = _gradients(model, adapter, inputs, sites, answer, wrong, metric, embed=embed)
        for site, g in grads.items():
            if g is not None:
                total[site] = total.get(site, 0) + g
    return {site: g / steps for site, g in total.items()}
