"""Token batches the extractors run on: corpus text, repeated random tokens, haystacks.

A corpus is a JSONL file of ``{"text": ...}`` objects (or a plain text file, one
document per line). Documents are tokenized without special tokens, joined with the
EOS token, cut into chunks of ``seq_len - 1`` tokens and each chunk starts with BOS
when the tokenizer has one, so batches need no padding.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from compgraph.errors import ConfigError
from compgraph.extract.heads import HeadData
from compgraph.library import data_dir


def default_corpus() -> Path:
    return data_dir("ingest") / "corpus" / "default.jsonl"


def load_corpus(path: str | Path | None) -> list[str]:
    path = Path(path) if path else default_corpus()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ConfigError(f"cannot read corpus {path}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(f"corpus {path} is not UTF-8 text") from err
    texts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                texts.append(str(json.loads(line)["text"]))
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ConfigError(f"{path}:{number}: expected a JSON object with a 'text' field") from err
        else:
            texts.append(line)
    if not texts:
        raise ConfigError(f"corpus {path} holds no text")
    return texts


def corpus_hash(texts: list[str]) -> str:
    return hashlib.sha256("\n\0".join(texts).encode()).hexdigest()[:16]


def _bos(tokenizer) -> list[int]:
    bos = tokenizer.bos_token_id
    return [] if bos is None else [bos]


def ordinary_ids(tokenizer) -> torch.Tensor:
    """Token ids that are not special tokens (for random sequences)."""
    special = set(tokenizer.all_special_ids)
    return torch.tensor([i for i in range(len(tokenizer)) if i not in special])


def text_batches(tokenizer, texts: list[str], *, seq_len: int, batch_size: int,
                 max_tokens: int | None = None) -> list[torch.Tensor]:
    if seq_len < 8:
        raise ConfigError(f"seq_len must be at least 8, not {seq_len}")
    sep = tokenizer.eos_token_id
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"]
        if sep is not None:
            stream.append(sep)
        if max_tokens and len(stream) >= max_tokens:
            break
    bos = _bos(tokenizer)
    body = seq_len - len(bos)
    chunks = [bos + stream[i:i + body] for i in range(0, len(stream) - body + 1, body)]
    if not chunks:  # a corpus shorter than one sequence: use what there is
        chunks = [bos + stream]
    rows = torch.tensor(chunks)
    return list(rows.split(batch_size))


def repeated_sequences(tokenizer, *, n: int, length: int, seed: int) -> torch.Tensor:
    """[n, 1 + 2*length]: BOS (if any) + R + R, R uniformly random ordinary tokens."""
    gen = torch.Generator().manual_seed(seed)
    pool = ordinary_ids(tokenizer)
    rand = pool[torch.randint(len(pool), (n, length), generator=gen)]
    first = torch.tensor(_bos(tokenizer) or [int(pool[0])]).expand(n, 1)
    return torch.cat([first, rand, rand], dim=1)


def haystacks(tokenizer, texts: list[str], *, n: int, needle_len: int, hay_len: int, seed: int):
    """[n, seq]: BOS + hay + needle + hay + needle; returns (tokens, first, second)."""
    gen = torch.Generator().manual_seed(seed)
    pool = ordinary_ids(tokenizer)
    stream = torch.tensor(sum((tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts), []))
    if len(stream) < 2 * hay_len:
        stream = stream.repeat(2 * hay_len // max(len(stream), 1) + 1)
    rows = []
    bos = torch.tensor(_bos(tokenizer) or [int(pool[0])])
    for _ in range(n):
        start = int(torch.randint(len(stream) - 2 * hay_len + 1, (1,), generator=gen))
        hay = stream[start:start + 2 * hay_len]
        needle = pool[torch.randint(len(pool), (needle_len,), generator=gen)]
        rows.append(torch.cat([bos, hay[:hay_len], needle, hay[hay_len:], needle]))
    first = 1 + hay_len
    second = first + needle_len + hay_len
    return torch.stack(rows), first, second


def head_data(tokenizer, texts: list[str], text: list[torch.Tensor], *, seed: int = 0,
              repeat_len: int = 24, n_repeats: int = 16, needle_len: int = 16, hay_len: int = 96,
              n_haystacks: int = 8) -> HeadData:
    """Head-score inputs; ``text`` are the corpus batches already built by text_batches."""
    tokens, first, second = haystacks(tokenizer, texts, n=n_haystacks, needle_len=needle_len,
                                      hay_len=hay_len, seed=seed + 1)
    return HeadData(
        text=text,
        repeated=repeated_sequences(tokenizer, n=n_repeats, length=repeat_len, seed=seed),
        repeat_len=repeat_len, haystack=tokens, needle_first=first, needle_second=second,
        needle_len=needle_len,
    )
