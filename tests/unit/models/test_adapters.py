"""The adapter registry: one adapter per model_type, duplicates and unknown sites refused."""

from __future__ import annotations

import pytest

from compgraph.errors import UnsupportedArchitecture
from compgraph.models.adapters import registry
from compgraph.models.adapters.base import Adapter


def test_registry_refuses_duplicates_and_lists_supported():
    with pytest.raises(ValueError, match="already served"):
        registry.register(Adapter(name="x", model_types=("llama",), layers="", embed="", final_norm=None,
                                  unembed=None, attn_norm=None, mlp_norm="", q="", k=None, v=None, o=""))
    with pytest.raises(UnsupportedArchitecture, match="supported: .*llama"):
        registry.adapter_for("t5")
    assert {"llama", "mistral", "qwen2", "qwen3", "gpt2", "gpt_neox", "gemma3_text", "mixtral", "qwen2_moe",
            "olmoe", "bert"} <= set(registry.supported())
