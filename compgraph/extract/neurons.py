"""MLP neurons: weight decoding through the LM head, and activation statistics.

Definitions (neuron i of layer l):
- ``DECODES_TO via "out"``: the neuron's write direction (row i of the out/down
  projection) times the final norm's gain, through the unembedding.
- ``via "in"`` / ``"gate"``: its read direction (row i of the up / gate projection)
  times the gain of the norm feeding the MLP, through the unembedding. For models
  without a separate LM head (BERT) the unembedding is the tied token embedding.
- ``act_mean`` / ``act_max``: mean and max of the neuron's activation (the input of
  the out projection: act(gate) * up for gated MLPs) over corpus tokens.
- ``act_freq``: fraction of corpus tokens on which the nonlinearity's input is > 0
  (the gate's pre-activation for gated MLPs). For ReLU and GELU/SiLU this is where
  the activation is positive and not merely a small negative tail.
- ``ACTIVATES_ON``: the tokens with the largest mean activation (``mean_act``,
  ``max_act``, ``count`` = occurrences in the corpus).
Special tokens (BOS, EOS, padding) are left out of the statistics.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np
import polars as pl
import torch

from compgraph import schema
from compgraph.extract.decode import Decoded, decode_topk
from compgraph.models import weights
from compgraph.models.adapters.base import Adapter
from compgraph.models.hooks import capture


class Frames(NamedTuple):
    nodes: pl.DataFrame
    edges: pl.DataFrame


def decoded_edges(src_uids: list[str], decoded: Decoded, token_uid_prefix: str, via: str) -> pl.DataFrame:
    """DECODES_TO rows: rank 0.. for the top-k, -1.. for the bottom-k (see schema)."""
    n, k = decoded.top_ids.shape
    parts = []
    for ids, logits, sign in ((decoded.top_ids, decoded.top_logits, 1), (decoded.bottom_ids, decoded.bottom_logits, -1)):
        ranks = torch.arange(k).repeat(n) if sign > 0 else -(torch.arange(k) + 1).repeat(n)
        parts.append(pl.DataFrame({
            "src": pl.Series(src_uids).gather(np.repeat(np.arange(n), k)),
            "token": ids.reshape(-1).cpu().numpy(),
            "logit": logits.reshape(-1).float().cpu().numpy(),
            "rank": ranks.numpy(),
            "sign": sign,
        }))
    frame = pl.concat(parts)
    return frame.select(
        "src", pl.format("{}:{}", pl.lit(token_uid_prefix), pl.col("token")).alias("dst"),
        pl.lit(via).alias("via"), pl.col("logit").cast(pl.Float64), pl.col("rank").cast(pl.Int64),
        pl.col("sign").cast(pl.Int64),
    )


def neuron_uids(model_name: str, layer: int, d_mlp: int) -> list[str]:
    return [schema.neuron_uid(model_name, layer, i) for i in range(d_mlp)]


@torch.no_grad()
def decode_layer(model, adapter: Adapter, layer: int, *, model_name: str, tokenizer_id: str,
                 top_k: int) -> Frames:
    """Neuron nodes (identity only) and their DECODES_TO rows for every ``via``."""
    w_u = weights.unembed(model, adapter)
    out = weights.mlp_out(model, adapter, layer)
    uids = neuron_uids(model_name, layer, out.shape[0])
    reads = [("out", out, weights.final_gain(model, adapter)),
             ("in", weights.mlp_in(model, adapter, layer), weights.norm_gain(model, adapter, adapter.mlp_norm, layer))]
    gate = weights.mlp_gate(model, adapter, layer)
    if gate is not None:
        reads.append(("gate", gate, reads[1][2]))
    edges = pl.concat([decoded_edges(uids, decode_topk(w, w_u, top_k, gain=g), tokenizer_id, via)
                       for via, w, g in reads])
    nodes = pl.DataFrame({
        "uid": uids, schema.Prop.MODEL: model_name, schema.Prop.LAYER: layer,
        schema.Prop.INDEX: list(range(len(uids))),
    })
    return Frames(nodes, edges)


class _Acc(NamedTuple):
    total: torch.Tensor  # [d_mlp]
    maximum: torch.Tensor
    active: torch.Tensor
    by_token: torch.Tensor  # [n_tracked_tokens, d_mlp] sum of activations
    by_token_max: torch.Tensor


@torch.no_grad()
def activation_stats(model, adapter: Adapter, batches: list[torch.Tensor], *, model_name: str,
                     tokenizer_id: str, top_k: int, special_ids: set[int], max_tracked_tokens: int = 8192,
                     progress=None) -> Iterator[tuple[int, Frames]]:
    """Per layer: neuron rows with act_mean / act_max / act_freq, and ACTIVATES_ON rows."""
    layers = weights.n_layers(model, adapter)
    device = next(model.parameters()).device
    all_ids = torch.cat([b.reshape(-1) for b in batches])
    special = torch.tensor(sorted(special_ids), dtype=all_ids.dtype)
    keep = ~torch.isin(all_ids, special)
    ids_kept, counts = all_ids[keep].unique(return_counts=True)
    tracked = ids_kept[counts.argsort(descending=True)[:max_tracked_tokens]].sort().values
    slot = torch.full((int(all_ids.max()) + 1,), -1, dtype=torch.long)
    slot[tracked] = torch.arange(len(tracked))
    token_counts = torch.zeros(len(tracked), dtype=torch.long)
    accs: list[_Acc] = []
    n_tokens = 0
    sites = [(name, layer) for layer in range(layers) for name in ("mlp_hidden", "mlp_pre_act")]
    for batch in batches:
        flat_ids = batch.reshape(-1)
        mask = ~torch.isin(flat_ids, special)
        slots = slot[flat_ids[mask]]
        tracked_mask = slots >= 0
        token_counts.index_add_(0, slots[tracked_mask], torch.ones(int(tracked_mask.sum()), dtype=torch.long))
        n_tokens += int(mask.sum())
        with capture(model, adapter, sites) as got:
            model(batch.to(device))
        for layer in range(layers):
            hidden = got[("mlp_hidden", layer)][0].reshape(-1, got[("mlp_hidden", layer)][0].shape[-1])
            pre = got[("mlp_pre_act", layer)][0].reshape(hidden.shape)
            act = hidden[mask.to(hidden.device)].float().cpu()
            positive = (pre[mask.to(pre.device)] > 0).sum(0).cpu()
            if len(accs) <= layer:
                d = act.shape[1]
                accs.append(_Acc(torch.zeros(d), torch.full((d,), -torch.inf), torch.zeros(d, dtype=torch.long),
                                 torch.zeros(len(tracked), d), torch.full((len(tracked), d), -torch.inf)))
            acc = accs[layer]
            acc.total.add_(act.sum(0))
            torch.maximum(acc.maximum, act.max(0).values, out=acc.maximum)
            acc.active.add_(positive)
            sel = act[tracked_mask]
            acc.by_token.index_add_(0, slots[tracked_mask], sel)
            index = slots[tracked_mask].unsqueeze(1).expand(-1, sel.shape[1])
            acc.by_token_max.scatter_reduce_(0, index, sel, "amax")
        if progress is not None:
            progress()
    for layer, acc in enumerate(accs):
        uids = neuron_uids(model_name, layer, acc.total.shape[0])
        nodes = pl.DataFrame({
            "uid": uids, schema.Prop.MODEL: model_name, schema.Prop.LAYER: layer,
            schema.Prop.INDEX: list(range(len(uids))),
            schema.Prop.ACT_MEAN: (acc.total / max(n_tokens, 1)).double().numpy(),
            schema.Prop.ACT_MAX: acc.maximum.double().numpy(),
            schema.Prop.ACT_FREQ: (acc.active.double() / max(n_tokens, 1)).numpy(),
        })
        yield layer, Frames(nodes, top_tokens(uids, acc, tracked, token_counts, tokenizer_id, top_k))


def top_tokens(uids: list[str], acc: _Acc, tracked: torch.Tensor, counts: torch.Tensor,
               tokenizer_id: str, k: int) -> pl.DataFrame:
    seen = counts > 0
    mean = torch.where(seen.unsqueeze(1), acc.by_token / counts.clamp(min=1).unsqueeze(1), -torch.inf)
    k = min(k, int(seen.sum()))
    if k == 0:
        return pl.DataFrame(schema={"src": pl.String, "dst": pl.String, "mean_act": pl.Float64,
                                    "max_act": pl.Float64, "count": pl.Int64})
    best = mean.topk(k, dim=0)  # [k, d_mlp]
    rows = best.indices.T.reshape(-1)  # per neuron, k token slots
    neuron = torch.arange(len(uids)).repeat_interleave(k)
    return pl.DataFrame({
        "src": pl.Series(uids).gather(neuron.numpy()),
        "dst": [f"{tokenizer_id}:{t}" for t in tracked[rows].tolist()],
        "mean_act": best.values.T.reshape(-1).double().numpy(),
        "max_act": acc.by_token_max[rows, neuron].double().numpy(),
        "count": counts[rows].numpy(),
    })
