"""The TopK SAE / transcoder trainer: hand-built answers for its parts and recovery of known
directions from synthetic k-sparse data."""

from __future__ import annotations

import math

import pytest
import torch

from compgraph.dictionaries.coder import TopKCoder
from compgraph.dictionaries.training import FVE, DeadTracker, TrainConfig, loss_terms, train
from compgraph.errors import ConfigError
from tests.helpers.effects import one_thread  # noqa: F401 (autouse)




# ---- parts, with exact answers -------------------------------------------------------------------

def test_dead_tracker_counts_tokens_since_each_feature_fired():
    tracker = DeadTracker(width=3, window=10)
    tracker.update(torch.tensor([True, False, False]), 4)
    assert tracker.since.tolist() == [0, 4, 4] and tracker.count == 0
    tracker.update(torch.tensor([False, True, False]), 6)
    assert tracker.since.tolist() == [6, 0, 10] and tracker.dead.tolist() == [False, False, True]
    tracker.update(torch.tensor([False, False, True]), 5)
    assert tracker.since.tolist() == [11, 5, 0] and tracker.count == 1


def test_fve_is_one_minus_sse_over_total_variance():
    y = torch.tensor([[1.0, 0.0], [3.0, 2.0], [2.0, 1.0]])  # mean [2, 1]; Σ‖y − ȳ‖² = 2 + 2 + 0 = 4
    y_hat = y + torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, -1.0]])  # SSE 2
    fve = FVE()
    fve.add(y[:2], y_hat[:2])
    fve.add(y[2:], y_hat[2:])
    assert fve.value == pytest.approx(0.5, abs=1e-12)


def hand_coder() -> TopKCoder:
    """d 2 → width 3, k 1: W_enc = I-like, unit decoder rows e0, e1, (e0+e1)/√2, biases 0."""
    coder = TopKCoder(2, 2, 3, 1, subtract_b_dec=True)
    with torch.no_grad():
        coder.W_enc.copy_(torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]]))
        coder.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1 / math.sqrt(2), 1 / math.sqrt(2)]]))
        coder.b_enc.zero_()
        coder.b_dec.zero_()
    return coder


def test_topk_forward_and_auxk_by_hand():
    coder = hand_coder()
    x = torch.tensor([[3.0, 1.0], [0.0, 2.0]])
    # pre = [[3, 1, 2], [0, 2, 1]] -> top-1: feature 0 (3) and feature 1 (2): ŷ = [[3, 0], [0, 2]]
    dead = torch.tensor([False, False, True])
    fvu, auxk, y_hat, active = loss_terms(coder, x, x, dead)
    assert y_hat.tolist() == [[3.0, 0.0], [0.0, 2.0]] and sorted(active.tolist()) == [0, 1]
    variance = 1.5 ** 2 * 2 + 0.5 ** 2 * 2  # Σ‖x − x̄‖², x̄ = [1.5, 1.5]
    assert float(fvu.detach()) == pytest.approx(1.0 / variance)  # error [[0, 1], [0, 0]]
    # AuxK: k_aux = min(2 // 2, 1) = 1, the dead feature 2 with pre [2, 1]: ê = 2·r, 1·r (r = (1, 1)/√2)
    r = torch.tensor([1.0, 1.0]) / math.sqrt(2)
    e_hat = torch.stack([2 * r, 1 * r])
    error = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    want = min(1 / 1, 1.0) * float((error - e_hat).pow(2).sum()) / variance
    assert float(auxk.detach()) == pytest.approx(want)
    _, none, _, _ = loss_terms(coder, x, x, None)
    assert float(none) == 0.0


def test_decoder_gradient_is_projected_off_the_rows():
    coder = hand_coder()
    x = torch.tensor([[3.0, 1.0], [0.0, 2.0], [1.0, 1.0]])
    fvu, _, _, _ = loss_terms(coder, x, x * 2, None)
    fvu.backward()
    coder.project_decoder_grad()
    assert (coder.W_dec.grad * coder.W_dec).sum(1).abs().max() < 1e-6


def test_config_checks():
    with pytest.raises(ConfigError, match="--k 9 exceeds --width 8"):
        TrainConfig(width=8, k=9)
    with pytest.raises(ConfigError, match="--kind"):
        TrainConfig(kind="gated")


# ---- synthetic recovery --------------------------------------------------------------------------

def synthetic(n: int, directions: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """n samples, each a sum of k distinct directions with coefficients in [1, 2)."""
    m = directions.shape[0]
    picks = torch.rand(n, m, generator=generator).topk(k, dim=1).indices
    coeff = 1 + torch.rand(n, k, generator=generator)
    codes = torch.zeros(n, m).scatter_(1, picks, coeff)
    return codes @ directions


def test_recovers_known_directions_from_k_sparse_data():
    g = torch.Generator().manual_seed(0)
    d, m, k = 32, 48, 3
    directions = torch.randn(m, d, generator=g)
    directions /= directions.norm(dim=1, keepdim=True)
    data = synthetic(120_000, directions, k, g)
    held = synthetic(4_096, directions, k, g)
    chunks = ((c, c) for c in data.split(20_000))
    config = TrainConfig(width=64, k=k, batch_tokens=256, dead_tokens=20_000, seed=0)
    result = train(chunks, config, eval_data=(held, held))
    W = result.coder.W_dec.detach()
    assert (W.norm(dim=1) - 1).abs().max() < 1e-5
    best = (directions @ W.T).max(dim=1).values  # per true direction, the closest decoder row
    assert float((best > 0.9).float().mean()) >= 0.9, best
    assert result.fve > 0.9 and result.tokens == 120_000
    assert 0 <= result.dead <= 64
