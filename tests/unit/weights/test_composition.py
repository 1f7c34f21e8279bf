"""Head composition, OV -> MLP and MLP -> heads against full matrices (the oracle of :mod:`tests.helpers.weights`)."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch

from compgraph.weights import composition
from compgraph.weights.composition import factored_score, head_composition, mlp_to_head_topk, ov_to_mlp_topk
from compgraph.weights.virtual import virtual_topk
from tests.helpers.weights import (
    CONFIGS, DENSE, D, F, H, K, L, _collect, build, comp, raw_heads, raw_neurons,
)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_head_composition_equals_full_matrices(name):
    model, adapter = build(name)
    got = _collect(head_composition(model, adapter, dtype=torch.float64, baseline_samples=32))
    heads = [raw_heads(name, model, layer) for layer in range(L)]
    assert got.height == 3 * H * H * (L * (L - 1) // 2)  # every ordered pair in different layers
    lookup = {(r["kind"], r["src_layer"], r["src_index"], r["dst_layer"], r["dst_index"]): r["weight"]
              for r in got.iter_rows(named=True)}
    for l1 in range(L):
        for l2 in range(l1 + 1, L):
            Wq, Wk, Wv, Wo = heads[l2]
            for h1 in range(H):
                ov1 = heads[l1][2][h1] @ heads[l1][3][h1]
                for h2 in range(H):
                    qk2, ov2 = Wq[h2] @ Wk[h2].T, Wv[h2] @ Wo[h2]
                    want = {"q_comp": comp(ov1, qk2), "k_comp": comp(ov1, qk2.T), "v_comp": comp(ov1, ov2)}
                    for kind, value in want.items():
                        assert lookup[(kind, l1, h1, l2, h2)] == pytest.approx(value, rel=1e-6, abs=1e-12)
    assert got["baseline"].n_unique() == 1 and 0 < got["baseline"][0] < 1


def test_gqa_reader_uses_its_kv_head():
    """Zeroing KV head 1's keys in layer 2 silences q/k composition into query heads 2, 3 only."""
    model, adapter = build("llama")
    dh = D // H
    with torch.no_grad():
        model.model.layers[2].self_attn.k_proj.weight[dh:2 * dh] = 0
    got = _collect(head_composition(model, adapter, layers=[0], baseline_samples=8))
    into = got.filter(pl.col("dst_layer") == 2, pl.col("kind").is_in(["q_comp", "k_comp"]))
    silent = into.filter(pl.col("dst_index").is_in([2, 3]))
    assert silent.height == 2 * H * 2 and (silent["weight"] == 0).all()
    assert (into.filter(pl.col("dst_index").is_in([0, 1]))["weight"] > 0).all()
    v = got.filter(pl.col("dst_layer") == 2, pl.col("kind") == "v_comp")
    assert (v["weight"] > 0).all()


def test_head_composition_top_k_keeps_the_largest():
    model, adapter = build("gpt2")
    full = _collect(head_composition(model, adapter, baseline_samples=8, dtype=torch.float64))
    top = _collect(head_composition(model, adapter, top_k=3, baseline_samples=8, dtype=torch.float64))
    for (kind, layer, head), rows in top.group_by("kind", "src_layer", "src_index"):
        assert rows.height == 3
        want = full.filter(pl.col("kind") == kind, pl.col("src_layer") == layer, pl.col("src_index") == head)
        assert sorted(rows["weight"], reverse=True) == pytest.approx(want["weight"].sort(descending=True)[:3])


# ---- hand-built matrices with known answers -----------------------------------------------

def test_factored_score_known_answers():
    torch.manual_seed(0)
    d, r = 16, 4
    e = torch.eye(d, dtype=torch.float64)
    a_w, b_w = torch.randn(d, r, dtype=torch.float64), e[:, :r] @ torch.randn(r, r, dtype=torch.float64)
    a_m, b_m = e[:, r:2 * r] @ torch.randn(r, r, dtype=torch.float64), torch.randn(d, r, dtype=torch.float64)
    assert float(factored_score(a_w, b_w, a_m, b_m)) == pytest.approx(0, abs=1e-12)  # W's rows _|_ M's columns
    u, v, w = (torch.randn(d, 1, dtype=torch.float64) for _ in range(3))
    assert float(factored_score(u, v, v, w)) == pytest.approx(1)  # W = u v^T, M = v w^T: aligned rank 1
    assert float(factored_score(u, v, -3 * v, w)) == pytest.approx(1)  # scale and sign free
    full = [torch.randn(d, r, dtype=torch.float64) for _ in range(4)]
    assert float(factored_score(*full)) == pytest.approx(comp(full[0] @ full[1].T, full[2] @ full[3].T))
    orth = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64)).Q  # full-rank orthogonal maps: 1/sqrt(d)
    assert float(factored_score(orth, e, e, orth)) == pytest.approx(1 / math.sqrt(d))


def test_random_baseline_matches_closed_forms():
    d = 64
    exact_cos = math.exp(math.lgamma(d / 2) - math.lgamma((d + 1) / 2)) / math.sqrt(math.pi)  # E|cos|
    assert composition.random_baseline(d, 1, 1, samples=4096) == pytest.approx(exact_cos, rel=0.03)
    assert composition.random_baseline(d, 16, 16, samples=256) == pytest.approx(1 / math.sqrt(d), rel=0.03)


def test_moe_has_no_neuron_connections_but_heads_compose():
    model, adapter = build("mixtral")
    assert list(virtual_topk(model, adapter, K)) == []
    assert list(ov_to_mlp_topk(model, adapter, K)) == []
    assert list(mlp_to_head_topk(model, adapter, K)) == []
    assert _collect(head_composition(model, adapter, baseline_samples=8)).height == 3 * H * H * 3


# ---- heads <-> neurons -------------------------------------------------------------------

@pytest.mark.parametrize("name", DENSE)
def test_ov_to_mlp_equals_full_matrices(name):
    model, adapter = build(name)
    parallel = name == "gpt_neox"
    got = _collect(ov_to_mlp_topk(model, adapter, K, chunk=20, dtype=torch.float64, baseline_samples=8))
    heads = [raw_heads(name, model, layer) for layer in range(L)]
    neurons = [raw_neurons(name, model, layer) for layer in range(L)]
    kinds = {"in": "ov_to_mlp", "gate": "ov_to_mlp_gate"}
    same_layer = got.filter(pl.col("dst_layer") == pl.col("src_layer"))
    if parallel:
        assert same_layer.is_empty()  # a head never reaches its own layer's MLP
        assert got["src_layer"].max() == L - 2
    for l1 in range(L):
        first = l1 + 1 if parallel else l1
        if first >= L:
            continue
        for via, kind in kinds.items():
            if via not in neurons[0][1]:
                continue
            frame = got.filter(pl.col("kind") == kind, pl.col("src_layer") == l1)
            assert frame.group_by("src_index").len()["len"].to_list() == [K] * H
            for h in range(H):
                ov = heads[l1][2][h] @ heads[l1][3][h]
                scores = torch.cat([(ov @ neurons[l2][1][via].T).norm(dim=0)
                                    / (torch.linalg.matrix_norm(ov) * neurons[l2][1][via].norm(dim=1))
                                    for l2 in range(first, L)])
                top = scores.topk(K)
                rows = frame.filter(pl.col("src_index") == h)
                assert set(zip(rows["dst_layer"], rows["dst_index"])) == {
                    (first + int(c) // F, int(c) % F) for c in top.indices}
                assert sorted(rows["weight"], reverse=True) == pytest.approx(top.values.tolist(), rel=1e-6)


def test_sequential_neox_has_same_layer_ov_to_mlp_candidates():
    model, adapter = build("gpt_neox_sequential")
    got = _collect(ov_to_mlp_topk(model, adapter, F * L, baseline_samples=8))  # k = every candidate
    assert got.filter(pl.col("dst_layer") == pl.col("src_layer")).height == H * F * L


@pytest.mark.parametrize("name", DENSE)
def test_mlp_to_head_equals_full_matrices(name):
    model, adapter = build(name)
    got = _collect(mlp_to_head_topk(model, adapter, K, chunk=20, dtype=torch.float64, baseline_samples=8))
    heads = [raw_heads(name, model, layer) for layer in range(L)]
    for l1 in range(L - 1):
        writes = raw_neurons(name, model, l1)[0]
        for side, kind in (("q", "mlp_to_q"), ("k", "mlp_to_k"), ("v", "mlp_to_v")):
            mats = []
            for l2 in range(l1 + 1, L):
                Wq, Wk, Wv, Wo = heads[l2]
                mats += [{"q": Wq[h] @ Wk[h].T, "k": Wk[h] @ Wq[h].T, "v": Wv[h] @ Wo[h]}[side] for h in range(H)]
            scores = torch.stack([(writes @ m).norm(dim=1) / (writes.norm(dim=1) * torch.linalg.matrix_norm(m))
                                  for m in mats], dim=1)  # [F, H * (L - l1 - 1)]
            frame = got.filter(pl.col("kind") == kind, pl.col("src_layer") == l1)
            k = min(K, scores.shape[1])  # layer L-2 has only H later heads
            assert frame.height == F * k
            top = scores.topk(k, dim=1)
            for i in (0, 17, F - 1):
                rows = frame.filter(pl.col("src_index") == i)
                assert set(zip(rows["dst_layer"], rows["dst_index"])) == {
                    (l1 + 1 + int(c) // H, int(c) % H) for c in top.indices[i]}
                assert sorted(rows["weight"], reverse=True) == pytest.approx(top.values[i].tolist(), rel=1e-6)
