"""Read and overwrite canonical sites with plain torch hooks.

Sites (per layer unless noted):

=============  ===============================================  ==========
site           what                                             hooked at
=============  ===============================================  ==========
resid_pre      the block's input residual stream                block input
resid_post     the block's output residual stream               block output
attn_z         per-head attention outputs, before W_O           o input
attn_out       attention output added to the residual           o output
mlp_pre_act    input of the MLP nonlinearity (the gate if any)  gate/in output
mlp_hidden     neuron activations (input of the out projection) out input
mlp_out        MLP output added to the residual                 out output
experts_in     MoE: (tokens, top-k expert ids, top-k weights)   experts input
embed          token embeddings (no layer)                      embed output
=============  ===============================================  ==========

``capture`` collects detached copies; ``overwrite`` replaces a site's value with
``fn(value)`` for the duration of the context (activation patching, ablation).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch

from compgraph.models.adapters.base import Adapter
from compgraph.models.weights import layer_module, module

Site = tuple[str, int | None]  # (site name, layer)


def _where(model, adapter: Adapter, name: str, layer: int | None) -> tuple[torch.nn.Module, str]:
    """The module and side ("input" / "output") for a site."""
    if name == "embed":
        return module(model, adapter.embed), "output"
    if layer is None:
        raise ValueError(f"site {name!r} needs a layer")
    table = {
        "resid_pre": (f"{adapter.layers}.{layer}", "input", True),
        "resid_post": (f"{adapter.layers}.{layer}", "output", True),
        "attn_z": (adapter.o, "input", False),
        "attn_out": (adapter.o, "output", False),
        "mlp_pre_act": (adapter.mlp_gate or adapter.mlp_in, "output", False),
        "mlp_hidden": (adapter.mlp_out, "input", False),
        "mlp_out": (adapter.mlp_out, "output", False),
        "experts_in": (adapter.experts, "input", False),
    }
    if name not in table:
        raise ValueError(f"unknown site {name!r}; known: embed, {', '.join(table)}")
    path, side, absolute = table[name]
    if path is None:
        raise ValueError(f"site {name!r} does not exist in a {adapter.name} layer")
    return (module(model, path) if absolute else layer_module(model, adapter, layer, path)), side


def _first(value):
    return value[0] if isinstance(value, tuple) else value


@contextlib.contextmanager
def capture(model, adapter: Adapter, sites: list[Site]) -> Iterator[dict[Site, list]]:
    """``{site: [value per forward call]}``; ``experts_in`` values are the argument tuples."""
    store: dict[Site, list] = {site: [] for site in sites}
    handles = []
    for site in sites:
        mod, side = _where(model, adapter, *site)
        keep_all = site[0] == "experts_in"

        def grab(value, site=site, keep_all=keep_all):
            if keep_all:
                store[site].append(tuple(v.detach() for v in value))
            else:
                store[site].append(_first(value).detach())

        if side == "input":
            handles.append(mod.register_forward_pre_hook(
                lambda m, args, kwargs, grab=grab: grab(args if args else tuple(kwargs.values())),
                with_kwargs=True))
        else:
            handles.append(mod.register_forward_hook(lambda m, args, out, grab=grab: grab(out)))
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def overwrite(model, adapter: Adapter, site: Site, fn: Callable[[torch.Tensor], torch.Tensor]):
    """Replace the site's tensor by ``fn(tensor)`` in every forward pass inside the context."""
    mod, side = _where(model, adapter, *site)
    if side == "input":
        def pre(m, args, kwargs):
            if args:
                return (fn(args[0]), *args[1:]), kwargs
            key = next(iter(kwargs))
            return args, {**kwargs, key: fn(kwargs[key])}

        handle = mod.register_forward_pre_hook(pre, with_kwargs=True)
    else:
        def post(m, args, out):
            if isinstance(out, tuple):
                return (fn(out[0]), *out[1:])
            return fn(out)

        handle = mod.register_forward_hook(post)
    try:
        yield
    finally:
        handle.remove()
