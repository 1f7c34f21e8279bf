"""MoE experts: routing load and routed tokens against the router computed here."""

from __future__ import annotations

import pytest
import torch

from compgraph.data.tokens import TokenStream
from compgraph.extract.experts import expert_decodings, expert_stats, routed_tokens, routing_load
from compgraph.models import params
from compgraph.models.hooks import capture
from tests.helpers.models import V, random_model


@pytest.mark.parametrize("name", ["mixtral", "olmoe"])
def test_expert_routing_and_decoding(name):
    model, adapter = random_model(name)
    batches = [torch.randint(1, V, (2, 16))]
    stats = expert_stats(model, adapter, TokenStream.from_rows(batches[0]), range(0, 2), n_tokens=V, special_ids={0},
                         batch_size=2)
    assert sorted(stats) == [0, 1]
    for layer in (0, 1):
        load = routing_load(stats[layer])
        assert abs(float(load.sum()) - 1) < 1e-9 and len(load) == 4
        # independent routing: softmax over the router logits of the block's real input
        with torch.no_grad(), capture(model, adapter, [("experts_in", layer)]) as got:
            model(batches[0])
        hidden = got[("experts_in", layer)][0][0]
        router = params.module(model, f"{adapter.layers}.{layer}.{adapter.router}").weight
        chosen = (hidden @ router.T).softmax(-1).topk(2).indices.reshape(-1)
        assert torch.allclose(load, torch.bincount(chosen, minlength=4).double() / chosen.numel())
        decoded = expert_decodings(model, adapter, stats[layer], 3, V)
        assert decoded.top_ids.shape == (4, 3)
        routed = routed_tokens(stats[layer], 3)
        kept = batches[0].reshape(-1)
        kept = kept[kept != 0]
        for r in routed:  # the most-routed tokens, counted here from the same routing
            picked = (chosen.view(-1, 2) == r.expert).any(1)
            counts = torch.bincount(kept[picked[batches[0].reshape(-1) != 0]], minlength=V)
            assert r.count.tolist() == counts[r.token].tolist()
            assert r.count.tolist() == sorted(r.count.tolist(), reverse=True)
