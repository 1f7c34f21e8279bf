"""What a running stage may use: the model (loaded on first use), its tokenizer's
identity, the corpus as a token stream, execution settings and progress bars.

One context serves every stage of a job, so the weights are loaded once and the
corpus tokenized once, and only when a stage has a shard left to compute.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from compgraph import schema
from compgraph.data.corpus import resolve_corpus
from compgraph.data.tokens import TokenStream
from compgraph.options import Options, option
from compgraph.errors import ConfigError
from compgraph.models import loading
from compgraph.models.info import n_tokens as existing_tokens
from compgraph.models.info import ModelInfo

Progress = Callable[[str, int], Callable[[], None]]
"""``progress(label, total)`` returns a callable that advances that bar by one."""


def no_progress(label: str, total: int) -> Callable[[], None]:
    return lambda: None


DEVICES = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True, kw_only=True)
class Execution(Options):
    """Settings that change how fast a job runs, not what it writes (up to floating-point
    precision: ``dtype``, and the statistics passes' bfloat16 on a CPU with native bfloat16)."""

    device: str = option("auto", "auto, cpu, cuda or cuda:N.")
    """auto (cuda when available), cpu, cuda or cuda:N."""
    dtype: str = option("auto", "auto, float32, bfloat16 or float16.", choices=DTYPES)
    """auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16 or float16."""
    batch_size: int = option(8, "Sequences per forward pass.", minimum=1)
    """Sequences per forward pass."""
    memory_gb: float = option(2.0, "Budget for statistics accumulators (layers are grouped to fit).", positive=True)
    """Budget for per-layer accumulators: activation statistics group layers to fit it."""
    executor: str = option("local", "local, or ray: shards on Ray actors.", choices=("local", "ray"))
    """Where shards are computed (:mod:`compgraph.engine.executors`)."""
    ray_address: str = option("", "Ray cluster to join (auto, or HOST:PORT) [default: a local Ray for the job].")
    """``--executor ray``: the cluster's address; empty starts a local Ray for the job."""
    workers: int = option(2, "--executor ray: actors, each holding one copy of the model.", minimum=1)
    """``--executor ray``: how many actors (model copies) compute shards."""
    gpus_per_worker: float = option(0.0, "--executor ray: GPUs each actor holds.", minimum=0)
    """``--executor ray``: GPUs per actor (0 on CPU-only clusters)."""

    def __post_init__(self) -> None:
        if not DEVICES.match(str(self.device)):
            raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        if self.executor == "ray" and importlib.util.find_spec("ray") is None:
            raise ConfigError("--executor ray needs Ray: pip install 'compgraph[ray]'")
        if self.executor == "ray" and self.gpus_per_worker == 0 and str(self.device).startswith("cuda"):
            raise ConfigError(f"--device {self.device} with --executor ray needs --gpus-per-worker above 0")
        super().__post_init__()

    def stats_dtype(self) -> str | None:
        """The precision of the neuron statistics pass's forward (None: the model's own). With
        ``--dtype auto`` on a CPU that computes bfloat16 natively, ``"bfloat16"`` (autocast;
        statistics still accumulate in float32); the model itself stays float32 there."""
        if self.dtype == "auto" and loading.pick_device(self.device) == "cpu" and loading.auto_bfloat16("cpu"):
            return "bfloat16"
        return None


@dataclass
class StageContext:
    info: ModelInfo
    execution: Execution
    corpus_spec: str | None = None
    progress: Progress = no_progress
    loaded: Any = None
    """A :class:`compgraph.models.loading.LoadedModel`, set on first use (or given)."""
    _streams: dict = field(default_factory=dict)
    _memo: dict = field(default_factory=dict)

    # ---- the model ----------------------------------------------------------------------
    def stats_dtype(self):
        """The torch dtype the statistics passes autocast to (:meth:`Execution.stats_dtype`), or None."""
        name = self.execution.stats_dtype()
        if name is None:
            return None
        import torch

        return getattr(torch, name)

    def model(self):
        """The LoadedModel (model, tokenizer, adapter), loading the weights on first call."""
        if self.loaded is None:
            self.loaded = loading.load(self.info.spec, device=self.execution.device, dtype=self.execution.dtype)
        return self.loaded

    def other_model(self, spec: str):
        """Another model a stage reads beside this one (``match``), loaded once per job."""
        return self.memo(("model", spec), lambda: loading.load(spec, device=self.execution.device,
                                                                dtype=self.execution.dtype))

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()``, once per job for ``key``: what several shards of a stage read
        (another model, activations over the corpus). A resumed job computes it again."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    @property
    def n_tokens(self) -> int:
        """This model's token ids that exist (:func:`compgraph.models.info.n_tokens`)."""
        return existing_tokens(self.model().tokenizer, self.info)

    @property
    def tokenizer_id(self) -> str:
        cached = getattr(self, "_tokenizer_id", None)
        if cached is None:
            cached = schema.tokenizer_uid("vocab", self.model().tokenizer.get_vocab())
            self._tokenizer_id = cached
        return cached

    def special_ids(self) -> set[int]:
        return set(self.model().tokenizer.all_special_ids)

    # ---- the corpus -----------------------------------------------------------------------
    def tokens(self, *, seq_len: int, max_tokens: int | None) -> TokenStream:
        """The corpus as a :class:`~compgraph.data.tokens.TokenStream` (built once per shape)."""
        key = (seq_len, max_tokens)
        if key not in self._streams:
            corpus = resolve_corpus(self.corpus_spec)
            self._streams[key] = TokenStream(self.model().tokenizer, corpus.documents(), seq_len=seq_len,
                                             max_tokens=max_tokens)
        return self._streams[key]

    def close(self) -> None:
        for stream in self._streams.values():
            stream.close()
        self._streams.clear()
        self._memo.clear()
