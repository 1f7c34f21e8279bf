"""Canonical weights of every family, checked against the modules' own forward passes."""

from __future__ import annotations

import pytest
import torch

from compgraph.models import params
from tests.helpers.models import CONFIGS, D, random_model


@pytest.mark.parametrize("name", list(CONFIGS))
def test_attention_weights_match_module_outputs(name):
    model, adapter = random_model(name)
    n_heads, n_kv, d_head = params.head_dims(model.config)
    attn = params.attention(model, adapter, 1)
    assert attn.W_Q.shape == (n_heads, D, d_head) and attn.W_K.shape == (n_kv, D, d_head)
    assert attn.W_O.shape == (n_heads, d_head, D)
    x = torch.randn(5, D)
    layer = params.module(model, f"{adapter.layers}.1")
    with torch.no_grad():
        if adapter.qkv_layout == "gpt2":
            q, k, v = layer.get_submodule(adapter.q)(x).split(D, dim=-1)
        elif adapter.qkv_layout == "neox":
            q, k, v = layer.get_submodule(adapter.q)(x).view(5, n_heads, 3 * d_head).chunk(3, dim=-1)
            q, k, v = (t.reshape(5, -1) for t in (q, k, v))
        else:
            q, k, v = (layer.get_submodule(p)(x) for p in (adapter.q, adapter.k, adapter.v))
        for h in range(n_heads):
            want_q = q.view(5, n_heads, d_head)[:, h]
            got_q = x @ attn.W_Q[h]
            offset = want_q - got_q  # a constant bias row is allowed; the weights must match
            assert torch.allclose(offset, offset[0].expand_as(offset), atol=1e-5), f"W_Q head {h}"
        for g in range(n_kv):
            want_v = v.view(5, n_kv, d_head)[:, g]
            got_v = x @ attn.W_V[g]
            assert torch.allclose(want_v - got_v, (want_v - got_v)[0].expand_as(want_v), atol=1e-5)
        z = torch.randn(3, n_heads * d_head)
        o = layer.get_submodule(adapter.o)
        direct = o(z) - o(torch.zeros(1, n_heads * d_head))
        canonical = sum(z[:, h * d_head:(h + 1) * d_head] @ attn.W_O[h] for h in range(n_heads))
        assert torch.allclose(direct, canonical, atol=1e-5)
