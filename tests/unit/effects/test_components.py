"""Components: sizes, listing order, slicing, nesting checks, and an expert's contribution
recomputed in plain torch from the router and expert weights."""

from __future__ import annotations

import pytest
import torch

from compgraph.effects.components import (
    Component, check_kinds, check_plan, dims, expert_contribution, list_components, read, site_of, unit_of,
)
from compgraph.errors import ConfigError
from tests.helpers.models import D, F, H, L, random_model


def test_dims_of_a_dense_and_a_moe_model():
    model, adapter = random_model("llama")
    d = dims(model, adapter)
    assert (d.n_layers, d.n_heads, d.n_kv_heads, d.d_head, d.d_model, d.d_mlp, d.n_experts) == (L, H, 2, D // H, D, F, None)
    assert d.group == 2 and not d.parallel
    moe = dims(*random_model("mixtral"))
    assert (moe.d_mlp, moe.n_experts) == (None, 4)
    assert dims(*random_model("gpt_neox")).parallel


def test_list_components_order_per_layer():
    model, adapter = random_model("llama")
    listed = list_components(model, adapter, kinds=("mlp", "head", "attn", "neuron"), layers=[1])
    assert listed == ([Component("head", 1, h) for h in range(H)] + [Component("neuron", 1, i) for i in range(F)]
                      + [Component("attn", 1, None), Component("mlp", 1, None)])
    assert len(list_components(model, adapter)) == L * H


@pytest.mark.parametrize(("family", "kind", "message"), [
    ("llama", "feature", "measured with their dictionary"),
    ("llama", "block", "unknown component kind 'block'"),
    ("mixtral", "neuron", "no dense MLP neurons"),
    ("llama", "expert", "no experts"),
])
def test_check_kinds_refuses(family, kind, message):
    model, adapter = random_model(family)
    with pytest.raises(ConfigError, match=message):
        check_kinds(kind, model, adapter)


def test_read_slices_the_site_value_and_units_say_which_axis():
    model, adapter = random_model("llama")
    d = dims(model, adapter)
    z = torch.arange(2 * 3 * H * 5).reshape(2, 3, H, 5)
    assert torch.equal(read(Component("head", 0, 2), z), z[:, :, 2, :])
    hidden = torch.arange(2 * 3 * F).reshape(2, 3, F)
    assert torch.equal(read(Component("neuron", 0, 7), hidden), hidden[..., 7])
    assert read(Component("mlp", 0, None), hidden) is hidden
    with pytest.raises(ConfigError):
        read(Component("expert", 0, 1), hidden)
    assert unit_of("head", d) == (-2, H) and unit_of("neuron", d) == (-1, F) and unit_of("attn", d) == (None, None)
    assert site_of(Component("head", 1, 0))[1] == 1


def test_check_plan_refuses_nested_parts_of_one_layer_only():
    check_plan([Component("head", 0, 1), Component("attn", 1, None), Component("neuron", 1, 2)])
    with pytest.raises(ConfigError, match="a head and the whole attn block of layer 1"):
        check_plan([Component("head", 1, 1), Component("attn", 1, None)])
    with pytest.raises(ConfigError, match="a neuron and the whole mlp block of layer 0"):
        check_plan([Component("neuron", 0, 1), Component("mlp", 0, None)])


def test_expert_contributions_are_router_weighted_expert_outputs_summing_to_the_block():
    model, adapter = random_model("mixtral")
    block = model.model.layers[0].mlp
    torch.manual_seed(1)
    x = torch.randn(7, D)
    with torch.no_grad():
        probs = torch.softmax(x @ block.gate.weight.T, dim=-1)
        weights, ids = probs.topk(2, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        got = expert_contribution(model, adapter, 0, (x, ids, weights), [0, 1, 2, 3])
        expected = torch.zeros(4, 7, D)
        for e in range(4):
            gate_up, down = block.experts.gate_up_proj[e], block.experts.down_proj[e]
            for t in range(7):
                picked = (ids[t] == e).nonzero()
                if len(picked):
                    gate, up = (gate_up @ x[t]).chunk(2)
                    expected[e, t] = weights[t, picked[0, 0]] * (down @ (torch.nn.functional.silu(gate) * up))
        assert torch.allclose(got, expected, atol=1e-6)
        out = block(x[None])
        out = out[0] if isinstance(out, tuple) else out
        assert torch.allclose(got.sum(0), out[0], atol=1e-5)
        # a subset in any order: the same rows
        assert torch.allclose(expert_contribution(model, adapter, 0, (x, ids, weights), [3, 1]), expected[[3, 1]])
