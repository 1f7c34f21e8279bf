"""Canonical weights of any adapted model, in one orientation.

Row-vector convention (activations are rows, ``x @ W``):

- ``unembed`` [d_model, vocab]; ``final_gain`` [d_model] or None.
- ``mlp_in`` / ``mlp_gate`` [d_mlp, d_model]: row i is neuron i's read direction.
- ``mlp_out`` [d_mlp, d_model]: row i is neuron i's write direction.
- ``attention``: W_Q [n_heads, d_model, d_head], W_K / W_V [n_kv_heads, d_model, d_head],
  W_O [n_heads, d_head, d_model]; query head h uses KV head h // (n_heads // n_kv_heads).
- ``experts``: W_gate, W_up [E, d_ff, d_model], W_down [E, d_ff, d_model].
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from compgraph.models.adapters.base import Adapter


def module(root: torch.nn.Module, path: str) -> torch.nn.Module:
    return root.get_submodule(path)


def layer_module(model: torch.nn.Module, adapter: Adapter, layer: int, path: str) -> torch.nn.Module:
    return module(model, f"{adapter.layers}.{layer}.{path}")


def n_layers(model: torch.nn.Module, adapter: Adapter) -> int:
    return len(module(model, adapter.layers))


def _linear_rows(mod: torch.nn.Module, conv1d: bool) -> torch.Tensor:
    """[out, in] whatever the storage."""
    weight = mod.weight
    return weight.T if conv1d else weight


def embedding(model, adapter: Adapter) -> torch.Tensor:
    """[vocab, d_model]."""
    return module(model, adapter.embed).weight


def unembed(model, adapter: Adapter) -> torch.Tensor:
    """[d_model, vocab]: the LM head, or the tied embedding for models without one."""
    if adapter.unembed is None:
        return embedding(model, adapter).T
    try:
        head = module(model, adapter.unembed)
    except AttributeError:  # a base model without its head: decode through the embedding
        return embedding(model, adapter).T
    return head.weight.T


def norm_gain(model, adapter: Adapter, path: str | None, layer: int | None = None) -> torch.Tensor | None:
    if path is None:
        return None
    mod = module(model, path) if layer is None else layer_module(model, adapter, layer, path)
    weight = getattr(mod, "weight", None)
    return None if weight is None else weight + adapter.norm_offset


def final_gain(model, adapter: Adapter) -> torch.Tensor | None:
    return norm_gain(model, adapter, adapter.final_norm)


def mlp_out(model, adapter: Adapter, layer: int) -> torch.Tensor:
    """[d_mlp, d_model]."""
    return _linear_rows(layer_module(model, adapter, layer, adapter.mlp_out), adapter.conv1d).T


def mlp_in(model, adapter: Adapter, layer: int) -> torch.Tensor:
    """[d_mlp, d_model]."""
    return _linear_rows(layer_module(model, adapter, layer, adapter.mlp_in), adapter.conv1d)


def mlp_gate(model, adapter: Adapter, layer: int) -> torch.Tensor | None:
    if adapter.mlp_gate is None:
        return None
    return _linear_rows(layer_module(model, adapter, layer, adapter.mlp_gate), adapter.conv1d)


class Attention(NamedTuple):
    W_Q: torch.Tensor
    W_K: torch.Tensor
    W_V: torch.Tensor
    W_O: torch.Tensor

    @property
    def group(self) -> int:
        """Query heads per KV head."""
        return self.W_Q.shape[0] // self.W_K.shape[0]


def head_dims(config) -> tuple[int, int, int]:
    """(n_heads, n_kv_heads, d_head) from a transformers config."""
    n_heads = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    d_head = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    return n_heads, n_kv, d_head


def attention(model, adapter: Adapter, layer: int) -> Attention:
    n_heads, n_kv, d_head = head_dims(model.config)
    rows = lambda path: _linear_rows(layer_module(model, adapter, layer, path), adapter.conv1d)  # noqa: E731
    if adapter.qkv_layout == "separate":
        q, k, v = rows(adapter.q), rows(adapter.k), rows(adapter.v)
    elif adapter.qkv_layout == "gpt2":
        q, k, v = rows(adapter.q).split(n_heads * d_head, dim=0)
    else:  # neox: per head [q; k; v] blocks of d_head rows
        fused = rows(adapter.q).reshape(n_heads, 3, d_head, -1)
        q, k, v = (fused[:, i].reshape(n_heads * d_head, -1) for i in range(3))
    d_model = q.shape[1]
    o = rows(adapter.o)  # [d_model, n_heads * d_head]
    return Attention(
        W_Q=q.reshape(n_heads, d_head, d_model).transpose(1, 2),
        W_K=k.reshape(n_kv, d_head, d_model).transpose(1, 2),
        W_V=v.reshape(n_kv, d_head, d_model).transpose(1, 2),
        W_O=o.T.reshape(n_heads, d_head, d_model),
    )


class Experts(NamedTuple):
    W_gate: torch.Tensor
    W_up: torch.Tensor
    W_down: torch.Tensor
    router: torch.Tensor  # [E, d_model]


def experts(model, adapter: Adapter, layer: int) -> Experts:
    fused = layer_module(model, adapter, layer, adapter.experts)
    gate, up = fused.gate_up_proj.chunk(2, dim=1)  # [E, d_ff, d]
    down = fused.down_proj.transpose(1, 2)  # [E, d, d_ff] -> [E, d_ff, d]
    router = layer_module(model, adapter, layer, adapter.router).weight
    return Experts(gate, up, down, router)
