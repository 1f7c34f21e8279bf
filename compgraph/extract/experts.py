"""MoE experts: routing load, top routed tokens, decoding of the mean output direction.

For expert e of layer l, over corpus tokens (special tokens left out):
- ``routing_load``: the share of the router's top-k assignments that go to e
  (loads of one layer sum to 1).
- ``ACTIVATES_ON``: the tokens routed to e most often (``count``), with the mean
  router weight they got (``mean_act``).
- ``DECODES_TO via "out"``: the mean of e's output (before the router weight) over the
  tokens routed to it, times the final norm's gain, through the unembedding.
The expert outputs are recomputed from the canonical weights and the inputs the
experts module received, so this works for any fused-experts implementation.
"""

from __future__ import annotations

from typing import Iterator

import polars as pl
import torch

from compgraph import schema
from compgraph.extract.decode import decode_topk
from compgraph.extract.neurons import Frames, decoded_edges
from compgraph.models import weights
from compgraph.models.adapters.base import Adapter
from compgraph.models.hooks import capture


@torch.no_grad()
def expert_frames(model, adapter: Adapter, batches: list[torch.Tensor], *, model_name: str,
                  tokenizer_id: str, top_k: int, special_ids: set[int]) -> Iterator[tuple[int, Frames, pl.DataFrame]]:
    """Per MoE layer: (layer, Frames(expert nodes, DECODES_TO rows), ACTIVATES_ON rows)."""
    n_layers = weights.n_layers(model, adapter)
    device = next(model.parameters()).device
    sites = [("experts_in", layer) for layer in range(n_layers)]
    per_layer: dict[int, list[tuple[torch.Tensor, ...]]] = {layer: [] for layer in range(n_layers)}
    special = torch.tensor(sorted(special_ids))
    for batch in batches:
        keep = ~torch.isin(batch.reshape(-1), special)
        with capture(model, adapter, sites) as got:
            model(batch.to(device))
        for layer in range(n_layers):
            hidden, index, weight = got[("experts_in", layer)][0][:3]
            per_layer[layer].append((hidden[keep.to(hidden.device)].float(), index[keep.to(index.device)],
                                     weight[keep.to(weight.device)].float(), batch.reshape(-1)[keep]))
    w_u, g_f = weights.unembed(model, adapter), weights.final_gain(model, adapter)
    for layer, parts in per_layer.items():
        hidden = torch.cat([p[0] for p in parts])
        index = torch.cat([p[1] for p in parts])
        gate_w = torch.cat([p[2] for p in parts])
        token_ids = torch.cat([p[3] for p in parts])
        ex = weights.experts(model, adapter, layer)
        act = layer_module_act(model, adapter, layer)
        n_experts = ex.router.shape[0]
        uids = [schema.expert_uid(model_name, layer, e) for e in range(n_experts)]
        load = torch.bincount(index.reshape(-1).cpu(), minlength=n_experts).double()
        mean_out = torch.zeros(n_experts, hidden.shape[1], device=hidden.device)
        rows = []
        for e in range(n_experts):
            tok, slot = (index == e).nonzero(as_tuple=True)
            if len(tok):
                x = hidden[tok]
                y = (act(x @ ex.W_gate[e].float().T) * (x @ ex.W_up[e].float().T)) @ ex.W_down[e].float()
                mean_out[e] = y.mean(0)
                ids, counts = token_ids[tok.cpu()].unique(return_counts=True)
                best = counts.argsort(descending=True)[:top_k]
                weight_sum = torch.zeros(len(ids)).index_add_(
                    0, torch.searchsorted(ids, token_ids[tok.cpu()]), gate_w[tok, slot].cpu())
                rows.append(pl.DataFrame({
                    "src": uids[e], "dst": [f"{tokenizer_id}:{int(t)}" for t in ids[best]],
                    "count": counts[best].numpy(), "mean_act": (weight_sum[best] / counts[best]).double().numpy(),
                }))
        decoded = decode_topk(mean_out.to(w_u.dtype), w_u, top_k, gain=g_f)
        nodes = pl.DataFrame({
            "uid": uids, schema.Prop.MODEL: model_name, schema.Prop.LAYER: layer,
            schema.Prop.EXPERT: list(range(n_experts)),
            schema.Prop.ROUTING_LOAD: (load / load.sum().clamp(min=1)).numpy(),
        })
        activates = pl.concat(rows) if rows else pl.DataFrame(
            schema={"src": pl.String, "dst": pl.String, "count": pl.Int64, "mean_act": pl.Float64})
        yield layer, Frames(nodes, decoded_edges(uids, decoded, tokenizer_id, "out")), activates


def layer_module_act(model, adapter: Adapter, layer: int):
    """The experts' nonlinearity (the fused module's ``act_fn``)."""
    return weights.layer_module(model, adapter, layer, adapter.experts).act_fn
