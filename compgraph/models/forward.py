"""Forward passes that stop early: statistics of layers 0..L need no layer after L."""

from __future__ import annotations

import contextlib

import torch

from compgraph.models.adapters.base import Adapter
from compgraph.models.params import module


class _Stop(Exception):
    """Raised by the hook on the last needed block; caught by :func:`forward_until`."""


@contextlib.contextmanager
def _stop_after(model, adapter: Adapter, layer: int):
    def stop(mod, args, out):
        raise _Stop

    handle = module(model, f"{adapter.layers}.{layer}").register_forward_hook(stop)
    try:
        yield
    finally:
        handle.remove()


def forward_until(model, adapter: Adapter, ids: torch.Tensor, last_layer: int | None) -> None:
    """Run ``model`` on ``ids`` up to block ``last_layer`` (None: the whole model). Use with
    capture hooks: what they collect up to that block is all that is computed."""
    device = next(model.parameters()).device
    if last_layer is None:
        model(ids.to(device))
        return
    with _stop_after(model, adapter, last_layer), contextlib.suppress(_Stop):
        model(ids.to(device))
