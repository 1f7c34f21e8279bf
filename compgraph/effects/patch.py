"""Hooks that patch components in a batched forward pass.

A forward pass on ``c·n`` rows carries ``c`` plans at once: block ``j`` (rows
``j·n .. (j+1)·n``) is the ``n`` examples with every component of plan ``j`` patched
towards its site's target value (:func:`patch_hooks`). :func:`fan_out` runs the layers
below the lowest patched layer once, on the ``n`` base rows, and tiles the batch ``c``
times at that layer's input: nothing is patched below it, so those layers would compute
the same values ``c`` times. Given that layer's input as the base run computed it
(``start``), it does not run them at all: they are skipped
(:func:`~compgraph.models.hooks.skip_below`) and the saved input takes their place.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict

import torch

from compgraph.effects.components import Component, Dims, check_plan, expert_contribution, site_of, unit_of
from compgraph.effects.runs import device_of
from compgraph.models import params
from compgraph.models.adapters.base import Adapter
from compgraph.models.hooks import can_skip, capture, overwrite, skip_below


def _mask_view(mask: torch.Tensor, axis: int | None, ndim: int) -> torch.Tensor:
    """Per-block mask [c, size] (or [c]) shaped to broadcast against [c, n, T, ...] of ``ndim``
    dims (the site value with the block axis split off)."""
    c = mask.shape[0]
    if axis is None:
        return mask.view(c, *([1] * (ndim - 1)))
    shape = [1] * ndim
    shape[0] = c
    shape[ndim + axis] = mask.shape[1]
    return mask.view(shape)


@contextlib.contextmanager
def patch_hooks(model, adapter: Adapter, plans: list[list[Component]], n: int, target: dict, d: Dims):
    """Hooks that patch, in a forward pass on ``len(plans)·n`` rows (block j = plan j on the
    n examples), every component of plan j towards its site's ``target`` value."""
    c = len(plans)
    device = device_of(model)
    by_site: dict = defaultdict(list)
    for j, plan in enumerate(plans):
        check_plan(plan)
        for comp in plan:  # experts add to mlp_out, mlp blocks replace it: two hooks, disjoint rows
            by_site[(site_of(comp), comp.kind == "expert")].append((j, comp))
    with contextlib.ExitStack() as stack:
        for (site, expert), members in by_site.items():
            unit = unit_of(members[0][1].kind, d)
            if unit.size is None:
                mask = torch.zeros(c, dtype=torch.bool)
                for j, _ in members:
                    mask[j] = True
            else:
                mask = torch.zeros(c, unit.size, dtype=torch.bool)
                for j, comp in members:
                    mask[j, comp.index] = True
            mask = mask.to(device)
            if expert:
                layer = site[1]
                live = stack.enter_context(capture(model, adapter, [("experts_in", layer)]))
                stack.enter_context(overwrite(model, adapter, site, _expert_patch(
                    model, adapter, layer, mask, target[("experts_in", layer)], live[("experts_in", layer)], c, n)))
            else:
                stack.enter_context(overwrite(model, adapter, site, _slice_patch(mask, unit.axis, target[site], c, n)))
        yield


def _slice_patch(mask, axis, target, c, n):
    def fn(value: torch.Tensor) -> torch.Tensor:
        v = value.reshape(c, n, *value.shape[1:])
        return torch.where(_mask_view(mask, axis, v.dim()), target, v).reshape(value.shape)
    return fn


def _expert_patch(model, adapter, layer, mask, target, live: list, c, n):
    """``mlp_out`` + Σ_e mask[j, e] · (target_e − c_e), with c_e from this very pass's routing."""
    chosen = torch.nonzero(mask.any(0)).flatten().tolist()

    def fn(value: torch.Tensor) -> torch.Tensor:
        routing = live[-1]
        live.clear()
        current = expert_contribution(model, adapter, layer, routing, chosen)  # [S, c*n*T, d]
        current = current.view(len(chosen), c, n, *value.shape[1:])
        tgt = target[chosen] if target.dim() > 0 else target
        if tgt.dim() > 0:
            tgt = tgt.unsqueeze(1)  # [S, 1, n|1, T|1, d]
        weight = mask[:, chosen].T.to(value.dtype).view(len(chosen), c, 1, 1, 1)
        delta = (weight * (tgt - current)).sum(0)
        return (value.reshape(c, n, *value.shape[1:]) + delta).reshape(value.shape)
    return fn


@contextlib.contextmanager
def fan_out(model, adapter: Adapter, first_layer: int, c: int, n: int, start: torch.Tensor | None = None):
    """Run layers below ``first_layer`` once on the n base rows, then tile the batch c times
    at that layer's input (block j = rows j·n..(j+1)·n): nothing is patched below it, so those
    layers would compute the same values c times. Every tensor argument of a layer from
    ``first_layer`` on whose first dimension is n (hidden states, masks, position
    embeddings) is tiled; the rest of the model then runs on c·n rows.

    ``start``: the base run's ``resid_pre`` at ``first_layer`` ([n, T, d_model]), when the
    caller saved it. The layers below are then not run at all (where the family allows:
    :func:`~compgraph.models.hooks.can_skip`); ``start`` is their output."""
    with contextlib.ExitStack() as stack:
        if start is not None and first_layer > 0 and can_skip(adapter):
            stack.enter_context(skip_below(model, adapter, first_layer))
            given = start if c > 1 else start.clone()  # untiled, the layer gets it itself: keep the saved one intact
            stack.enter_context(overwrite(model, adapter, ("resid_pre", first_layer), lambda _: given))
        if c > 1:  # registered after the overwrite above: it tiles the saved input
            stack.enter_context(_tiled(model, adapter, first_layer, c, n))
        yield


@contextlib.contextmanager
def _tiled(model, adapter: Adapter, first_layer: int, c: int, n: int):
    """The pre-hooks of :func:`fan_out` that tile a layer's n-row arguments c times."""

    def tile(x):
        if isinstance(x, torch.Tensor) and x.dim() >= 2 and x.shape[0] == n:
            return x.repeat(c, *([1] * (x.dim() - 1)))
        if isinstance(x, tuple):
            return tuple(tile(v) for v in x)
        return x

    def hook(mod, args, kwargs):
        return tile(args), {k: tile(v) for k, v in kwargs.items()}

    handles = [params.module(model, f"{adapter.layers}.{layer}").register_forward_pre_hook(hook, with_kwargs=True)
               for layer in range(first_layer, params.n_layers(model, adapter))]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
