"""The TopK SAE / transcoder trainer: hand-built answers for its parts, recovery of known
directions from synthetic k-sparse data, and an exact round trip through read_dictionary."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from compgraph.cli import main
from compgraph.dictionaries.readers import read_dictionary
from compgraph.dictionaries.train import (
    FVE, DeadTracker, TopKCoder, TrainConfig, TrainJob, forward_dtype, loss_terms, resolve_sites, train, train_dictionary,
)
from compgraph.errors import ConfigError


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    with pytest.raises(ConfigError, match="reads mlp_in and predicts mlp_out"):
        resolve_sites("transcoder", "resid", 3)
    assert resolve_sites("topk-sae", "resid", 3) == (("resid_post", 3), ("resid_post", 3))
    assert resolve_sites("transcoder", None, 2) == (("mlp_in", 2), ("mlp_out", 2))


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


# ---- a tiny model, end to end --------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from compgraph.corpus import resolve_corpus

    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("\n".join(resolve_corpus(None).documents()))
    return str(path)


@pytest.mark.parametrize("kind", ["topk-sae", "transcoder"])
def test_a_trained_dictionary_reads_back_exactly(tiny_dir, corpus, tmp_path, kind):
    job = TrainJob(model=str(tiny_dir), layer=1, out=str(tmp_path / "out"), corpus=corpus, tokens=800,
                   eval_tokens=200, seq_len=32, batch_size=4, chunk_tokens=512, device="cpu",
                   train=TrainConfig(kind=kind, width=24, k=4, batch_tokens=128))
    folder, result = train_dictionary(job)
    (d,) = read_dictionary(folder)
    coder = result.coder
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(d, name), getattr(coder, name).detach()), name
    want = ("sae", "resid_post", "resid_post") if kind == "topk-sae" else ("transcoder", "mlp_in", "mlp_out")
    assert (d.kind, d.site, d.output_site, d.layer, d.activation, d.k) == (*want, 1, "topk", 4)
    assert d.subtract_b_dec == (kind == "topk-sae")
    x = torch.randn(10, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(d.forward(x), coder(x).detach(), rtol=1e-5, atol=1e-5)
    assert result.tokens == 800 and result.eval_tokens == 200 and math.isfinite(result.fve)
    recorded = json.loads((folder / "cfg.json").read_text())["compgraph"]["activation_dtype"]
    assert recorded == forward_dtype("auto", "cpu")


def test_the_forward_pass_runs_in_bfloat16_only_where_the_hardware_has_it(monkeypatch):
    from compgraph.models import loading

    assert forward_dtype("float16", "cpu") == "float16" and forward_dtype("float32", "cpu") == "float32"
    assert loading.native_bf16("cuda")
    for native, want in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(loading, "native_bf16", lambda device, native=native: native)
        assert forward_dtype("auto", "cpu") == want


def test_the_command_trains_and_reports(tiny_dir, corpus, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(main, ["train-dictionary", str(tiny_dir), "--layer", "0", "--site", "resid",
                                       "--width", "16", "--k", "2", "--tokens", "600", "--eval-tokens", "100",
                                       "--seq-len", "32", "--batch-tokens", "100", "--corpus", corpus,
                                       "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "held-out FVE" in result.output and "dead features" in result.output
    (d,) = read_dictionary(out)
    assert (d.site, d.layer, d.width, d.k) == ("resid_post", 0, 16, 2)
    bad = CliRunner().invoke(main, ["train-dictionary", str(tiny_dir), "--layer", "5", "--corpus", corpus])
    assert bad.exit_code == 1 and "out of range" in bad.output


def dense_loss(coder: TopKCoder, x: torch.Tensor, dead: torch.Tensor, alpha: float) -> torch.Tensor:
    """The loss of the module docstring written densely, for autograd to differentiate."""
    pre = (x - coder.b_dec) @ coder.W_enc + coder.b_enc
    top = pre.topk(coder.k, dim=-1)
    f = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
    y_hat = f @ coder.W_dec + coder.b_dec
    variance = (x - x.mean(0)).pow(2).sum()
    n_dead, half = int(dead.sum()), x.shape[1] // 2
    aux = pre.masked_fill(~dead, -math.inf).topk(min(half, n_dead), dim=-1)
    e_hat = torch.zeros_like(pre).scatter(-1, aux.indices, aux.values) @ coder.W_dec
    auxk = min(n_dead / half, 1.0) * ((x - y_hat).detach() - e_hat).pow(2).sum() / variance
    return (x - y_hat).pow(2).sum() / variance + alpha * auxk


def test_sparse_gradients_equal_dense_autograd():
    g = torch.Generator().manual_seed(5)
    coder = TopKCoder(6, 6, 20, 3, subtract_b_dec=True, generator=g).double()
    with torch.no_grad():
        coder.b_dec.copy_(torch.randn(6, generator=g, dtype=torch.float64))
        coder.b_enc.copy_(torch.randn(20, generator=g, dtype=torch.float64) * 0.1)
    x = torch.randn(40, 6, generator=g, dtype=torch.float64)
    dead = torch.zeros(20, dtype=torch.bool)
    dead[[1, 4, 7, 9, 15]] = True
    fvu, auxk, _, _ = loss_terms(coder, x, x, dead)
    sparse = torch.autograd.grad(fvu + 0.5 * auxk, list(coder.parameters()))
    dense = torch.autograd.grad(dense_loss(coder, x, dead, 0.5), list(coder.parameters()))
    for (name, _), a, b in zip(coder.named_parameters(), sparse, dense):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)
