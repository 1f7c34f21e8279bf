"""Probe sequences for head scores: repeated random tokens, haystacks with a needle, and
the corpus rows the text-based scores read (:class:`HeadProbes`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compgraph.data.tokens import TokenStream, bos_ids


@dataclass(frozen=True, kw_only=True)
class HeadProbes:
    """Token batches the head scores read (:mod:`compgraph.extract.heads`)."""

    text: list[torch.Tensor]
    """[batch, seq] corpus text chunks, each starting with BOS when the tokenizer has one."""
    repeated: torch.Tensor
    """[n, 1 + 2L] BOS + R + R."""
    repeat_len: int
    haystack: torch.Tensor
    """[n, seq] haystack + needle + haystack + needle."""
    needle_first: int
    """Position of the first needle's first token."""
    needle_second: int
    """Position of the second needle's first token."""
    needle_len: int


def ordinary_ids(tokenizer) -> torch.Tensor:
    """Token ids that are not special tokens (for random sequences)."""
    special = set(tokenizer.all_special_ids)
    return torch.tensor([i for i in range(len(tokenizer)) if i not in special])


def repeated_sequences(tokenizer, *, n: int, length: int, seed: int) -> torch.Tensor:
    """[n, 1 + 2*length]: BOS (if any) + R + R, R uniformly random ordinary tokens."""
    gen = torch.Generator().manual_seed(seed)
    pool = ordinary_ids(tokenizer)
    rand = pool[torch.randint(len(pool), (n, length), generator=gen)]
    first = torch.tensor(bos_ids(tokenizer) or [int(pool[0])]).expand(n, 1)
    return torch.cat([first, rand, rand], dim=1)


def haystacks(tokenizer, stream: torch.Tensor, *, n: int, needle_len: int, hay_len: int, seed: int):
    """[n, seq]: BOS + hay + needle + hay + needle, hay cut from ``stream`` (corpus ids);
    returns (tokens, first, second)."""
    gen = torch.Generator().manual_seed(seed)
    pool = ordinary_ids(tokenizer)
    if len(stream) < 2 * hay_len:
        stream = stream.repeat(2 * hay_len // max(len(stream), 1) + 1)
    rows = []
    bos = torch.tensor(bos_ids(tokenizer) or [int(pool[0])])
    for _ in range(n):
        start = int(torch.randint(len(stream) - 2 * hay_len + 1, (1,), generator=gen))
        hay = stream[start:start + 2 * hay_len]
        needle = pool[torch.randint(len(pool), (needle_len,), generator=gen)]
        rows.append(torch.cat([bos, hay[:hay_len], needle, hay[hay_len:], needle]))
    first = 1 + hay_len
    second = first + needle_len + hay_len
    return torch.stack(rows), first, second


def head_probes(tokenizer, stream: TokenStream, *, batch_size: int, max_rows: int, seed: int = 0,
                repeat_len: int = 24, n_repeats: int = 16, needle_len: int = 16, hay_len: int = 96,
                n_haystacks: int = 8) -> HeadProbes:
    """Head-score inputs: the first ``max_rows`` corpus rows, repeats and haystacks."""
    text = list(stream.batches(batch_size, max_rows=max_rows))
    hay_source = stream.head(max(8 * hay_len * n_haystacks, 2 * hay_len))
    tokens, first, second = haystacks(tokenizer, hay_source, n=n_haystacks, needle_len=needle_len,
                                      hay_len=hay_len, seed=seed + 1)
    return HeadProbes(
        text=text,
        repeated=repeated_sequences(tokenizer, n=n_repeats, length=repeat_len, seed=seed),
        repeat_len=repeat_len, haystack=tokens, needle_first=first, needle_second=second,
        needle_len=needle_len,
    )
