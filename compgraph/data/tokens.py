"""A corpus as token batches: tokenized once, on disk, handed out in fixed-length rows.

Corpus documents (:mod:`compgraph.data.corpus`) are tokenized without special tokens,
joined with the EOS token, cut into chunks of ``seq_len - 1`` tokens and each chunk
starts with BOS when the tokenizer has one, so batches need no padding.

:class:`TokenStream` tokenizes a corpus once into a memory-mapped file of token ids
and hands out batches from it, so memory does not grow with the corpus (the file
takes 4 bytes per token on disk).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from compgraph.errors import ConfigError


def bos_ids(tokenizer) -> list[int]:
    bos = tokenizer.bos_token_id
    return [] if bos is None else [bos]


class TokenStream:
    """A corpus as fixed-length rows of token ids ``[BOS] + seq_len-1 tokens``, on disk.

    ``n_rows`` rows; :meth:`batches` yields ``[batch, seq_len]`` int64 tensors;
    :meth:`token_counts` counts every id over the rows (special tokens included).
    """

    def __init__(self, tokenizer, documents: Iterable[str], *, seq_len: int, max_tokens: int | None = None,
                 directory: str | Path | None = None):
        if seq_len < 8:
            raise ConfigError(f"seq_len must be at least 8, not {seq_len}")
        self.seq_len = seq_len
        bos = bos_ids(tokenizer)
        self._offset = len(bos)
        body = seq_len - len(bos)
        self._dir = tempfile.TemporaryDirectory(prefix="compgraph-tokens-", dir=directory)
        path = Path(self._dir.name) / "rows.u32"
        sep = tokenizer.eos_token_id
        pending: list[int] = []
        n_rows = n_tokens = 0
        with open(path, "wb") as out:
            for text in documents:
                pending += tokenizer(text, add_special_tokens=False)["input_ids"]
                if sep is not None:
                    pending.append(sep)
                while len(pending) >= body and not (max_tokens and n_tokens >= max_tokens):
                    out.write(np.asarray(bos + pending[:body], dtype=np.uint32).tobytes())
                    del pending[:body]
                    n_rows += 1
                    n_tokens += seq_len
                if max_tokens and n_tokens >= max_tokens:
                    break
            if n_rows == 0 and pending:  # a corpus shorter than one row: one short row
                self.seq_len = len(bos) + len(pending)
                out.write(np.asarray(bos + pending, dtype=np.uint32).tobytes())
                n_rows = 1
        if n_rows == 0:
            raise ConfigError("the corpus holds no tokens")
        self.n_rows = n_rows
        self._rows = np.memmap(path, dtype=np.uint32, mode="r", shape=(n_rows, self.seq_len))

    @classmethod
    def from_rows(cls, rows: torch.Tensor, *, bos: bool = True) -> "TokenStream":
        """A stream over given rows of ids ``[n, seq_len]`` (``bos``: each row starts with BOS)."""
        stream = cls.__new__(cls)
        stream._dir = tempfile.TemporaryDirectory(prefix="compgraph-tokens-")
        path = Path(stream._dir.name) / "rows.u32"
        np.asarray(rows, dtype=np.uint32).tofile(path)
        stream.n_rows, stream.seq_len, stream._offset = rows.shape[0], rows.shape[1], int(bos)
        stream._rows = np.memmap(path, dtype=np.uint32, mode="r", shape=tuple(rows.shape))
        return stream

    @property
    def n_tokens(self) -> int:
        return self.n_rows * self.seq_len

    def batches(self, batch_size: int, *, max_rows: int | None = None) -> Iterator[torch.Tensor]:
        stop = self.n_rows if max_rows is None else min(self.n_rows, max_rows)
        for start in range(0, stop, batch_size):
            yield torch.from_numpy(self._rows[start:min(start + batch_size, stop)].astype(np.int64))

    def n_batches(self, batch_size: int, *, max_rows: int | None = None) -> int:
        stop = self.n_rows if max_rows is None else min(self.n_rows, max_rows)
        return -(-stop // batch_size)

    def token_counts(self, size: int) -> torch.Tensor:
        """[size] occurrences of each id (ids >= size are not counted)."""
        counts = np.zeros(size, dtype=np.int64)
        for start in range(0, self.n_rows, 4096):
            block = self._rows[start:start + 4096].reshape(-1)
            counts += np.bincount(block[block < size], minlength=size)
        return torch.from_numpy(counts)

    def head(self, n_tokens: int) -> torch.Tensor:
        """The first ``n_tokens`` ids of the stream, BOS of each row left out (1-D)."""
        body = self.seq_len - self._offset
        rows = self._rows[: -(-n_tokens // body) + 1, self._offset:].reshape(-1)
        return torch.from_numpy(rows[:n_tokens].astype(np.int64))

    def close(self) -> None:
        del self._rows
        self._dir.cleanup()
