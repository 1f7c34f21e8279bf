"""The connections stage through the runner, on the in-memory store: exact edge counts
per kind, and stored weights equal to a direct computation from raw parameters."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from compgraph import schema
from compgraph.ingest import IngestConfig
from compgraph.ingest import ingest
from compgraph.models import loading
from compgraph.store.memory import MemoryStore

from tests.helpers.models import TINY

K = 3


@pytest.fixture(scope="module")
def stored(tiny_dir):
    loaded = loading.load(str(tiny_dir), device="cpu")
    store = MemoryStore()
    report = ingest(store, IngestConfig.of(str(tiny_dir), name="tiny", extract=("connections",), device="cpu",
                                        connections_k=K), loaded=loaded)
    assert report.stage("connections").shards_written == ["nodes", "L0", "L1"]
    return loaded, store


def test_every_kind_has_the_exact_number_of_edges(stored):
    _, store = stored
    per_kind = dict(store.edges(schema.CONNECTS).group_by("kind").len().iter_rows())
    heads, neurons = TINY["heads"], TINY["d_mlp"]
    assert per_kind == {
        "q_comp": heads * heads, "k_comp": heads * heads, "v_comp": heads * heads,  # every L0 -> L1 pair
        "ov_to_mlp": 2 * heads * K, "ov_to_mlp_gate": 2 * heads * K,  # L0 and L1 heads, same layer allowed
        "virtual": neurons * K, "virtual_gate": neurons * K, "mlp_to_q": neurons * K, "mlp_to_k": neurons * K,
        "mlp_to_v": neurons * K,
    }
    assert store.nodes(schema.NEURON).height == 2 * neurons and store.nodes(schema.HEAD).height == 2 * heads


def test_virtual_weights_equal_a_direct_computation(stored):
    loaded, store = stored
    params = dict(loaded.model.named_parameters())
    with torch.no_grad():
        w_out = params["model.layers.0.mlp.down_proj.weight"].T  # [d_mlp, d_model]: rows are write directions
        gain = params["model.layers.1.post_attention_layernorm.weight"]
        w_up = params["model.layers.1.mlp.up_proj.weight"]  # [d_mlp, d_model]: rows are read directions
        direct = (w_out * gain) @ w_up.T  # [src, dst]
    edges = store.edges(schema.CONNECTS, where={"kind": "virtual"})
    for src in (0, 17, TINY["d_mlp"] - 1):
        rows = edges.filter(pl.col("src") == schema.neuron_uid("tiny", 0, src))
        want = direct[src].abs().topk(K).indices.tolist()
        got = [int(d.rsplit("N", 1)[1]) for d in rows.sort("weight", descending=False)["dst"].to_list()]
        assert sorted(got) == sorted(want)
        for dst, weight in zip(rows["dst"].to_list(), rows["weight"].to_list()):
            assert weight == pytest.approx(float(direct[src, int(dst.rsplit("N", 1)[1])]), rel=1e-4, abs=1e-6)
