"""MoE experts: routing load, top routed tokens, decoding of the mean output direction.

For expert e of layer l, over corpus tokens (special tokens left out):
- ``routing_load``: the share of the router's top-k assignments that go to e
  (loads of one layer sum to 1).
- routed tokens: the tokens routed to e most often (``count``; ties: lower id first),
  with the mean router weight they got (``mean_act``).
- decoding ``via "out"``: the mean of e's output (before the router weight) over the
  tokens routed to it, times the final norm's gain, through the unembedding.
The expert outputs are recomputed from the canonical weights and the inputs the
experts module received, so this works for any fused-experts implementation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from compgraph.extract.decode import Decoded, decode_topk
from compgraph.models import params
from compgraph.models.adapters.base import Adapter
from compgraph.models.forward import forward_until
from compgraph.models.hooks import capture


class ExpertStats:
    """Running sums for one MoE layer (memory independent of the corpus:
    ``n_experts * (3 * n_tokens + d_model)`` numbers)."""

    def __init__(self, n_experts: int, n_tokens: int, d_model: int, device):
        self.load = torch.zeros(n_experts, dtype=torch.long, device=device)
        self.count = torch.zeros(n_experts, n_tokens, dtype=torch.long, device=device)
        self.weight = torch.zeros(n_experts, n_tokens, dtype=torch.float32, device=device)
        self.out_sum = torch.zeros(n_experts, d_model, dtype=torch.float64, device=device)

    @staticmethod
    def nbytes(n_experts: int, n_tokens: int, d_model: int) -> int:
        return n_experts * (12 * n_tokens + 8 * d_model)

    def add(self, hidden, index, gate_w, token_ids, experts: params.Experts, act) -> None:
        """hidden [t, d] (kept tokens), index / gate_w [t, top_k], token_ids [t]."""
        n_experts = self.load.shape[0]
        self.load += torch.bincount(index.reshape(-1), minlength=n_experts)
        for e in range(n_experts):
            tok, slot = (index == e).nonzero(as_tuple=True)
            if not len(tok):
                continue
            x = hidden[tok]
            y = (act(x @ experts.W_gate[e].float().T) * (x @ experts.W_up[e].float().T)) @ experts.W_down[e].float()
            self.out_sum[e] += y.sum(0, dtype=torch.float64)
            self.count[e].index_add_(0, token_ids[tok], torch.ones_like(tok))
            self.weight[e].index_add_(0, token_ids[tok], gate_w[tok, slot].float())


def layers_per_pass(n_experts: int, n_tokens: int, d_model: int, memory_gb: float) -> int:
    """How many MoE layers' accumulators fit ``memory_gb`` together (at least one)."""
    return max(1, int(memory_gb * 1e9 // ExpertStats.nbytes(max(n_experts, 1), n_tokens, d_model)))


@torch.no_grad()
def expert_stats(model, adapter: Adapter, stream, layers: range, *, n_tokens: int, special_ids: set[int],
                 batch_size: int, progress=None) -> dict[int, ExpertStats]:
    """Per layer of ``layers``, the routing statistics of its experts (one corpus pass)."""
    device = next(model.parameters()).device
    special = torch.tensor(sorted(special_ids), dtype=torch.long, device=device)
    sites = [("experts_in", layer) for layer in layers]
    canonical = {layer: params.experts(model, adapter, layer) for layer in layers}
    acts = {layer: layer_module_act(model, adapter, layer) for layer in layers}
    stats: dict[int, ExpertStats] = {}
    for batch in stream.batches(batch_size):
        flat = batch.reshape(-1).to(device)
        keep = ~torch.isin(flat, special) & (flat < n_tokens)
        with capture(model, adapter, sites) as got:
            forward_until(model, adapter, batch, layers[-1])
        for layer in layers:
            hidden, index, gate_w = got[("experts_in", layer)][0][:3]
            ex = canonical[layer]
            if layer not in stats:
                stats[layer] = ExpertStats(ex.router.shape[0], n_tokens, hidden.shape[-1], device)
            stats[layer].add(hidden[keep].float(), index[keep], gate_w[keep], flat[keep], ex, acts[layer])
        if progress is not None:
            progress()
    return stats


def routing_load(acc: ExpertStats) -> torch.Tensor:
    """[E] float64: each expert's share of the layer's top-k assignments."""
    return (acc.load.double() / acc.load.sum().clamp(min=1)).cpu()


@torch.no_grad()
def expert_decodings(model, adapter: Adapter, acc: ExpertStats, top_k: int, n_tokens: int) -> Decoded:
    """The top and bottom ``top_k`` tokens of each expert's mean output (module docstring)."""
    w_u, g_f = params.unembed(model, adapter)[:, :n_tokens], params.final_gain(model, adapter)
    routed = acc.count.sum(1)
    mean_out = (acc.out_sum / routed.clamp(min=1).unsqueeze(1)).to(w_u.dtype)
    return decode_topk(mean_out, w_u, top_k, gain=g_f)


class Routed(NamedTuple):
    """One expert's most-routed tokens (CPU)."""

    expert: int
    token: torch.Tensor
    """[m] long, most routed first."""
    count: torch.Tensor
    """[m] long: times routed to the expert."""
    mean_weight: torch.Tensor
    """[m] float64: the mean router weight the expert got on them."""


def routed_tokens(acc: ExpertStats, k: int) -> list[Routed]:
    """Per expert, the k tokens routed to it most often (ties: lower id first); experts
    never routed to are left out."""
    out = []
    for e in range(acc.count.shape[0]):
        counts = acc.count[e]
        n = min(k, int((counts > 0).sum()))
        if n == 0:
            continue
        best = counts.cpu().argsort(descending=True, stable=True)[:n]
        c = counts.cpu()[best]
        out.append(Routed(e, best, c, (acc.weight[e].cpu()[best] / c).double()))
    return out


def layer_module_act(model, adapter: Adapter, layer: int):
    """The experts' nonlinearity (the fused module's ``act_fn``)."""
    return params.layer_module(model, adapter, layer, adapter.experts).act_fn
