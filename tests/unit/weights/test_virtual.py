"""Virtual weights against the full neuron x neuron matrix."""

from __future__ import annotations


import polars as pl
import pytest
import torch

from compgraph.weights.virtual import virtual_topk
from tests.helpers.weights import (
    DENSE, RAW, F, K, L, build, raw_neurons,
)


# ---- virtual weights ---------------------------------------------------------------------

def _full_virtual(name, model):
    neurons = [raw_neurons(name, model, layer) for layer in range(L)]
    out = {}
    for l1 in range(L - 1):
        for via in neurons[l1][1]:
            full = torch.cat([neurons[l1][0] @ neurons[l2][1][via].T for l2 in range(l1 + 1, L)], dim=1)
            out[(l1, via)] = full  # [F, F * (L - l1 - 1)], column = (l2 - l1 - 1) * F + j
    return out


@pytest.mark.parametrize("name", DENSE)
def test_virtual_topk_equals_full_matrix(name):
    model, adapter = build(name)
    got = dict(virtual_topk(model, adapter, K, chunk=20, dtype=torch.float64))
    assert sorted(got) == list(range(L)) and got[L - 1].is_empty()
    kinds = {"in": "virtual", "gate": "virtual_gate"}
    gated = RAW[name]["gate"] is not None
    for (l1, via), full in _full_virtual(name, model).items():
        frame = got[l1].filter(pl.col("kind") == kinds[via])
        counts = frame.group_by("src_index").len()
        assert counts.height == F and (counts["len"] == K).all()  # exactly k per source
        top = full.abs().topk(K, dim=1)
        for i in (0, 11, F - 1):
            rows = frame.filter(pl.col("src_index") == i)
            want = {(l1 + 1 + int(c) // F, int(c) % F) for c in top.indices[i]}
            assert set(zip(rows["dst_layer"], rows["dst_index"])) == want
            for l2, j, value in zip(rows["dst_layer"], rows["dst_index"], rows["weight"]):
                assert value == pytest.approx(float(full[i, (l2 - l1 - 1) * F + j]), rel=1e-6)
            assert list(rows["weight"].abs()) == sorted(rows["weight"].abs(), reverse=True)
    assert set(pl.concat(got.values())["kind"]) == ({"virtual", "virtual_gate"} if gated else {"virtual"})


def test_virtual_topk_keeps_both_signs_and_bounds_memory():
    model, adapter = build("llama")
    frame = dict(virtual_topk(model, adapter, 20, layers=[0]))[0]
    assert (frame["weight"] > 0).any() and (frame["weight"] < 0).any()
    assert frame.filter(pl.col("kind") == "virtual").height == F * 20
