"""Dictionary features as components: their decodings and activation statistics.

For feature j of dictionary D reading site s of layer l, with ``f_j(x)`` its activation
(:meth:`~compgraph.dictionaries.base.Dictionary.encode` of the site's value x at one token):

- decoding ``via "out"``: decoder row ``W_dec[j]`` times the final norm's gain, through the
  unembedding (top and bottom k tokens, :mod:`compgraph.extract.decode`); only for
  dictionaries whose output is a residual-stream write of width d_model
  (:func:`~compgraph.dictionaries.catalog.decodable`).
- ``act_mean``, ``act_max``, ``act_freq`` (density: the fraction of tokens with f_j ≠ 0)
  and the top tokens, as defined in :mod:`compgraph.extract.stats`, with f_j as the
  activation and |f_j| as the indicator (``topk_raw`` keeps negative values), the top
  tokens ranked among those seen at least :data:`ACTIVATES_MIN_COUNT` times (a sparse
  feature's mean over one or two occurrences is one activation, not a preference).
"""

from __future__ import annotations

import torch

from compgraph.dictionaries.base import Dictionary
from compgraph.extract.decode import Decoded, decode_topk
from compgraph.extract.stats import Reader, Streamed, stream_stats
from compgraph.models import params
from compgraph.models.adapters.base import Adapter

ACTIVATES_MIN_COUNT = 5
"""Top tokens are ranked only among tokens the corpus pass saw at least this many times."""


@torch.no_grad()
def feature_decodings(model, adapter: Adapter, d: Dictionary, top_k: int, n_tokens: int) -> Decoded:
    """The top and bottom ``top_k`` tokens of every decoder row of ``d`` (module docstring)."""
    w_u = params.unembed(model, adapter)[:, :n_tokens]
    rows = d.W_dec.to(device=w_u.device, dtype=w_u.dtype)
    return decode_topk(rows, w_u, top_k, gain=params.final_gain(model, adapter))


def feature_reader(dicts: list[Dictionary]) -> Reader:
    """Per dictionary i, (activation, indicator) = (f, |f|) of its site's value over tokens."""
    def read(got: dict) -> dict:
        out = {}
        for i, d in enumerate(dicts):
            x = got[(d.site, d.layer)][0]
            f = d.encode(x.reshape(-1, x.shape[-1]))
            out[i] = (f, f.abs())  # active where f != 0 (topk_raw keeps negative values)
        return out

    return read


def feature_stats(model, adapter: Adapter, stream, dicts: list[Dictionary], *, n_tokens: int, special_ids: set[int],
                  tracked_limit: int, batch_size: int, progress=None) -> Streamed:
    """The statistics of every feature of ``dicts`` (keyed by the dictionary's position), from
    one corpus pass that stops after the last layer any of them reads (the dictionaries'
    tensors on the model's device)."""
    sites = sorted({(d.site, d.layer) for d in dicts}, key=lambda s: (s[1] if s[1] is not None else -1, s[0]))
    last = max(d.layer if d.layer is not None else 0 for d in dicts)
    return stream_stats(model, adapter, stream, sites, last, feature_reader(dicts), n_tokens=n_tokens,
                        special_ids=special_ids, tracked_limit=tracked_limit, batch_size=batch_size,
                        progress=progress)
