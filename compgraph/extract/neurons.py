"""MLP neurons: weight decoding through the LM head, and activation statistics.

Definitions (neuron i of layer l):
- decoding ``via "out"``: the neuron's write direction (row i of the out/down projection)
  times the final norm's gain, through the unembedding (:mod:`compgraph.extract.decode`).
- ``via "in"`` / ``"gate"``: its read direction (row i of the up / gate projection)
  times the gain of the norm feeding the MLP, through the unembedding. For models
  without a separate LM head (BERT) the unembedding is the tied token embedding.
- ``act_mean`` / ``act_max``: mean and max of the neuron's activation (the input of
  the out projection: act(gate) * up for gated MLPs) over corpus tokens.
- ``act_freq``: fraction of corpus tokens on which the nonlinearity's input is > 0
  (the gate's pre-activation for gated MLPs). For ReLU and GELU/SiLU this is where
  the activation is positive and not merely a small negative tail.
- top tokens: among the corpus's ``tracked_tokens`` most frequent tokens, the k with the
  largest mean activation (:mod:`compgraph.extract.stats`).
Special tokens (BOS, EOS, padding) are left out of the statistics.

Memory of the statistics is independent of the corpus length: per layer
``2 * tracked_tokens * d_mlp`` floats of accumulators, layers grouped so a group fits a
memory budget (:func:`~compgraph.extract.stats.layers_per_pass`); each group is one pass
over the corpus that stops after the group's last layer.
"""

from __future__ import annotations

import torch

from compgraph.extract.decode import Decoded, decode_topk
from compgraph.extract.stats import Reader, Streamed, stream_stats
from compgraph.models import params
from compgraph.models.adapters.base import Adapter


@torch.no_grad()
def neuron_decodings(model, adapter: Adapter, layer: int, top_k: int, n_tokens: int | None = None,
                     vias: tuple[str, ...] | None = None) -> list[tuple[str, Decoded]]:
    """``[(via, decoded)]`` for ``out``, ``in`` and (gated MLPs) ``gate`` (those of ``vias``,
    when given): the top and bottom ``top_k`` tokens of every neuron of ``layer``, over the
    first ``n_tokens`` columns of the unembedding (default: all)."""
    w_u = params.unembed(model, adapter)[:, :n_tokens]
    reads = [("out", params.mlp_out(model, adapter, layer), params.final_gain(model, adapter)),
             ("in", params.mlp_in(model, adapter, layer), params.norm_gain(model, adapter, adapter.mlp_norm, layer))]
    gate = params.mlp_gate(model, adapter, layer)
    if gate is not None:
        reads.append(("gate", gate, reads[1][2]))
    return [(via, decode_topk(w, w_u, top_k, gain=g)) for via, w, g in reads if vias is None or via in vias]


def neuron_reader(layers: range) -> Reader:
    """Per layer, (activation, indicator) = (``mlp_hidden``, ``mlp_pre_act``) over tokens."""
    def read(got: dict) -> dict:
        out = {}
        for layer in layers:
            hidden = got[("mlp_hidden", layer)][0]
            hidden = hidden.reshape(-1, hidden.shape[-1])
            out[layer] = (hidden, got[("mlp_pre_act", layer)][0].reshape(hidden.shape))
        return out

    return read


def neuron_stats(model, adapter: Adapter, stream, layers: range, *, n_tokens: int, special_ids: set[int],
                 tracked_limit: int, batch_size: int, progress=None, compute_dtype=None) -> Streamed:
    """The statistics of every neuron of ``layers`` (keyed by layer), from one pass over the
    corpus that stops after the last of them (forward under ``compute_dtype``: see
    :func:`compgraph.extract.stats.stream_stats`)."""
    sites = [(name, layer) for layer in layers for name in ("mlp_hidden", "mlp_pre_act")]
    return stream_stats(model, adapter, stream, sites, layers[-1], neuron_reader(layers), n_tokens=n_tokens,
                        special_ids=special_ids, tracked_limit=tracked_limit, batch_size=batch_size,
                        progress=progress, compute_dtype=compute_dtype)
