"""Head scores: each score's definition on hand-built attention patterns, every score of a
tiny model whose attention is uniform by construction (closed forms), and the copy score
against the eigenvalues of the full vocabulary x vocabulary OV circuit, formed here."""

from __future__ import annotations

import math

import pytest
import torch

from compgraph.data.probes import HeadProbes
from compgraph.extract import heads
from tests.helpers.models import V, random_model


def causal(rows: list[list[float]]) -> torch.Tensor:
    """A [1, 1, T, T] pattern from its rows."""
    return torch.tensor(rows).view(1, 1, len(rows), len(rows))


PATTERN = causal([[1.0, 0.0, 0.0, 0.0],
                  [0.25, 0.75, 0.0, 0.0],
                  [0.5, 0.25, 0.25, 0.0],
                  [0.0, 0.0, 1.0, 0.0]])


def test_sink_previous_token_and_entropy_by_hand():
    assert heads.sink(PATTERN).item() == pytest.approx((0.25 + 0.5 + 0.0) / 3)
    assert heads.previous_token(PATTERN).item() == pytest.approx((0.25 + 0.25 + 1.0) / 3)
    h = lambda *p: -sum(x * math.log(x) for x in p if x > 0)  # noqa: E731
    assert heads.entropy(PATTERN).item() == pytest.approx((h(0.25, 0.75) + h(0.5, 0.25, 0.25) + h(1.0)) / 3)


def test_induction_and_duplicate_read_the_second_copy():
    """[BOS] R R with |R| = L = 2: positions 0 | 1 2 | 3 4. Induction: q = 3 (= L+1 .. 2L-1)
    attending to q - L + 1 = 2; duplicate: q = 3, 4 attending to q - L = 1, 2."""
    pattern = torch.zeros(1, 1, 5, 5)
    pattern[0, 0, 3, 2] = 0.8
    pattern[0, 0, 3, 1] = 0.2
    pattern[0, 0, 4, 2] = 0.6
    assert heads.induction(pattern, 2).item() == pytest.approx(0.8)
    assert heads.duplicate(pattern, 2).item() == pytest.approx((0.2 + 0.6) / 2)


def test_retrieval_counts_correct_predictions_attending_to_the_first_needle():
    """Needle of 3 tokens; queries at 7, 8 predict needle[1:], which sits first at 2, 3. Head 0
    attends to 2 then 3 (both hits where correct), head 1 to 0 then 3."""
    pattern = torch.zeros(1, 2, 10, 10)
    pattern[0, 0, 7, 2] = pattern[0, 0, 8, 3] = 1.0
    pattern[0, 1, 7, 0] = pattern[0, 1, 8, 3] = 1.0
    queries, sources = torch.tensor([7, 8]), torch.tensor([2, 3])
    both = heads.retrieval(pattern, torch.tensor([[True, True]]), queries, sources, needle_len=3)
    assert both.tolist() == pytest.approx([2 / 3, 1 / 3])
    wrong_second = heads.retrieval(pattern, torch.tensor([[True, False]]), queries, sources, needle_len=3)
    assert wrong_second.tolist() == pytest.approx([1 / 3, 0.0])


@pytest.fixture(scope="module")
def uniform():
    """A tiny Llama whose queries are zero: every head attends uniformly to the positions
    up to its own, A(q, s) = 1 / (q + 1)."""
    model, adapter = random_model("llama")
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.zero_()
    return model, adapter


def test_every_score_of_uniform_attention_has_its_closed_form(uniform):
    model, adapter = uniform
    g = torch.Generator().manual_seed(0)
    T, L = 10, 3
    text = [torch.randint(1, V, (2, T), generator=g), torch.randint(1, V, (3, T), generator=g)]
    r = torch.randint(1, V, (4, L), generator=g)
    probes = HeadProbes(text=text, repeated=torch.cat([torch.zeros(4, 1, dtype=torch.long), r, r], 1), repeat_len=L,
                        haystack=torch.randint(1, V, (2, 16), generator=g), needle_first=2, needle_second=9,
                        needle_len=4)
    scores = heads.pattern_scores(model, probes)
    q = torch.arange(1, T, dtype=torch.float64)
    want = {"sink": (1 / (q + 1)).mean(), "prev_token": (1 / (q + 1)).mean(), "entropy": torch.log(q + 1).mean(),
            "induction": torch.tensor([1 / (p + 1) for p in range(L + 1, 2 * L)]).mean(),
            "duplicate": torch.tensor([1 / (p + 1) for p in range(L + 1, 2 * L + 1)]).mean(),
            "retrieval": torch.tensor(0.0)}  # a uniform row's strongest attention is on position 0
    n_layers, n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
    for name, value in want.items():
        assert scores[name].shape == (n_layers, n_heads), name
        torch.testing.assert_close(scores[name].double(), value.double().expand(n_layers, n_heads), rtol=1e-6,
                                   atol=1e-7, msg=name)


@torch.no_grad()
def test_copy_score_is_that_of_the_full_ov_circuit(uniform):
    """sum(Re λ) / sum(|λ|) over the eigenvalues of W_E diag(g_attn) W_V W_O diag(g_final) W_U
    (vocabulary x vocabulary, float64), from raw parameters."""
    model, adapter = uniform
    cfg = model.config
    n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    d_head = cfg.hidden_size // n_heads
    embed = model.model.embed_tokens.weight.double()
    unembed = model.lm_head.weight.double().T
    g_final = model.model.norm.weight.double()
    got = heads.copy_scores(model, adapter)
    for layer, block in enumerate(model.model.layers):
        g_attn = block.input_layernorm.weight.double()
        for h in range(n_heads):
            kv = h // (n_heads // n_kv)
            w_v = block.self_attn.v_proj.weight.double()[kv * d_head:(kv + 1) * d_head].T  # [d, d_head]
            w_o = block.self_attn.o_proj.weight.double()[:, h * d_head:(h + 1) * d_head].T  # [d_head, d]
            full = (embed * g_attn) @ w_v @ w_o @ (g_final[:, None] * unembed)  # [V, V]
            eig = torch.linalg.eigvals(full)
            want = float(eig.real.sum() / eig.abs().sum())
            assert got[layer, h].item() == pytest.approx(want, abs=1e-4), (layer, h)
