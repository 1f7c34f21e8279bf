"""Attribution patching and EAP-IG against the definitions, recomputed here with plain
torch hooks and autograd (:func:`tests.helpers.effects.oracle_attribution`)."""

from __future__ import annotations

import pytest
import torch

from compgraph.effects.activation import activation_patching
from compgraph.effects.attribution import attribution_patching
from tests.helpers.effects import (  # noqa: F401 (one_thread: autouse)
    batch, effects_model, layer_mod, metric, one_thread, oracle_attribution, oracle_effect, sample_components, task,
    vec,
)
from tests.helpers.models import F, H


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "gemma3_text", "mixtral"])
@pytest.mark.parametrize("method", ["attribution", "eap-ig"])
def test_attribution_equals_definition(family, method):
    model, adapter = effects_model(family)
    t = task()
    comps = [c for c in sample_components(model, adapter) if c[0] != "expert"]
    got = attribution_patching(model, adapter, batch(t), metric, components=comps, method=method, steps=3)
    want = oracle_attribution(model, adapter, comps, t, steps=3 if method == "eap-ig" else None)
    assert max(abs(w) for w in want) > 1e-6
    torch.testing.assert_close(vec(got["effect"].to_list()), vec(want),
                               rtol=1e-5, atol=1e-10)
    assert set(got["method"]) == {method} and set(got["ablation"]) == {"corrupt"}


def test_eap_ig_with_one_step_is_attribution_and_chunks_add_up():
    model, adapter = effects_model("llama")
    t = task()
    kinds = ("head", "neuron", "mlp", "attn")
    a = attribution_patching(model, adapter, batch(t), metric, kinds=kinds)
    b = attribution_patching(model, adapter, batch(t), metric, kinds=kinds, method="eap-ig", steps=1)
    c = attribution_patching(model, adapter, batch(t), metric, kinds=kinds, batch_tokens=4)  # 1 example a chunk
    assert a["effect"].to_list() == b["effect"].to_list()
    torch.testing.assert_close(vec(a["effect"].to_list()), vec(c["effect"].to_list()),
                               rtol=1e-10, atol=1e-13)


def test_expert_attribution_is_first_order_of_expert_patching():
    """Expert attribution = Σ (corrupt − clean contribution)·∂M/∂mlp_out, checked on a model
    whose metric is linear in the MoE block's output (last layer, identity final norm)."""
    model, adapter = effects_model("mixtral")
    model.model.norm = torch.nn.Identity()
    t = task()
    comps = [("expert", 1, e) for e in range(4)]
    act = activation_patching(model, adapter, batch(t), metric, components=comps)
    att = attribution_patching(model, adapter, batch(t), metric, components=comps)
    want = [oracle_effect(model, adapter, c, "corrupt", "noising", t) for c in comps]
    torch.testing.assert_close(vec(att["effect"].to_list()), vec(want),
                               rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(vec(act["effect"].to_list()), vec(want),
                               rtol=1e-9, atol=1e-12)


# --- a metric linear in the component: attribution = noising exactly -----------------------------

def test_attribution_equals_noising_when_the_metric_is_linear_in_the_component():
    """Identity final norm: the logits are linear in the last MLP's output and neurons; with the
    last MLP's out projection zeroed, linear in the last layer's head outputs too."""
    model, adapter = effects_model("llama")
    model.model.norm = torch.nn.Identity()
    t = task()
    comps = [("neuron", 1, i) for i in range(F)] + [("mlp", 1, None)]
    for ablation in ("corrupt", "zero", "mean"):
        act = activation_patching(model, adapter, batch(t), metric, components=comps, ablation=ablation)
        att = attribution_patching(model, adapter, batch(t), metric, components=comps, ablation=ablation)
        assert max(abs(x) for x in act["effect"]) > 1e-6
        torch.testing.assert_close(vec(att["effect"].to_list()), vec(act["effect"].to_list()),
                                   rtol=1e-9, atol=1e-12)
    with torch.no_grad():
        layer_mod(model, adapter, 1, adapter.mlp_out).weight.zero_()
    heads = [("head", 1, h) for h in range(H)] + [("attn", 1, None)]
    act = activation_patching(model, adapter, batch(t), metric, components=heads)
    att = attribution_patching(model, adapter, batch(t), metric, components=heads)
    assert max(abs(x) for x in act["effect"]) > 1e-6
    torch.testing.assert_close(vec(att["effect"].to_list()), vec(act["effect"].to_list()),
                               rtol=1e-9, atol=1e-12)
