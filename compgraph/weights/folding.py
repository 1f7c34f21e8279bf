"""Norms folded into the weights that read (or write) through them.

A read through a norm with gain ``g`` over ``d = d_model`` features sees

    LayerNorm:  y = g * (x - mean(x)) / std(x)   ->   y @ W = (1/std(x)) * x @ C @ diag(g) @ W
    RMSNorm:    y = g * x / rms(x)               ->   y @ W = (1/rms(x)) * x @ diag(g) @ W

with ``C = I - 1 1^T / d`` the centring projection (row-vector convention, as in
:mod:`compgraph.models.params`). The *folded read* of a read matrix ``W`` [d_model, n] is
``C @ diag(g) @ W`` (LayerNorm) or ``diag(g) @ W`` (RMSNorm): gain first, then centring of
each read direction. The scale ``1/std(x)`` (``1/rms(x)``) depends on the input and is left
out, as are all biases: weights-based connections compare directions. Gemma's
``norm_offset`` (gain = weight + 1) is applied by :func:`compgraph.models.params.norm_gain`.

A norm on a sublayer's *output* (Gemma 3's sandwich norms ``post_attention_layernorm`` /
``post_feedforward_layernorm``) folds into the write side the same way: the folded write
of a write matrix ``W`` [n, d_model] is ``W @ C @ diag(g)`` (centring, then gain; RMSNorm:
no centring). QK-norm (Qwen3, Gemma 3: ``q_norm`` / ``k_norm``, a norm over ``d_head``
after the projection) folds as ``W_Q @ diag(g_q)``.

Post-norm encoders (BERT: ``adapter.attn_norm is None``) have no norm directly before
attention in the adapter: their attention reads are not folded; their MLP reads fold
``attention.output.LayerNorm`` like any ``mlp_norm``.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

from compgraph.models import params
from compgraph.models.adapters.base import Adapter

Site = Literal["attn", "mlp"]

WRITE_NORMS: dict[str, dict[Site, str]] = {
    "gemma3": {"attn": "post_attention_layernorm", "mlp": "post_feedforward_layernorm"},
}
"""Norms applied to a sublayer's output before the residual add, by adapter name.
(In the Llama layout ``post_attention_layernorm`` is the MLP's *input* norm, so this must be
per family; it belongs in the Adapter once the adapter grows the fields.)"""

QK_NORMS: tuple[str, str] = ("self_attn.q_norm", "self_attn.k_norm")
"""Per-head query / key norms, relative to a layer, used when the layer has them."""


class Fold(NamedTuple):
    """A norm reduced to what survives folding."""

    gain: torch.Tensor | None
    """The effective gain (offset applied), or None for a unit gain."""
    center: bool
    """True for LayerNorm: the mean over the normalised dimension is removed."""


IDENTITY = Fold(None, False)


def is_layernorm(module: torch.nn.Module) -> bool:
    """LayerNorm (centres) vs RMSNorm (does not): the one place this is decided.

    ``torch.nn.LayerNorm`` and anything with a bias parameter centre; every other norm is
    taken as RMSNorm (``LlamaRMSNorm``, ``Gemma3RMSNorm``, ``T5LayerNorm``-style classes,
    whatever their names say).
    """
    if isinstance(module, torch.nn.LayerNorm):
        return True
    return isinstance(getattr(module, "bias", None), torch.Tensor)


def _layer_module(model, adapter: Adapter, layer: int, path: str) -> torch.nn.Module | None:
    try:
        return params.layer_module(model, adapter, layer, path)
    except AttributeError:
        return None


def norm_fold(model, adapter: Adapter, layer: int, path: str | None) -> Fold:
    """The fold of the norm at ``path`` (relative to ``layer``); IDENTITY when there is none."""
    if path is None:
        return IDENTITY
    module = _layer_module(model, adapter, layer, path)
    if module is None:
        return IDENTITY
    gain = params.norm_gain(model, adapter, path, layer)
    return Fold(None if gain is None else gain.detach(), is_layernorm(module))


def read_fold(model, adapter: Adapter, layer: int, site: Site) -> Fold:
    """The norm that the layer's attention (``attn``) or MLP (``mlp``) reads through."""
    return norm_fold(model, adapter, layer, adapter.attn_norm if site == "attn" else adapter.mlp_norm)


def write_fold(model, adapter: Adapter, layer: int, site: Site) -> Fold:
    """The norm on the layer's attention or MLP output, if the family has one (Gemma 3)."""
    return norm_fold(model, adapter, layer, WRITE_NORMS.get(adapter.name, {}).get(site))


def qk_folds(model, adapter: Adapter, layer: int) -> tuple[Fold, Fold]:
    """(query, key) folds over d_head; IDENTITY where the model has no QK-norm."""
    if adapter.qkv_layout != "separate":
        return IDENTITY, IDENTITY
    return tuple(norm_fold(model, adapter, layer, path) for path in QK_NORMS)  # type: ignore[return-value]


def _fold(weight: torch.Tensor, fold: Fold, dim: int, *, read: bool) -> torch.Tensor:
    dim = dim % weight.ndim
    shape = [1] * weight.ndim
    shape[dim] = weight.shape[dim]
    gain = None if fold.gain is None else fold.gain.to(weight.dtype).reshape(shape)
    if read and gain is not None:
        weight = weight * gain
    if fold.center:
        weight = weight - weight.mean(dim=dim, keepdim=True)
    if not read and gain is not None:
        weight = weight * gain
    return weight


def fold_read(weight: torch.Tensor, fold: Fold, dim: int) -> torch.Tensor:
    """``C diag(g) W`` along ``dim`` (the normalised dimension): gain, then centring."""
    return _fold(weight, fold, dim, read=True)


def fold_write(weight: torch.Tensor, fold: Fold, dim: int) -> torch.Tensor:
    """``W C diag(g)`` along ``dim``: centring, then gain."""
    return _fold(weight, fold, dim, read=False)


def parallel_residual(model) -> bool:
    """Attention and MLP of one block read the same residual (GPT-NeoX / Pythia default).

    Then a head's output never reaches the MLP of its own layer.
    """
    return bool(getattr(model.config, "use_parallel_residual", False))
