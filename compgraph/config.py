"""Typed job options. Validation raises ConfigError (a ValueError) and imports nothing heavy.

:class:`IngestConfig` is what ``compgraph ingest`` was asked for. Each stage takes the
fields its own ``Config`` names from it (see :mod:`compgraph.engine.stage`); device,
dtype, batch size and the memory budget are execution settings
(:class:`compgraph.engine.context.Execution`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from compgraph.errors import ConfigError

DEFAULT_STAGES = ("neurons", "heads", "experts")
DEVICES = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True, kw_only=True)
class IngestConfig:
    model: str
    """What to load: a .gguf path, a model directory, an org/name hub id, or packaged:NAME."""
    name: str | None = None
    """The :Model node's name; default derived from ``model``."""
    extract: tuple[str, ...] = DEFAULT_STAGES
    """Which stages run (their requirements are added); stages that do not apply to the
    model (``experts`` on a dense model, ``neurons`` on an all-MoE one) are skipped."""
    force: tuple[str, ...] = ()
    """Stages to recompute even when their run is complete."""
    top_k: int = 10
    """Tokens per component and sign for DECODES_TO, and per component for ACTIVATES_ON."""
    corpus: str | None = None
    """Corpus spec (see compgraph.corpus): a file, packaged:NAME, or a cached dataset id."""
    seq_len: int = 128
    """Tokens per corpus sequence."""
    max_tokens: int | None = None
    """Stop reading the corpus after this many tokens (None: all of it)."""
    seed: int = 0
    """Seed for the random sequences of the head scores."""
    tracked_tokens: int = 4096
    """ACTIVATES_ON ranks the corpus's most frequent tokens, this many of them."""
    head_tokens: int = 16384
    """Corpus tokens the text-based head scores (sink, previous token, entropy) average over."""
    tasks: tuple[str, ...] = ()
    """Tasks (shipped names or .jsonl paths) the effects stage measures; giving any adds it."""
    effect_method: str = "activation"
    """How heads and blocks are measured: activation, attribution or eap-ig (neurons: a gradient method)."""
    ablation: str = "corrupt"
    """What a patched component takes: corrupt (its value on the corrupt prompt), zero, mean, resample."""
    effect_components: tuple[str, ...] = ("head", "mlp", "attn", "neuron")
    """Component kinds whose effects are measured (neurons by attribution patching)."""
    circuit_n: int = 20
    """Components in each task's node circuit."""
    task_examples: int = 64
    """Examples per task the effects stage uses: the first N of the file (0: all). Activation
    patching costs components x examples forward passes."""
    effect_edges: bool = True
    """Score the causal edges (CAUSES) and build each task's edge circuit."""
    circuit_edges: int = 200
    """Edges in each task's edge circuit, before pruning."""
    circuit_threshold: float | None = None
    """Circuits keep every member with |effect| >= this instead of a top-n."""
    connections_k: int = 10
    """Weights-based connections kept per source component (virtual, OV->MLP, MLP->heads,
    transcoder feature -> feature)."""
    dictionaries: tuple[str, ...] = ()
    """SAE / transcoder paths (SAELens, sparsify, circuit-tracer) the features stage reads; one run each."""
    device: str = "auto"
    """auto (cuda when available), cpu, cuda or cuda:N."""
    dtype: str = "auto"
    """auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16 or float16."""
    batch_size: int = 8
    """Sequences per forward pass."""
    memory_gb: float = 2.0
    """Budget for per-layer statistics accumulators (layers are grouped to fit it)."""

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("MODEL must not be empty")
        if not self.extract:
            raise ConfigError("--extract needs at least one stage")
        if self.tasks and "effects" not in self.extract:
            object.__setattr__(self, "extract", (*self.extract, "effects"))
        if "effects" in self.extract and not self.tasks:
            raise ConfigError("the effects stage needs --tasks")
        if "features" in self.extract and not self.dictionaries:
            raise ConfigError("the features stage needs --dictionary")
        for field_, low in (("top_k", 1), ("batch_size", 1), ("seq_len", 8), ("tracked_tokens", 1),
                            ("head_tokens", 8), ("connections_k", 1),
                            ("task_examples", 0)):
            if getattr(self, field_) < low:
                raise ConfigError(f"--{field_.replace('_', '-')} must be at least {low}, not {getattr(self, field_)}")
        if self.max_tokens is not None and self.max_tokens < self.seq_len:
            raise ConfigError("--max-tokens must be at least --seq-len")
        if self.memory_gb <= 0:
            raise ConfigError(f"--memory-gb must be positive, not {self.memory_gb}")
        if self.name is not None and (not self.name or "/" in self.name or ":" in self.name):
            raise ConfigError(f"--name must be non-empty and contain no '/' or ':': {self.name!r}")
        if not DEVICES.match(self.device):
            raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")

    def option(self, name: str):
        return getattr(self, name)

    @classmethod
    def option_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}
