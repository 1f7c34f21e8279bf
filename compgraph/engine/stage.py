"""What a stage is: the unit of computation the job engine plans, runs and records.

A stage is one module that defines a subclass of :class:`Stage` and registers an
instance (:mod:`compgraph.engine.registry`). It declares

- ``name`` and ``version`` (an integer bumped whenever its output changes: the
  next ingest recomputes that stage, and only that stage);
- ``Config``: a frozen, kw-only dataclass of the options that change its output, each
  field declared with :func:`~compgraph.options.option` (default, help, flag,
  checks): the CLI's flags and the job's option table derive from it (device and batch
  size are execution settings, never part of a config);
- ``trigger`` (optional): an option whose non-empty value adds the stage to a job
  (``--tasks`` adds ``effects``);
- ``inputs``: which input digests identify its runs (``weights``, ``corpus``, ...);
- ``requires``: stages whose output it needs in the store first (``tokens``);
- :meth:`Stage.shards`: the shard keys it plans for a model (plain strings);
  changing the execution settings may re-plan shards, never change results;
- :meth:`Stage.run`: one shard -> :class:`Frames`, the one return type of every stage.

Stages never touch a store; the runner writes their frames, stamps provenance, and
resumes by shard. Shards are independent: a shard's inputs are plain values (the
model spec, the stage config, the shard key), so an executor fans them out
(:mod:`compgraph.engine.executors`) and the runner writes them in completion order. So the
shards of one stage must write disjoint sets of (relationship type, source node) and of
(node, property): no order of writing may change the graph.
Within a stage, the edges of one type leaving one source node must come from one
shard: a recomputed shard replaces the edges its stage wrote from its sources.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable

import polars as pl

from compgraph.engine.context import Execution, StageContext
from compgraph.options import Options, option
from compgraph.errors import ConfigError
from compgraph.models.info import ModelInfo
from compgraph.schema import NodeKind, RelKind


@dataclass(frozen=True)
class Frames:
    """Node rows and edge rows by kind: what every stage returns for a shard.

    Node frames have a ``uid`` column; edge frames ``src`` and ``dst`` plus the
    relationship's key properties (see :mod:`compgraph.schema`).
    """

    nodes: tuple[tuple[NodeKind, pl.DataFrame], ...] = ()
    edges: tuple[tuple[RelKind, pl.DataFrame], ...] = ()

    @classmethod
    def of(cls, nodes: Iterable[tuple[NodeKind, pl.DataFrame]] = (),
           edges: Iterable[tuple[RelKind, pl.DataFrame]] = ()) -> "Frames":
        return cls(tuple(nodes), tuple(edges))

    def __add__(self, other: "Frames") -> "Frames":
        return Frames(self.nodes + other.nodes, self.edges + other.edges)

    @property
    def rows(self) -> int:
        return sum(f.height for _, f in self.nodes) + sum(f.height for _, f in self.edges)


@dataclass(frozen=True, kw_only=True)
class NoConfig(Options):
    """A stage whose output depends on its inputs only."""


@dataclass(frozen=True, kw_only=True)
class CorpusConfig(Options):
    """The options of every stage that reads the corpus."""

    corpus: str | None = option(None, "packaged:pile, a .txt/.jsonl/.parquet file, or a cached dataset id "
                                      "[default: a small shipped sample].", metavar="SPEC", show_default=False)
    """The corpus spec (see :mod:`compgraph.data.corpus`)."""
    seq_len: int = option(128, "Tokens per corpus sequence.", minimum=8)
    """Tokens per corpus row."""
    max_tokens: int | None = option(None, "Read at most this many corpus tokens.", minimum=1)
    """Corpus tokens read at most (None: all of them)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_tokens is not None and self.max_tokens < self.seq_len:
            raise ConfigError("--max-tokens must be at least --seq-len")


def check_top_k(info: ModelInfo, top_k: int) -> None:
    """A top-k of tokens must fit the vocabulary."""
    if top_k > info.vocab_size:
        raise ConfigError(f"--top-k {top_k} exceeds the vocabulary ({info.vocab_size} tokens)")


class Stage(ABC):
    """Base of every stage; see the module docstring."""

    name: ClassVar[str]
    version: ClassVar[int]
    Config: ClassVar[type] = NoConfig
    trigger: ClassVar[str | None] = None
    """An option whose non-empty value adds this stage to a job (None: only ``--extract`` does)."""
    inputs: ClassVar[tuple[str, ...]] = ("weights",)
    requires: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""

    def instances(self, config: Any) -> list[tuple[str, Any]]:
        """The independent runs this stage makes of one config, as (scope, config) pairs.

        Most stages make one (scope ``""``). A stage that computes the same thing for
        several subjects — effects for each task, features for each dictionary — makes
        one run per subject: runs replace each other only within a scope, so ingesting
        task B never supersedes task A.
        """
        return [("", config)]

    def replaces(self, scope: str) -> tuple[str, ...]:
        """Scopes of earlier versions of this stage whose runs a run of ``scope`` replaces as
        if they were its own (when a stage changes how it scopes its runs); none by default."""
        return ()

    def digests(self, config: Any) -> dict[str, str]:
        """Digests of inputs only this stage knows how to read (task files, a
        dictionary), added to the run identity; ``weights`` and ``corpus`` come from
        the runner when listed in ``inputs``."""
        return {}

    def edge_models(self, info: ModelInfo, config: Any) -> tuple[str, ...]:
        """The models whose components this stage's edges leave (the runner sweeps a
        superseded run's edges from them): this model's by default; ``match`` writes from
        both models' components."""
        return (info.name,)

    def skip_reason(self, info: ModelInfo) -> str | None:
        """Why this stage does not apply to a model (None: it does)."""
        return None

    def validate(self, info: ModelInfo, config: Any) -> None:
        """Refuse a config that cannot work for this model (raise ConfigError) before
        anything is loaded or written."""

    def check_inputs(self, ctx: StageContext, config: Any) -> None:
        """Checks that need the loaded model or tokenizer (a task's answers being single
        tokens, a dictionary's width); the runner calls them for every stage with work to
        do before the job writes anything."""

    @abstractmethod
    def shards(self, info: ModelInfo, config: Any, execution: Execution) -> list[str]:
        """The shard keys for this model, in the order they run (``execution``: the job's
        :class:`~compgraph.engine.context.Execution`, for stages that size shards to memory)."""

    @abstractmethod
    def run(self, ctx: StageContext, config: Any, shard: str) -> Frames:
        """Compute one shard."""
