"""Virtual weights: neuron -> neuron connections through the residual stream.

For neuron i of layer l1 and neuron j of layer l2 > l1 (row-vector convention)::

    virtual(i -> j)      = w_out_i . C diag(g) w_in_j
    virtual_gate(i -> j) = w_out_i . C diag(g) w_gate_j

``w_out_i`` is row i of the out/down projection (times Gemma 3's post-feedforward norm
gain), ``w_in_j`` / ``w_gate_j`` row j of the up / gate projection, ``g`` the gain of the
norm feeding layer l2's MLP and ``C = I - 11^T/d`` the LayerNorm centring (identity for
RMSNorm); see :mod:`compgraph.weights.folding` (the input-dependent 1/rms scale and the
biases are left out). ``virtual`` is the OpenAI neuron-viewer connection weight (the
write of i read by j's input direction); for gated MLPs (SwiGLU / GeGLU: act(gate x) *
(up x)) the up projection is j's input direction and ``virtual_gate`` gives the gate
read as a second kind. The values are signed and not normalised.

Per source neuron the k targets of largest |weight| over all later layers are kept (both
signs). The neurons x neurons matrix is never formed: one [chunk, d_mlp] block of one
layer pair is live at a time, plus the running top-k [d_mlp, k].
"""

from __future__ import annotations

from typing import Iterable, Iterator

import polars as pl
import torch

from compgraph.models import params
from compgraph.models.adapters.base import Adapter
from compgraph.weights import factors
from compgraph.weights.frames import Kind, Scratch, TopK, empty

KINDS: dict[str, Kind] = {"in": Kind.VIRTUAL, "gate": Kind.VIRTUAL_GATE}
"""Neuron read projection -> connection kind."""


@torch.no_grad()
def virtual_topk(model, adapter: Adapter, k: int, *, layers: Iterable[int] | None = None, chunk: int = 4096,
                 dtype: torch.dtype = torch.float32) -> Iterator[tuple[int, pl.DataFrame]]:
    """Per source layer: ``(layer, frame)`` with the top-k virtual weights of each of its neurons.

    ``layers`` restricts the source layers (a shard); the last layer yields an empty frame
    (no later neuron to read it). MoE models have no dense neurons and yield nothing.
    Frame columns: see :mod:`compgraph.weights.frames` (``baseline`` is null).
    """
    if not factors.has_neurons(adapter):
        return
    n_layers = params.n_layers(model, adapter)
    for src in range(n_layers) if layers is None else layers:
        if src >= n_layers - 1:
            yield src, empty()
            continue
        writes = factors.neuron_writes(model, adapter, src, dtype)
        n = writes.shape[0]
        tops: dict[str, TopK] = {}
        scratch = Scratch()
        for dst in range(src + 1, n_layers):
            for via, reads in factors.neuron_reads(model, adapter, dst, dtype).items():
                top = tops.setdefault(via, TopK(n, k, writes.device, dtype))
                reads_t = reads.T  # BLAS reads the transpose in place
                for start in range(0, n, chunk):
                    rows = slice(start, start + chunk)
                    top.add(scratch.matmul("block", writes[rows], reads_t), dst, rows)
        yield src, pl.concat([top.frame(KINDS[via], src) for via, top in tops.items()])
