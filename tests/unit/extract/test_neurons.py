"""Neurons: LM-head decoding against a direct computation from raw parameters."""

from __future__ import annotations

import pytest
import torch

from compgraph.extract.neurons import neuron_decodings
from tests.helpers.models import CONFIGS, D, F, random_model


@pytest.mark.parametrize("name", [n for n in CONFIGS if n not in ("mixtral", "olmoe")])
def test_neuron_decoding_equals_direct_computation(name):
    model, adapter = random_model(name)
    decodings = dict(neuron_decodings(model, adapter, 1, 5))
    assert set(decodings) == ({"out", "in", "gate"} if adapter.gated else {"out", "in"})
    out = decodings["out"]
    assert out.top_ids.shape == out.bottom_ids.shape == (F, 5)
    # direct: raw parameters, no compgraph accessors
    params = dict(model.named_parameters())
    prefix = f"{adapter.layers}.1."
    out_w = params[prefix + adapter.mlp_out + ".weight"]
    out_cols = out_w if adapter.conv1d else out_w.T  # [F, D]
    embed = params[adapter.embed + ".weight"]
    head = params.get((adapter.unembed or "") + ".weight", embed)
    gain = params[adapter.final_norm + ".weight"] + adapter.norm_offset if adapter.final_norm else torch.ones(D)
    with torch.no_grad():
        logits = (out_cols * gain) @ head.T
    for neuron in (0, 7, F - 1):
        assert out.top_ids[neuron].tolist() == logits[neuron].topk(5).indices.tolist()
        assert out.bottom_ids[neuron].tolist() == logits[neuron].topk(5, largest=False).indices.tolist()
        assert torch.allclose(out.top_logits[neuron].double(), logits[neuron].topk(5).values.double(), atol=1e-4)
