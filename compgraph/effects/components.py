"""Which components a model has for causal work, and where their activations live.

A component is ``Component(kind, layer, index)``:

=======  ==========================  ================================================================
kind     index                       activation (for a batch of ``b`` prompts of ``p`` tokens)
=======  ==========================  ================================================================
head     query head ``h``            ``attn_head_z[..., h, :]`` [b, p, d_head]: the head's output
                                     before W_O (its attention-weighted values), all positions
neuron   MLP hidden unit ``i``       ``mlp_hidden[..., i]`` [b, p]: the input of the out projection
                                     (act(gate)·up for gated MLPs); dense layers only
mlp      None                        ``mlp_out`` [b, p, d_model]: the whole MLP block's output (MoE:
                                     the whole sparse block, shared expert included)
attn     None                        ``attn_out`` [b, p, d_model]: the o projection's output, bias
                                     included (Gemma 3: before its post-norm)
expert   expert ``e``                its contribution to the MoE block's output: at each token,
                                     ``w_e(t) · E_e(x_t)`` when the router picked ``e`` among its
                                     top-k for token ``t`` (``w_e`` the router weight the model
                                     uses, ``E_e`` the expert's gated MLP), else 0; [b, p, d_model]
feature  dictionary feature ``j``     ``f_j`` of an SAE / transcoder, patched through the dictionary's
                                     error-preserving decomposition of the site it writes:
                                     :mod:`compgraph.dictionaries.effects` (it needs the dictionary,
                                     so it is not listed by :func:`list_components`)
=======  ==========================  ================================================================

Patching an expert replaces its contribution inside ``mlp_out``: ``mlp_out - c_e + target``,
with ``c_e`` recomputed from the routing of the very forward pass being patched (so an
expert whose router does not pick it for a token contributes 0 there, and zero-ablation
is exactly "the expert's output removed for the tokens routed to it, without re-normalising
the other router weights").

Every kind but ``expert`` is a slice of one hook site (:mod:`compgraph.models.hooks`):
:func:`site_of` names it and :class:`Unit` says which axis of the site's value indexes the
component (``None`` for whole blocks). This module only describes; patching runs live in
:mod:`compgraph.effects.activation` and :mod:`compgraph.effects.attribution`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from compgraph.errors import ConfigError
from compgraph.models import params
from compgraph.models.adapters.base import Adapter

KINDS = ("head", "neuron", "mlp", "attn", "expert")
"""Component kinds with effects; ``feature`` is reserved for dictionary features."""

_SITE = {"head": "attn_head_z", "neuron": "mlp_hidden", "mlp": "mlp_out", "attn": "attn_out", "expert": "mlp_out"}


class Component(NamedTuple):
    kind: str
    """head | neuron | mlp | attn | expert."""
    layer: int
    index: int | None
    """Head, neuron or expert index; None for whole blocks (mlp, attn)."""


@dataclass(frozen=True)
class Dims:
    """A model's sizes, as far as components go."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    d_model: int
    d_mlp: int | None
    """None for MoE models (no dense MLP neurons)."""
    n_experts: int | None
    """None for dense models."""
    parallel: bool
    """Attention and MLP read the same residual stream (GPT-NeoX ``use_parallel_residual``)."""

    @property
    def group(self) -> int:
        """Query heads per KV head."""
        return self.n_heads // self.n_kv_heads


def dims(model, adapter: Adapter) -> Dims:
    config = model.config.get_text_config()
    n_heads, n_kv, d_head = params.head_dims(config)
    d_mlp = n_experts = None
    if adapter.is_moe:
        n_experts = int(params.layer_module(model, adapter, 0, adapter.experts).gate_up_proj.shape[0])
    else:
        d_mlp = int(params.mlp_out(model, adapter, 0).shape[0])
    return Dims(n_layers=params.n_layers(model, adapter), n_heads=n_heads, n_kv_heads=n_kv, d_head=d_head,
                d_model=int(config.hidden_size), d_mlp=d_mlp, n_experts=n_experts,
                parallel=adapter.is_parallel(config))


def check_kinds(kinds, model, adapter: Adapter) -> tuple[str, ...]:
    """The kinds as a tuple, refused (ConfigError) where unknown or absent from this model."""
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    for kind in kinds:
        if kind == "feature":
            raise ConfigError("dictionary features are measured with their dictionary: "
                              "compgraph.dictionaries.effects (compgraph effects --components feature --dictionary PATH)")
        if kind not in KINDS:
            raise ConfigError(f"unknown component kind {kind!r}; known: {', '.join(KINDS)}")
        if kind == "neuron" and adapter.is_moe:
            raise ConfigError(f"a {adapter.name} model has no dense MLP neurons; use 'expert' or 'mlp'")
        if kind == "expert" and not adapter.is_moe:
            raise ConfigError(f"a {adapter.name} model has no experts (not a mixture of experts)")
    return kinds


def list_components(model, adapter: Adapter, kinds=("head",), layers=None) -> list[Component]:
    """Every component of the given kinds, layer by layer (in ``layers``, default all),
    in the order: heads, neurons, experts, attn block, mlp block of each layer."""
    kinds = check_kinds(kinds, model, adapter)
    d = dims(model, adapter)
    out: list[Component] = []
    for layer in (range(d.n_layers) if layers is None else layers):
        if "head" in kinds:
            out += [Component("head", layer, h) for h in range(d.n_heads)]
        if "neuron" in kinds:
            out += [Component("neuron", layer, i) for i in range(d.d_mlp)]
        if "expert" in kinds:
            out += [Component("expert", layer, e) for e in range(d.n_experts)]
        if "attn" in kinds:
            out.append(Component("attn", layer, None))
        if "mlp" in kinds:
            out.append(Component("mlp", layer, None))
    return out


def site_of(component: Component) -> tuple[str, int]:
    """The hook site whose value holds (or, for experts, receives) the component's activation."""
    return _SITE[component.kind], component.layer


class Unit(NamedTuple):
    """How a component sits in its site's value: ``axis`` indexes it (counted from the end:
    -2 for heads in [b, p, H, d], -1 for neurons in [b, p, d_mlp]); None = the whole value."""

    axis: int | None
    size: int | None


def unit_of(kind: str, d: Dims) -> Unit:
    if kind == "head":
        return Unit(-2, d.n_heads)
    if kind == "neuron":
        return Unit(-1, d.d_mlp)
    if kind == "expert":
        return Unit(None, d.n_experts)  # additive, not a slice: see expert_contribution
    return Unit(None, None)


def read(component: Component, site_value: torch.Tensor) -> torch.Tensor:
    """The component's activation cut from its site's value (not for experts)."""
    if component.kind == "head":
        return site_value[..., component.index, :]
    if component.kind == "neuron":
        return site_value[..., component.index]
    if component.kind in ("mlp", "attn"):
        return site_value
    raise ConfigError(f"{component.kind} activations are not a slice of a site; use expert_contribution")


def check_plan(components) -> None:
    """Refuse components patched together whose activations nest: an expert, or a neuron,
    with the mlp block of its layer; a head with the attn block of its layer (the block's
    patch would overwrite the part's)."""
    components = list(components)
    for part, whole in (("expert", "mlp"), ("neuron", "mlp"), ("head", "attn")):
        clash = sorted({c.layer for c in components if c.kind == part}
                       & {c.layer for c in components if c.kind == whole})
        if clash:
            raise ConfigError(f"a {part} and the whole {whole} block of layer {clash[0]} cannot be patched together: "
                              f"one contains the other")


# --- experts ---------------------------------------------------------------------------------

def expert_contribution(model, adapter: Adapter, layer: int, experts_in: tuple, experts: list[int]) -> torch.Tensor:
    """``[len(experts), n_tokens, d_model]``: each expert's weighted output at every token of
    the flattened batch (0 where the router did not pick it), from the ``experts_in`` site's
    value ``(tokens [n_tokens, d_model], top_k_ids [n_tokens, k], top_k_weights [n_tokens, k])``.

    Computed from the fused experts' weights (gate_up_proj [E, 2·d_ff, d_model] with the gate
    first, down_proj [E, d_model, d_ff]) and the module's activation function: the sum over
    all experts, plus the shared expert where there is one, is the block's output.
    """
    tokens, ids, weights_ = experts_in
    mod = params.layer_module(model, adapter, layer, adapter.experts)
    out = tokens.new_zeros((len(experts), *tokens.shape))
    for j, e in enumerate(experts):
        rows, slot = torch.nonzero(ids == e, as_tuple=True)
        if rows.numel() == 0:
            continue
        x = tokens[rows]
        gate, up = torch.nn.functional.linear(x, mod.gate_up_proj[e]).chunk(2, dim=-1)
        y = torch.nn.functional.linear(mod.act_fn(gate) * up, mod.down_proj[e])
        out[j].index_add_(0, rows, (y * weights_[rows, slot, None]).to(out.dtype))
    return out
