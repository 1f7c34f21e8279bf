"""Transcoder feature → feature CONNECTS from hand-built transcoders with known weights and
a known pre-MLP norm gain: exactly the expected edges, directly and through the stage."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from compgraph import schema
from compgraph.ingest import IngestConfig
from compgraph.dictionaries.base import Dictionary
from compgraph.dictionaries.connections import connection_topk, reaches
from compgraph.dictionaries.saelens import save_saelens
from compgraph.ingest import ingest
from compgraph.models import loading
from compgraph.stages.rows import transcoder_rows
from compgraph.store.memory import MemoryStore

D = 32
A = [[1, 0, 2], [0, -3, 1], [2, 1, 0], [1, 1, -4]]  # W_dec of layer 0: rows = features, first 3 dims
B = [[1, 0, -1, 2, 0], [0, 2, 1, 0, -1], [3, 0, 0, 1, 5]]  # W_enc of layer 1: first 3 dims x 5 features
GAIN = [1.0, 2.0, 3.0]  # layer 1's post_attention_layernorm gain on the first 3 dims (the rest: 0.5)
K = 2


def transcoder(layer: int, W_enc: torch.Tensor, W_dec: torch.Tensor) -> Dictionary:
    return Dictionary(kind="transcoder", site="mlp_in", layer=layer, activation="topk", k=1, W_enc=W_enc,
                      b_enc=torch.zeros(W_enc.shape[1]), W_dec=W_dec, b_dec=torch.zeros(W_dec.shape[1]),
                      output_site="mlp_out", output_layer=layer)


def pad(rows: list[list[int]], shape: tuple[int, int]) -> torch.Tensor:
    out = torch.zeros(shape)
    out[: len(rows), : len(rows[0])] = torch.tensor(rows, dtype=torch.float32)
    return out


def pair() -> tuple[Dictionary, Dictionary]:
    first = transcoder(0, torch.randn(D, len(A), generator=torch.Generator().manual_seed(1)), pad(A, (len(A), D)))
    second = transcoder(1, pad(B, (D, len(B[0]))), torch.randn(len(B[0]), D, generator=torch.Generator().manual_seed(2)))
    return first, second


def expected() -> dict[tuple[int, int], float]:
    """Top-K |weight| per source of W = A diag(GAIN) B, in plain Python."""
    out = {}
    for i, row in enumerate(A):
        weights = [sum(row[d] * GAIN[d] * B[d][j] for d in range(3)) for j in range(len(B[0]))]
        ranked = sorted(range(len(weights)), key=lambda j: -abs(weights[j]))
        assert abs(weights[ranked[K - 1]]) != abs(weights[ranked[K]]), "the example must have no tie at the cut"
        out |= {(i, j): weights[j] for j in ranked[:K] if weights[j] != 0}
    return out


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    loaded = loading.load(str(tiny_dir), device="cpu")
    with torch.no_grad():
        norm = loaded.model.model.layers[1].post_attention_layernorm.weight
        norm.fill_(0.5)
        norm[:3] = torch.tensor(GAIN)
    return loaded


def as_dict(rows: pl.DataFrame, src_uid: str, dst_uid: str) -> dict[tuple[int, int], float]:
    out = {}
    for src, dst, weight in rows.select("src", "dst", "weight").rows():
        i = int(src.removeprefix(f"{src_uid}/F"))
        j = int(dst.removeprefix(f"{dst_uid}/F"))
        out[(i, j)] = weight
    return out


def test_weights_are_decoder_rows_dot_gain_folded_encoder_columns(loaded):
    first, second = pair()
    targets = [("T0", first), ("T1", second)]
    top = connection_topk(loaded.model, loaded.adapter, first, [t for _, t in targets], K)
    rows, reached = transcoder_rows("T0", first, top, targets)
    assert reached == {"T1"} and set(rows["kind"].to_list()) == {"transcoder"}
    assert as_dict(rows, "T0", "T1") == expected()
    assert connection_topk(loaded.model, loaded.adapter, second, [first], K) is None
    back, reached = transcoder_rows("T1", second, None, [("T0", first)])
    assert back.height == 0 and reached == set()


def test_residual_order():
    first, second = pair()
    assert reaches(first, second, parallel=False) and not reaches(second, first, parallel=False)
    assert not reaches(first, first, parallel=False)  # mlp_in@0 is read before mlp_out@0 is written
    resid = Dictionary(kind="transcoder", site="resid_mid", layer=0, activation="relu", W_enc=torch.zeros(D, 2),
                       b_enc=torch.zeros(2), W_dec=torch.zeros(2, D), b_dec=torch.zeros(D), output_site="attn_out",
                       output_layer=0)
    assert reaches(resid, resid, parallel=False) and not reaches(resid, resid, parallel=True)
    assert reaches(resid, first, parallel=False) and not reaches(resid, first, parallel=True)


def test_the_stage_writes_exactly_the_expected_edges(loaded, tiny_dir, tmp_path):
    first, second = pair()
    paths = [save_saelens(first, tmp_path / "tc0"), save_saelens(second, tmp_path / "tc1")]
    store = MemoryStore()
    report = ingest(store, IngestConfig.of(str(tiny_dir), name="tiny", extract=("features",),
                                        dictionaries=tuple(map(str, paths)), device="cpu", seq_len=16,
                                        max_tokens=256, connections_k=K), loaded=loaded)
    assert [s.status for s in report.stages] == ["complete"] * 3
    uid0, uid1 = (schema.dictionary_uid("tiny", n, "mlp_in", layer) for n, layer in (("tc0", 0), ("tc1", 1)))
    rows = store.edges(schema.CONNECTS)
    assert set(rows["src"].str.extract(r"^(.*)/F\d+$").to_list()) == {uid0}
    assert as_dict(rows, uid0, uid1) == expected()
    assert store.nodes(schema.FEATURE, where={"dictionary": uid1}).height == len(B[0])
