"""Typed job configurations. Validation raises ConfigError (a ValueError)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from compgraph.errors import ConfigError

EXTRACTORS = ("neurons", "heads", "experts")


@dataclass(frozen=True, kw_only=True)
class IngestConfig:
    model: str
    """What to load: a .gguf path, a model directory, an org/name hub id, or packaged:NAME."""
    name: str | None = None
    """The :Model node's name; default derived from ``model``."""
    extract: tuple[str, ...] = EXTRACTORS
    """Which extractors run; ``experts`` is skipped on dense models, ``neurons`` on MoE layers."""
    top_k: int = 10
    """Tokens per component and sign for DECODES_TO, and per component for ACTIVATES_ON."""
    corpus: str | None = None
    """JSONL ({"text": ...} per line) or plain-text corpus; default: the shipped one."""
    device: str = "auto"
    """auto (cuda when available), cpu or cuda."""
    dtype: str = "auto"
    """auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16 or float16."""
    batch_size: int = 8
    """Sequences per forward pass."""
    seq_len: int = 128
    """Tokens per corpus sequence."""
    max_tokens: int | None = None
    """Stop reading the corpus after this many tokens (None: all of it)."""
    seed: int = 0
    """Seed for the random sequences of the head scores."""

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("MODEL must not be empty")
        unknown = [e for e in self.extract if e not in EXTRACTORS]
        if unknown or not self.extract:
            raise ConfigError(f"--extract takes a comma list of {', '.join(EXTRACTORS)}; got {','.join(self.extract)}")
        for field, low in (("top_k", 1), ("batch_size", 1), ("seq_len", 8)):
            if getattr(self, field) < low:
                raise ConfigError(f"{field} must be at least {low}, not {getattr(self, field)}")
        if self.max_tokens is not None and self.max_tokens < self.seq_len:
            raise ConfigError("max_tokens must be at least seq_len")
        if self.name is not None and (not self.name or "/" in self.name):
            raise ConfigError(f"--name must be non-empty and contain no '/': {self.name!r}")

    def hash(self, corpus_digest: str) -> str:
        """What determines the job's results (device and batch size do not)."""
        payload = {k: v for k, v in asdict(self).items() if k not in ("device", "batch_size", "corpus")}
        payload["corpus"] = corpus_digest
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
