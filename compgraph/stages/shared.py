"""Options several stages take, each declared once (a stage's config inherits the groups it
takes; :func:`compgraph.engine.registry.options` accepts a name declared by two stages only
through one such declaration)."""

from __future__ import annotations

from dataclasses import dataclass

from compgraph.options import Options, option


@dataclass(frozen=True, kw_only=True)
class TopKConfig(Options):
    top_k: int = option(10, "Tokens per component and sign.", minimum=1)
    """Tokens per component and sign (DECODES_TO) and per component (ACTIVATES_ON)."""


@dataclass(frozen=True, kw_only=True)
class TrackedConfig(Options):
    tracked_tokens: int = option(4096, "ACTIVATES_ON ranks the corpus's most frequent tokens, this many.", minimum=1)
    """ACTIVATES_ON candidates: the corpus's most frequent tokens, this many."""


@dataclass(frozen=True, kw_only=True)
class ConnectionsKConfig(Options):
    connections_k: int = option(10, "Weights-based connections kept per source component (stage connections).",
                                minimum=1)
    """Weights-based connections kept per source component (virtual, OV->MLP, MLP->heads,
    transcoder feature -> feature); head -> head composition keeps every pair."""


@dataclass(frozen=True, kw_only=True)
class DictionariesConfig(Options):
    dictionaries: tuple[str, ...] = option((), "An SAE / transcoder (SAELens, sparsify, circuit-tracer) for the "
                                               "features stage, or whose features the effects stage measures "
                                               "(with --components feature); repeatable.",
                                           flags=("--dictionary",), repeat=True, metavar="PATH", show_default=False)
    """SAE / transcoder paths (SAELens, sparsify, circuit-tracer)."""
