"""Token streams and probe sequences, on a character tokenizer whose ids are known."""

from __future__ import annotations

import pytest
import torch

from compgraph.data.probes import haystacks, head_probes, ordinary_ids, repeated_sequences
from compgraph.data.tokens import TokenStream, bos_ids
from compgraph.errors import ConfigError


class CharTokenizer:
    """id 0 = BOS, 1 = EOS, 2 + ord(c) - ord('a') for a..z."""

    bos_token_id, eos_token_id = 0, 1
    all_special_ids = [0, 1]

    def __init__(self, bos: bool = True):
        if not bos:
            self.bos_token_id = None

    def __call__(self, text, add_special_tokens=False):
        assert not add_special_tokens
        return {"input_ids": [2 + ord(c) - ord("a") for c in text]}

    def __len__(self):
        return 28


def test_rows_start_with_bos_and_documents_join_with_eos():
    stream = TokenStream(CharTokenizer(), ["abcdefg", "hij"], seq_len=8)
    # body 7 per row: a..g | EOS h i j EOS -> one full row, the rest waits for more text
    assert stream.n_rows == 1 and stream.seq_len == 8 and stream.n_tokens == 8
    (batch,) = list(stream.batches(4))
    assert batch.tolist() == [[0, 2, 3, 4, 5, 6, 7, 8]]
    stream.close()


def test_rows_cut_in_order_and_max_tokens_stops_at_a_row():
    text = "abcdefghijklmnopqrstuvwxyz" * 2
    stream = TokenStream(CharTokenizer(), [text], seq_len=9, max_tokens=18)
    assert stream.n_rows == 2
    rows = torch.cat(list(stream.batches(1)))
    ids = [2 + i % 26 for i in range(16)]
    assert rows.tolist() == [[0] + ids[:8], [0] + ids[8:16]]
    assert stream.head(10).tolist() == ids[:10]  # BOS of each row left out
    assert stream.n_batches(1) == 2 and stream.n_batches(4, max_rows=1) == 1
    counts = stream.token_counts(28)
    assert counts[0] == 2 and counts[2] == 1 and counts.sum() == 18
    stream.close()


def test_without_bos_rows_are_body_only_and_a_short_corpus_is_one_short_row():
    stream = TokenStream(CharTokenizer(bos=False), ["abc"], seq_len=8)
    assert stream.n_rows == 1 and stream.seq_len == 4
    assert next(stream.batches(1)).tolist() == [[2, 3, 4, 1]]
    stream.close()


def test_empty_corpus_and_short_rows_are_refused():
    with pytest.raises(ConfigError, match="no tokens"):
        TokenStream(CharTokenizer(), [], seq_len=8)
    with pytest.raises(ConfigError, match="seq_len must be at least 8"):
        TokenStream(CharTokenizer(), ["abc"], seq_len=4)


def test_from_rows_keeps_the_given_rows():
    rows = torch.tensor([[0, 5, 6], [0, 7, 8]])
    stream = TokenStream.from_rows(rows)
    assert torch.equal(torch.cat(list(stream.batches(1))), rows)
    assert stream.head(3).tolist() == [5, 6, 7]
    stream.close()


def test_repeated_sequences_are_bos_then_a_random_half_twice():
    tok = CharTokenizer()
    seqs = repeated_sequences(tok, n=5, length=6, seed=3)
    assert seqs.shape == (5, 13)
    assert (seqs[:, 0] == 0).all()
    assert torch.equal(seqs[:, 1:7], seqs[:, 7:])
    assert set(seqs[:, 1:].unique().tolist()) <= set(range(2, 28))
    assert torch.equal(seqs, repeated_sequences(tok, n=5, length=6, seed=3))
    assert bos_ids(tok) == [0] and bos_ids(CharTokenizer(bos=False)) == []
    assert ordinary_ids(tok).tolist() == list(range(2, 28))


def test_haystacks_put_the_same_needle_at_the_stated_positions():
    stream = torch.arange(100, 160)
    tokens, first, second = haystacks(CharTokenizer(), stream, n=3, needle_len=4, hay_len=10, seed=0)
    assert tokens.shape == (3, 1 + 10 + 4 + 10 + 4) and (first, second) == (11, 25)
    for row in tokens:
        assert row[0] == 0
        assert torch.equal(row[first:first + 4], row[second:second + 4])
        hay = torch.cat([row[1:first], row[first + 4:second]])
        assert torch.equal(hay, torch.arange(int(hay[0]), int(hay[0]) + 20))  # a contiguous corpus slice


def test_head_probes_bundle_text_repeats_and_haystacks():
    stream = TokenStream(CharTokenizer(), ["abcdefghijklmnopqrstuvwxyz" * 20], seq_len=16)
    probes = head_probes(CharTokenizer(), stream, batch_size=2, max_rows=3, repeat_len=5, n_repeats=2,
                         needle_len=3, hay_len=8, n_haystacks=2)
    assert [b.shape[0] for b in probes.text] == [2, 1]
    assert probes.repeated.shape == (2, 11) and probes.repeat_len == 5
    assert probes.haystack.shape == (2, 1 + 8 + 3 + 8 + 3)
    assert (probes.needle_first, probes.needle_second, probes.needle_len) == (9, 20, 3)
    stream.close()
