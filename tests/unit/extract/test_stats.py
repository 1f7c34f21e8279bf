"""Activation statistics (act_mean, act_max, act_freq, top tokens): exact answers on hand-built
tensors, and the neuron statistics of a tiny model against activations read here with plain
torch hooks."""

from __future__ import annotations

import pytest
import torch

from compgraph.data.tokens import TokenStream
from compgraph.extract.neurons import neuron_stats
from compgraph.extract.stats import LayerStats, layers_per_pass, top_tokens, tracked_tokens, unit_stats
from tests.helpers.models import F, V, random_model


def test_layer_stats_by_hand():
    """Five tokens, two units; token 2 is special (left out); tokens 0 and 3 are tracked slot 0
    (id 7), token 4 slot 1 (id 9), token 1 untracked."""
    tracked = torch.tensor([7, 9])
    acc = LayerStats(2, tracked, "cpu")
    hidden = torch.tensor([[1.0, -2.0], [3.0, 0.5], [100.0, 100.0], [-1.0, 4.0], [2.0, 0.0]])
    pre = torch.tensor([[1.0, -1.0], [1.0, 1.0], [1.0, 1.0], [-1.0, 1.0], [1.0, 0.0]])
    keep = torch.tensor([True, True, False, True, True])
    slots = torch.tensor([0, -1, 0, 1])  # for the kept tokens 0, 1, 3, 4
    acc.add(hidden, pre, keep, slots)
    stats = unit_stats(acc, n_seen=4)
    assert stats.act_mean.tolist() == [(1 + 3 - 1 + 2) / 4, (-2 + 0.5 + 4 + 0) / 4]
    assert stats.act_max.tolist() == [3.0, 4.0]
    assert stats.act_freq.tolist() == [3 / 4, 2 / 4]  # indicator > 0: units 0 on tokens 0, 1, 4; 1 on 1, 3
    assert acc.by_token.tolist() == [[0.0, 2.0], [2.0, 0.0]]  # slot 0: tokens 0 and 3; slot 1: token 4
    assert acc.by_token_max.tolist() == [[1.0, 4.0], [2.0, 0.0]]


def test_top_tokens_rank_means_among_tokens_seen_often_enough():
    tracked = torch.tensor([3, 5, 8])
    acc = LayerStats(1, tracked, "cpu")
    acc.by_token = torch.tensor([[6.0], [10.0], [1.0]])  # sums per token
    acc.by_token_max = torch.tensor([[4.0], [10.0], [1.0]])
    counts = torch.tensor([3, 1, 1])  # means 2, 10, 1
    top = top_tokens(acc, tracked, counts, k=2)
    assert top.token.tolist() == [5, 3] and top.mean_act.tolist() == [10.0, 2.0]
    assert top.max_act.tolist() == [10.0, 4.0] and top.count.tolist() == [1, 3] and top.unit.tolist() == [0, 0]
    seen_twice = top_tokens(acc, tracked, counts, k=2, min_count=2)
    assert seen_twice.token.tolist() == [3] and seen_twice.mean_act.tolist() == [2.0]
    assert len(top_tokens(acc, tracked, counts, k=2, min_count=4).unit) == 0


def test_tracked_tokens_are_the_most_frequent_non_special_ids():
    rows = torch.tensor([[0, 4, 4, 4, 2, 2, 9, 9], [0, 9, 9, 1, 4, 2, 2, 2]])
    ids, counts = tracked_tokens(TokenStream.from_rows(rows), 12, special_ids={0}, limit=2)
    assert ids.tolist() == [2, 4] and counts.tolist() == [5, 4]  # 2 x5, then 4 and 9 x4 each: ties by lower id
    assert layers_per_pass(10, 4, memory_gb=LayerStats.nbytes(10, 4) * 2.5 / 1e9) == 2


@pytest.fixture(scope="module")
def llama():
    model, adapter = random_model("llama")
    return model, adapter


def test_neuron_statistics_equal_activations_read_with_plain_hooks(llama):
    model, adapter = llama
    g = torch.Generator().manual_seed(4)
    rows = torch.randint(2, V, (6, 12), generator=g)
    rows[:, 0] = 0  # BOS, special
    rows[1, 5] = 1  # another special token
    special = {0, 1}
    stream = TokenStream.from_rows(rows)
    got = neuron_stats(model, adapter, stream, range(0, 2), n_tokens=V, special_ids=special, tracked_limit=V,
                       batch_size=4)
    # plain hooks: the down projection's input (the activation) and the gate's output (the indicator)
    acts, gates, handles = {}, {}, []
    for layer in (0, 1):
        mlp = model.model.layers[layer].mlp
        handles.append(mlp.down_proj.register_forward_pre_hook(
            lambda m, a, layer=layer: acts.setdefault(layer, []).append(a[0].detach().reshape(-1, F))))
        handles.append(mlp.gate_proj.register_forward_hook(
            lambda m, a, o, layer=layer: gates.setdefault(layer, []).append(o.detach().reshape(-1, F))))
    with torch.no_grad():
        model(rows)
    for h in handles:
        h.remove()
    flat = rows.reshape(-1)
    keep = ~torch.isin(flat, torch.tensor(sorted(special)))
    assert got.n_seen == int(keep.sum())
    for layer in (0, 1):
        a, pre = torch.cat(acts[layer])[keep].double(), torch.cat(gates[layer])[keep]
        stats = unit_stats(got.stats[layer], got.n_seen)
        torch.testing.assert_close(stats.act_mean, a.mean(0), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(stats.act_max, a.max(0).values, rtol=1e-6, atol=1e-7)
        assert stats.act_freq.tolist() == ((pre > 0).double().mean(0)).tolist()
        top = top_tokens(got.stats[layer], got.tracked, got.counts, k=3)
        ids = flat[keep]
        for unit in (0, 5, F - 1):  # the mean per token id, recomputed here
            means = {int(t): float(a[ids == t, unit].mean()) for t in ids.unique()}
            best = sorted(means, key=lambda t: (-means[t], t))[:3]
            picked = top.token[top.unit == unit].tolist()
            assert sorted(picked) == sorted(best), (unit, picked, best)
            assert top.mean_act[top.unit == unit].tolist() == pytest.approx([means[t] for t in picked], rel=1e-5)


BF16_BOUND = 0.02
"""The bfloat16 forward's bound on a random tiny model: |Δ act_mean| within 2 % of the unit's
float32 activation scale (its RMS over tokens), |Δ act_max| within 2 % of the larger of that
scale and |act_max|, |Δ act_freq| within 0.02."""


def test_a_bfloat16_forward_stays_within_the_bound_of_float32(llama):
    model, adapter = llama
    g = torch.Generator().manual_seed(5)
    rows = torch.randint(2, V, (8, 16), generator=g)
    stream = TokenStream.from_rows(rows)
    common = dict(n_tokens=V, special_ids={0, 1}, tracked_limit=V, batch_size=4)
    exact = neuron_stats(model, adapter, stream, range(0, 2), **common)
    fast = neuron_stats(model, adapter, stream, range(0, 2), compute_dtype=torch.bfloat16, **common)
    assert fast.n_seen == exact.n_seen
    acts = {}
    handles = [model.model.layers[layer].mlp.down_proj.register_forward_pre_hook(
        lambda m, a, layer=layer: acts.__setitem__(layer, a[0].detach().reshape(-1, F))) for layer in (0, 1)]
    with torch.no_grad():
        model(rows)
    for h in handles:
        h.remove()
    for layer in (0, 1):
        want, got = unit_stats(exact.stats[layer], exact.n_seen), unit_stats(fast.stats[layer], fast.n_seen)
        scale = acts[layer].double().pow(2).mean(0).sqrt()
        mean_err = float(((got.act_mean - want.act_mean).abs() / scale).max())
        max_err = float(((got.act_max - want.act_max).abs() / torch.maximum(want.act_max.abs(), scale)).max())
        freq_err = float((got.act_freq - want.act_freq).abs().max())
        assert 0 < mean_err <= BF16_BOUND and max_err <= BF16_BOUND and freq_err <= BF16_BOUND, \
            (layer, mean_err, max_err, freq_err)  # not zero: the forward did run in bfloat16
