"""A forward pass that stops early computes the same values as the whole pass, up to its layer."""

from __future__ import annotations

import torch

from compgraph.models.forward import forward_until
from compgraph.models.hooks import capture
from tests.helpers.models import V, random_model


def test_forward_until_stops_after_the_layer_with_the_same_values():
    model, adapter = random_model("llama")
    ids = torch.randint(1, V, (2, 6), generator=torch.Generator().manual_seed(0))
    sites = [("resid_post", 0), ("resid_post", 1)]
    with torch.no_grad(), capture(model, adapter, sites) as full:
        forward_until(model, adapter, ids, None)
    with torch.no_grad(), capture(model, adapter, sites) as early:
        forward_until(model, adapter, ids, 0)
    assert torch.equal(early[("resid_post", 0)][0], full[("resid_post", 0)][0])
    assert early[("resid_post", 1)] == []  # layer 1 never ran
