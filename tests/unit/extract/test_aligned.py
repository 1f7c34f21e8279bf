"""Aligning two tokenizations of one text: the positions found hold the same word's last
character in both, checked from the tokenizers' own offsets; one tokenizer gives every
non-special token; standardization is exact."""

from __future__ import annotations

import re

import pytest
import torch
import transformers as T

from compgraph.extract import aligned

TEXTS = ["The quick brown fox jumps over the lazy dog.", "A graph of model components:  neurons, heads\nand tokens."]


def _spans(tok, text):
    enc = tok(text, return_offsets_mapping=True, add_special_tokens=True)
    return enc["input_ids"], enc["offset_mapping"]


def test_word_aligned_positions_end_the_same_word_in_both_tokenizations(tiny_dir, small_model):
    a, b = T.AutoTokenizer.from_pretrained(tiny_dir), T.AutoTokenizer.from_pretrained(small_model)
    got = aligned.align(a, b, TEXTS, same_tokenizer=False, seq_len=64, max_positions=1000)
    words = [[m.end() - 1 for m in re.finditer(r"\S+", t)] for t in TEXTS]
    assert got.n == sum(len(w) for w in words)  # every word of these short texts is kept
    for text, ends, pa, pb, ia, ib in zip(TEXTS, words, got.pos_a, got.pos_b, got.ids_a, got.ids_b):
        _, offsets_a = _spans(a, text)
        _, offsets_b = _spans(b, text)
        for last, ta, tb in zip(ends, pa, pb):
            assert offsets_a[ta][0] <= last < offsets_a[ta][1]
            assert offsets_b[tb][0] <= last < offsets_b[tb][1]
        assert ia == _spans(a, text)[0] and ib == _spans(b, text)[0]


def test_cut_sequences_and_the_position_budget_are_respected(tiny_dir, small_model):
    a, b = T.AutoTokenizer.from_pretrained(tiny_dir), T.AutoTokenizer.from_pretrained(small_model)
    short = aligned.align(a, b, TEXTS, same_tokenizer=False, seq_len=4, max_positions=1000)
    assert all(max(p) < 4 for p in short.pos_a + short.pos_b)
    assert aligned.align(a, b, TEXTS, same_tokenizer=False, seq_len=64, max_positions=5).n == 5


def test_one_tokenizer_aligns_every_non_special_token(tiny_dir):
    tok = T.AutoTokenizer.from_pretrained(tiny_dir)
    got = aligned.align(tok, tok, TEXTS, same_tokenizer=True, seq_len=64, max_positions=1000)
    for text, ids, pos in zip(TEXTS, got.ids_a, got.pos_a):
        assert ids == tok(text)["input_ids"]
        assert pos == [t for t, i in enumerate(ids) if i not in tok.all_special_ids]
    assert got.pos_a == got.pos_b and got.ids_a == got.ids_b


def test_standardize_gives_zero_mean_unit_variance_and_zeroes_constants():
    x = torch.tensor([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [8.0, 5.0, 0.0]])
    z, constant = aligned.standardize(x)
    assert constant.tolist() == [False, True, False]
    torch.testing.assert_close(z.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-15, rtol=0)
    assert (z * z).mean(0).tolist() == pytest.approx([1.0, 0.0, 1.0], abs=1e-15)
    want = (x[:, 0].double() - 4.0) / torch.tensor([26 / 3], dtype=torch.float64).sqrt()
    torch.testing.assert_close(z[:, 0], want)


def test_segment_attention_sums_each_segments_tokens_for_each_aligned_query():
    """Positions 1, 3, 5 of six tokens: segments {0, 1}, {2, 3}, {4, 5}; entry (i, j), j <= i,
    is the attention of query p_i on segment j's tokens (lower triangle, row-major)."""
    g = torch.Generator().manual_seed(0)
    causal = torch.ones(6, 6).triu(1).bool()
    pattern = torch.softmax(torch.randn(2, 6, 6, generator=g).masked_fill(causal, -torch.inf), -1)
    got = aligned.segment_attention(pattern, [1, 3, 5])
    segments = [[0, 1], [2, 3], [4, 5]]
    want = [[float(pattern[h, q, segments[j]].sum()) for i, q in enumerate([1, 3, 5]) for j in range(i + 1)]
            for h in range(2)]
    assert got.shape == (2, 6)
    torch.testing.assert_close(got, torch.tensor(want), atol=1e-6, rtol=0)
    # every aligned query's entries sum to 1 when the segments cover all tokens before it
    torch.testing.assert_close(got[:, 0], torch.ones(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(got[:, 1] + got[:, 2], torch.ones(2), atol=1e-6, rtol=0)
