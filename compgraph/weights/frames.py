"""Connection kinds, the one frame every connection function returns, and a running top-k.

A connection frame has one row per (source component, target component, kind):

    kind        str      one of :class:`Kind`
    src_layer   int64    layer of the source (writer)
    src_index   int64    neuron index or query-head index of the source
    dst_layer   int64    layer of the target (reader)
    dst_index   int64    neuron index or query-head index of the target
    weight      float64  the connection's value (signed for virtual weights, a score in
                         [0, 1] for every composition kind)
    baseline    float64  the score's mean for random Gaussian factors of the same shapes
                         (null for virtual weights): ``weight - baseline`` is the excess

The connections stage turns it into ``CONNECTS`` rows (:mod:`compgraph.stages.rows`).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import torch

from compgraph import schema
from compgraph.errors import ConfigError


Kind = schema.ConnectKind
"""The ``CONNECTS.kind`` values (spelled in :mod:`compgraph.schema`)."""


NEURON, HEAD = "neuron", "head"

ENDPOINTS: dict[Kind, tuple[str, str]] = {
    Kind.VIRTUAL: (NEURON, NEURON), Kind.VIRTUAL_GATE: (NEURON, NEURON),
    Kind.Q_COMP: (HEAD, HEAD), Kind.K_COMP: (HEAD, HEAD), Kind.V_COMP: (HEAD, HEAD),
    Kind.OV_TO_MLP: (HEAD, NEURON), Kind.OV_TO_MLP_GATE: (HEAD, NEURON),
    Kind.MLP_TO_Q: (NEURON, HEAD), Kind.MLP_TO_K: (NEURON, HEAD), Kind.MLP_TO_V: (NEURON, HEAD),
}
"""(source, target) component kind of every connection kind."""

COLUMNS: dict[str, pl.DataType] = {
    "kind": pl.String, "src_layer": pl.Int64, "src_index": pl.Int64, "dst_layer": pl.Int64,
    "dst_index": pl.Int64, "weight": pl.Float64, "baseline": pl.Float64,
}


def empty() -> pl.DataFrame:
    return pl.DataFrame(schema=COLUMNS)


def _numpy(t: torch.Tensor | np.ndarray | int, n: int) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.reshape(-1).detach().cpu().numpy()
    if isinstance(t, np.ndarray):
        return t.reshape(-1)
    return np.full(n, t)


def frame(kind: Kind, src_layer, src_index, dst_layer, dst_index, weight: torch.Tensor,
          baseline: float | None = None) -> pl.DataFrame:
    """A connection frame; layer/index arguments are tensors (flattened alike) or scalars."""
    values = weight.reshape(-1).detach().double().cpu().numpy()
    n = len(values)
    return pl.DataFrame({
        "kind": pl.Series([str(kind)] * n if n else [], dtype=pl.String),
        "src_layer": _numpy(src_layer, n).astype(np.int64),
        "src_index": _numpy(src_index, n).astype(np.int64),
        "dst_layer": _numpy(dst_layer, n).astype(np.int64),
        "dst_index": _numpy(dst_index, n).astype(np.int64),
        "weight": values,
        "baseline": pl.Series([baseline] * n if n else [], dtype=pl.Float64),
    }, schema=COLUMNS)


class Scratch:
    """Reusable scratch tensors: one allocation per name instead of one per block (a fresh
    multi-MB block costs page faults and zeroing comparable to the top-k itself)."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        size = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < size or buffer.dtype != like.dtype or buffer.device != like.device:
            buffer = self._buffers[name] = torch.empty(size, dtype=like.dtype, device=like.device)
        return buffer[:size].view(shape)

    def matmul(self, name: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a @ b`` (2-D) written into the scratch tensor ``name``."""
        return torch.matmul(a, b, out=self.get(name, (a.shape[0], b.shape[1]), a))


class TopK:
    """The k entries of largest |value| per source row, over blocks of targets seen one at a
    time. Memory: [n_rows, k] whatever the number of targets; both signs are kept."""

    def __init__(self, n_rows: int, k: int, device: torch.device | str, dtype: torch.dtype) -> None:
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        self.k = k
        self.key = torch.full((n_rows, k), -1.0, device=device, dtype=dtype)  # -1: empty slot
        self.value = torch.zeros((n_rows, k), device=device, dtype=dtype)
        self.layer = torch.full((n_rows, k), -1, device=device, dtype=torch.long)
        self.index = torch.zeros((n_rows, k), device=device, dtype=torch.long)
        self.scratch = Scratch()

    def add(self, block: torch.Tensor, layer: int, rows: slice = slice(None), index_offset: int = 0) -> None:
        """Offer ``block`` [rows, targets] whose column c is target ``index_offset + c`` of ``layer``."""
        key = torch.abs(block, out=self.scratch.get("key", tuple(block.shape), block))
        kk = min(self.k, block.shape[1])
        top = key.topk(kk, dim=1, sorted=False)
        keys = torch.cat([self.key[rows], top.values], dim=1)
        values = torch.cat([self.value[rows], block.gather(1, top.indices)], dim=1)
        layers = torch.cat([self.layer[rows], torch.full_like(top.indices, layer)], dim=1)
        indices = torch.cat([self.index[rows], top.indices + index_offset], dim=1)
        best = keys.topk(self.k, dim=1, sorted=False).indices
        self.key[rows] = keys.gather(1, best)
        self.value[rows] = values.gather(1, best)
        self.layer[rows] = layers.gather(1, best)
        self.index[rows] = indices.gather(1, best)

    def frame(self, kind: Kind, src_layer: int, baseline: float | None = None) -> pl.DataFrame:
        """Rows sorted per source by descending |value|; empty slots (fewer targets than k) dropped."""
        order = self.key.argsort(dim=1, descending=True)
        key, value = self.key.gather(1, order), self.value.gather(1, order)
        layer, index = self.layer.gather(1, order), self.index.gather(1, order)
        src = torch.arange(key.shape[0], device=key.device).unsqueeze(1).expand_as(key)
        keep = layer >= 0
        return frame(kind, src_layer, src[keep], layer[keep], index[keep], value[keep], baseline)
