"""Read, differentiate and overwrite canonical sites with plain torch hooks.

A site is ``(name, layer)`` (``layer`` is None for ``embed``). Where each name lives in a
model is the adapter's ``sites`` table (:class:`~compgraph.models.adapters.base.Tap`:
module, input argument or output item, head split); this module only interprets it.
Shapes for a batch of ``b`` sequences of ``p`` tokens; ``H`` query heads, ``K`` KV heads,
``d`` d_head, all from the model config:

============  ===========================  ==================================================
site          shape                        what
============  ===========================  ==================================================
embed         [b, p, d_model]              token embeddings (no layer; GPT-2 adds positions later)
resid_pre     [b, p, d_model]              the block's input residual stream
q             [b, p, H, d]                 query projection output, bias included, before any
                                           q-norm (Gemma 3, Qwen3, OLMoE) and before rotary
k, v          [b, p, K, d]                 key / value projection outputs, likewise; query head
                                           h reads KV head h // (H // K)
pattern       [b, H, p_q, p_k]             attention weights (eager attention only; capture only)
attn_z        [b, p, H*d]                  head outputs before W_O, flat (the o input)
attn_head_z   [b, p, H, d]                 the same, per head
attn_out      [b, p, d_model]              the o projection's output, bias included (Gemma 3:
                                           before post_attention_layernorm)
resid_mid     [b, p, d_model]              the residual between attention and MLP: resid_pre +
                                           attention's contribution (BERT: LayerNorm of that);
                                           refused for parallel attention + MLP (GPT-NeoX with
                                           use_parallel_residual), where it does not exist
mlp_in        [b, p, d_model]              the MLP's input: the output of its pre-MLP norm (what a
                                           transcoder reads; BERT: resid_mid; parallel blocks: the
                                           norm of resid_pre; MoE: the sparse block's input)
mlp_pre_act   [b, p, d_mlp]                input of the MLP nonlinearity (the gate if gated)
mlp_hidden    [b, p, d_mlp]                neuron activations (the out projection's input)
mlp_out       [b, p, d_model]              the MLP's output (MoE: the whole sparse block's;
                                           Gemma 3: before post_feedforward_layernorm)
experts_in    (tokens [b*p, d_model],      MoE: what the fused experts module receives
              ids [b*p, k], weights)
resid_post    [b, p, d_model]              the block's output residual stream
============  ===========================  ==================================================

Dense-only sites (``mlp_pre_act``, ``mlp_hidden``) do not exist in MoE layers, nor
``experts_in`` in dense ones; asking for a site a family lacks is a
:class:`~compgraph.errors.HookError` (a ``ValueError``).

``capture(model, adapter, sites)`` yields ``{site: [value per forward call]}``, detached.
With ``grad=True`` the values stay in the autograd graph (frozen parameters are fine: a
captured tensor that does not require grad is made to, so the graph starts there; the
``pattern`` is the one exception, as attention has used it before the hook sees it) and
``acts.grads`` fills in during backward::

    with capture(model, adapter, [("attn_head_z", 3), ("q", 3)], grad=True) as acts:
        loss = metric(model(ids))
    loss.backward()
    acts.grads[("q", 3)][0]        # d loss / d q, [b, p, H, d]

``overwrite(model, adapter, site, fn)`` replaces the site's value by ``fn(value)`` in every
forward pass inside the context; ``fn`` gets and returns the site's shape (per head for
per-head sites; an overwrite of q, k or v on a fused QKV layout rewrites only that slice).
``resid_mid`` is written in place, since the residual branch holds the very tensor the
MLP's norm reads. When capture and overwrite hook the same module, the context entered
first runs first: a capture opened outside an overwrite sees the value before it (with
``grad=True`` on ``resid_mid``, the live tensor it keeps is the one written in place).

``skip_below(model, adapter, layer)`` runs the model from ``layer`` on: every block below
it passes its input through unchanged, so an overwrite of ``("resid_pre", layer)`` with a
value saved from an earlier run gives that run's output without computing the blocks
below again (what :func:`~compgraph.effects.patch.fan_out` does for patched passes)::

    with capture(model, adapter, [("resid_pre", 5)]) as saved:
        model(ids)
    start = saved[("resid_pre", 5)][0]
    with skip_below(model, adapter, 5), overwrite(model, adapter, ("resid_pre", 5), lambda _: start):
        model(ids)                 # layers 0-4 not run; the same logits
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from compgraph.errors import HookError
from compgraph.models.adapters.base import Adapter, QKVLayout, Tap
from compgraph.models.params import head_dims, module

Site = tuple[str, int | None]  # (site name, layer)


class Activations(dict):
    """``{site: [value per forward call]}``; with ``grad=True``, ``grads`` mirrors it.

    ``grads[site][call]`` is the value's retained ``.grad``: None until a backward pass
    reaches the value, then the sum over every pass through it (``torch.autograd.grad``
    included, as with ``Tensor.retain_grad``); for tuple-valued sites (``experts_in``) a
    tuple with None for integer elements.
    """

    @property
    def grads(self) -> dict[Site, list]:
        return {site: [_grad(value) for value in values] for site, values in self.items()}


def _grad(value):
    if isinstance(value, tuple):
        return tuple(_grad(v) for v in value)
    return value.grad if value.requires_grad else None


# --- where: module, tap, and how to cut the value -------------------------------------------

@dataclass(frozen=True)
class _Shape:
    """How a site's value is cut from the tensor the module sees, and put back."""

    heads: int | None
    d_head: int
    part: int | None
    layout: QKVLayout

    @property
    def is_view(self) -> bool:
        return self.heads is not None or self.part is not None

    def _grid(self, full: torch.Tensor) -> tuple[torch.Tensor, int]:
        """A fused QKV output as [..., 3, H, d] (gpt2) or [..., H, 3, d] (neox), and the q/k/v axis."""
        if self.layout == "gpt2":
            return full.unflatten(-1, (3, self.heads, self.d_head)), -3
        return full.unflatten(-1, (self.heads, 3, self.d_head)), -2

    def read(self, full: torch.Tensor) -> torch.Tensor:
        """The site's value: ``full`` itself when flat (or a tuple of arguments)."""
        if self.part is not None:
            grid, axis = self._grid(full)
            return grid.select(axis, self.part)
        return full if self.heads is None else full.unflatten(-1, (self.heads, self.d_head))

    def write(self, full: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """The module's tensor with the site's part replaced by ``value``."""
        want = self.read(full).shape
        if value.shape != want:
            raise HookError(f"overwrite returned shape {tuple(value.shape)}, the site has {tuple(want)}")
        if self.part is not None:
            grid, axis = self._grid(full)
            parts = list(grid.unbind(axis))
            parts[self.part] = value
            return torch.stack(parts, axis).flatten(-3)
        return value if self.heads is None else value.flatten(-2)


def _resolve(model, adapter: Adapter, site: Site) -> tuple[torch.nn.Module, Tap, _Shape]:
    name, layer = site
    tap = adapter.sites.get(name)
    if tap is None:
        raise HookError(f"site {name!r} does not exist in a {adapter.name} model; "
                         f"known: {', '.join(adapter.sites)}")
    config = model.config.get_text_config()
    if name == "resid_mid" and adapter.is_parallel(config):
        raise HookError("resid_mid does not exist with parallel attention and MLP: both read resid_pre "
                         "(their outputs are added to it together); use resid_pre, attn_out and mlp_out")
    if tap.root:
        if layer is not None:
            raise HookError(f"site {name!r} has no layer; pass ({name!r}, None)")
        path = tap.path
    elif layer is None:
        raise HookError(f"site {name!r} needs a layer")
    else:
        path = f"{adapter.layers}.{layer}" + (f".{tap.path}" if tap.path else "")
    n_heads, n_kv, d_head = head_dims(config)
    heads = {"q": n_heads, "kv": n_kv, None: None}[tap.heads]
    if tap.part is not None:  # fused layouts have as many KV heads as query heads
        heads = n_heads
    return module(model, path), tap, _Shape(heads, d_head, tap.part, adapter.qkv_layout)


# --- how: read and replace one tensor in a module call --------------------------------------

def _positions(mod: torch.nn.Module, names: tuple[str, ...]) -> tuple[int, ...]:
    """Each named argument's position in ``mod.forward``'s signature."""
    params = [p.name for p in inspect.signature(mod.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    missing = [n for n in names if n not in params]
    if missing:
        raise HookError(f"{type(mod).__name__}.forward has no argument {missing[0]!r} (has {params})")
    return tuple(params.index(n) for n in names)


def _attach(mod: torch.nn.Module, tap: Tap, on_value: Callable[[Any], Any]):
    """Call ``on_value`` with the tap's value at each call; a non-None return replaces it.

    The value is one tensor, or a tuple when ``tap.arg`` names several arguments.
    """
    if tap.side == "output":
        def post(m, args, out):
            value = _output_item(m, out, tap.item)
            new = on_value(value)
            if new is None:
                return None
            return new if tap.item is None else (*out[:tap.item], new, *out[tap.item + 1:])

        return mod.register_forward_hook(post)

    names = tap.arg if isinstance(tap.arg, tuple) else (tap.arg,)
    positions = _positions(mod, names)

    def pre(m, args, kwargs):
        values = tuple(_argument(m, args, kwargs, n, i) for n, i in zip(names, positions))
        new = on_value(values if isinstance(tap.arg, tuple) else values[0])
        if new is None:
            return None
        args, kwargs = list(args), dict(kwargs)
        for n, i, v in zip(names, positions, new if isinstance(tap.arg, tuple) else (new,)):
            if n in kwargs:
                kwargs[n] = v
            else:
                args[i] = v
        return tuple(args), kwargs

    return mod.register_forward_pre_hook(pre, with_kwargs=True)


def _argument(mod, args: tuple, kwargs: dict, name: str, position: int):
    if name in kwargs:
        return kwargs[name]
    if position < len(args):
        return args[position]
    raise HookError(f"{type(mod).__name__} was called without {name!r}")


def _output_item(mod, out, item: int | None):
    if item is None:
        if isinstance(out, tuple):
            raise HookError(f"{type(mod).__name__} returned a tuple; its tap must name an item")
        return out
    value = out[item]
    if value is None:
        raise HookError(f"{type(mod).__name__} returned None at item {item}: attention weights need "
                         f"attn_implementation='eager'")
    return value


# --- capture --------------------------------------------------------------------------------

def _detach(value):
    return tuple(v.detach() for v in value) if isinstance(value, tuple) else value.detach()


def _track(full, shape: _Shape):
    """The value to keep in grad mode, wired so that backward reaches it and fills its
    ``.grad``; and the replacement for the module's tensor (None: the module's own tensor
    is the value)."""
    if not torch.is_grad_enabled():
        raise HookError("capture(grad=True) needs autograd: run the forward outside torch.no_grad()")
    for t in full if isinstance(full, tuple) else (full,):
        if t.is_floating_point() and not t.requires_grad:  # frozen weights: start the graph here
            t.requires_grad_()
    value = shape.read(full)
    for t in value if isinstance(value, tuple) else (value,):
        if t.requires_grad:
            t.retain_grad()
    # a view is a side branch unless the module goes on with a tensor rebuilt from it
    return value, (shape.write(full, value) if shape.is_view else None)


@contextlib.contextmanager
def capture(model, adapter: Adapter, sites: list[Site], *, grad: bool = False) -> Iterator[Activations]:
    """``{site: [value per forward call]}``: detached, or with ``grad=True`` live tensors
    whose gradients a backward pass leaves in ``.grads`` (see the module docstring)."""
    acts = Activations({site: [] for site in sites})
    resolved = [(site, *_resolve(model, adapter, site)) for site in sites]
    if any(site[0] == "pattern" for site in sites):
        _require_eager(model)
    with contextlib.ExitStack() as hooks:
        for site, mod, tap, shape in resolved:
            def on_value(full, site=site, tap=tap, shape=shape):
                if not grad:  # an aliased tensor may be overwritten in place later: copy it
                    value = _detach(shape.read(full))
                    acts[site].append(value.clone() if tap.aliased else value)
                    return None
                value, replacement = _track(full, shape)
                acts[site].append(value)
                return replacement

            hooks.callback(_attach(mod, tap, on_value).remove)
        yield acts


def _require_eager(model) -> None:
    implementation = getattr(model.config, "_attn_implementation", None)
    if implementation != "eager":
        raise HookError(f"site 'pattern' needs attn_implementation='eager' (this model uses {implementation!r}): "
                         f"only eager attention returns its weights")


# --- skip ---------------------------------------------------------------------------------

def can_skip(adapter: Adapter) -> bool:
    """Whether a skipped block can return its input in place of its output: the block's
    output is its residual stream alone (``resid_post`` is the block's output, no tuple
    item) and its input is one named argument of the block (``resid_pre``)."""
    post, pre = adapter.sites.get("resid_post"), adapter.sites.get("resid_pre")
    return (post is not None and post.side == "output" and post.item is None and not post.path and not post.root
            and pre is not None and isinstance(pre.arg, str) and not pre.path and not pre.root)


@contextlib.contextmanager
def skip_below(model, adapter: Adapter, layer: int):
    """Inside the context, the blocks below ``layer`` return their input residual stream
    unchanged instead of computing (module docstring). Their ``forward`` is replaced on the
    instance (keeping its signature) and restored after (wrappers set on the instance, as
    accelerate's, included). Hooks on a skipped block itself still run, and see its input
    as its output; hooks on its submodules do not run."""
    if layer <= 0:
        yield
        return
    if not can_skip(adapter):
        raise HookError(f"blocks of a {adapter.name} model return more than the residual stream; "
                         f"they cannot be skipped")
    tap = adapter.sites["resid_pre"]
    mods = [module(model, f"{adapter.layers}.{i}") for i in range(layer)]
    saved = [m.__dict__.get("forward") for m in mods]
    try:
        for mod in mods:
            (position,) = _positions(mod, (tap.arg,))

            def passthrough(*args, _mod=mod, _position=position, **kwargs):
                return _argument(_mod, args, kwargs, tap.arg, _position)

            passthrough.__signature__ = inspect.signature(mod.forward)
            mod.forward = passthrough
        yield
    finally:
        for mod, forward in zip(mods, saved):
            if forward is None:
                mod.__dict__.pop("forward", None)
            else:
                mod.forward = forward


# --- overwrite ------------------------------------------------------------------------------

@contextlib.contextmanager
def overwrite(model, adapter: Adapter, site: Site, fn: Callable):
    """Replace the site's value by ``fn(value)`` in every forward pass inside the context.

    ``fn`` sees the site's shape (per head for per-head sites, a tuple for ``experts_in``)
    and returns the same shape.
    """
    mod, tap, shape = _resolve(model, adapter, site)
    if not tap.writable:
        raise HookError(f"site {site[0]!r} cannot be overwritten: the model does not read it back")

    def on_value(full):
        if isinstance(full, tuple):
            new = tuple(fn(full))
            if len(new) != len(full):
                raise HookError(f"overwrite returned {len(new)} values, the site has {len(full)}")
            return new
        if tap.aliased:  # the residual branch holds this tensor too: write into it
            full.copy_(shape.write(full, fn(full.clone())))
            return None
        return shape.write(full, fn(shape.read(full)))

    with contextlib.ExitStack() as hooks:
        hooks.callback(_attach(mod, tap, on_value).remove)
        yield
