"""The adapter registry: model_type -> Adapter, refusing duplicates."""

from __future__ import annotations

from compgraph.errors import RegistryError, UnsupportedArchitecture
from compgraph.models.adapters import bert, gemma3, gpt2, llama, moe, neox
from compgraph.models.adapters.base import SITE_NAMES, Adapter

_BY_TYPE: dict[str, Adapter] = {}


def register(adapter: Adapter) -> None:
    unknown = sorted(set(adapter.sites) - SITE_NAMES)
    if unknown:
        raise RegistryError(f"adapter {adapter.name!r} names unknown sites {unknown}; known: {sorted(SITE_NAMES)}")
    for model_type in adapter.model_types:
        if model_type in _BY_TYPE:
            raise RegistryError(f"model_type {model_type!r} already served by {_BY_TYPE[model_type].name!r}")
        _BY_TYPE[model_type] = adapter


for _module in (llama, gpt2, neox, gemma3, moe, bert):
    register(_module.ADAPTER)


def supported() -> list[str]:
    return sorted(_BY_TYPE)


def adapter_for(model_type: str) -> Adapter:
    try:
        return _BY_TYPE[model_type]
    except KeyError:
        raise UnsupportedArchitecture(
            f"unsupported architecture {model_type!r}; supported: {', '.join(supported())}"
        ) from None
