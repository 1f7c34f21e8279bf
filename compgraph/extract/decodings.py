"""Two models' neurons side by side by the tokens they decode to (the ``decoding`` match method).

Each neuron's top-k tokens are those of its ``via`` direction through the unembedding
(:func:`compgraph.extract.neurons.neuron_decodings`: the ``DECODES_TO {via, sign: "top"}``
tokens the neurons stage writes, rank 1 first). Models that share a tokenizer compare
token ids. Across tokenizers each token id becomes the id of its string in one vocabulary
of both tokenizers' strings (:func:`compgraph.extract.matching.shared_vocabulary`): the
token decoded alone, surrounding whitespace stripped, case kept ("Ġthe", "▁the" and "the"
are one string); a token whose text is only whitespace or holds a partial UTF-8 character
(U+FFFD) has no comparable string and matches nothing. Ids that repeat in a row once mapped
keep their first place only. The scores: :mod:`compgraph.extract.matching`.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from compgraph.extract import matching
from compgraph.extract.neurons import neuron_decodings


class Tops(NamedTuple):
    """Per layer of each model, every neuron's top-k ids in one id space of ``n`` ids."""

    a: list[torch.Tensor]
    b: list[torch.Tensor]
    n: int


def token_string(tokenizer, token: int) -> str | None:
    """Token ``token``'s comparable string (module docstring), or None."""
    text = tokenizer.decode([token]).strip()
    return None if not text or "\ufffd" in text else text


def top_ids(loaded, n_layers: int, k: int, n_tokens: int, via: str,
            advance: Callable[[], None] = lambda: None) -> list[torch.Tensor]:
    """Per layer, every neuron's top-``k`` token ids by ``via`` [d_mlp, k] (on the CPU)."""
    out = []
    for layer in range(n_layers):
        (_, decoded), = neuron_decodings(loaded.model, loaded.adapter, layer, k, n_tokens, vias=(via,))
        out.append(decoded.top_ids.cpu())
        advance()
    return out


def comparable(tops_a: list[torch.Tensor], tops_b: list[torch.Tensor], *, same_tokenizer: bool,
               tokenizer_a=None, tokenizer_b=None, n_a: int = 0, n_b: int = 0) -> Tops:
    """Both models' top ids in one id space: token ids with one tokenizer (below the larger of
    ``n_a`` and ``n_b``); else string ids over the first ``n_a`` / ``n_b`` ids of each tokenizer."""
    if same_tokenizer:
        return Tops(tops_a, tops_b, max(n_a, n_b))
    map_a, map_b, n = matching.shared_vocabulary([token_string(tokenizer_a, t) for t in range(n_a)],
                                                 [token_string(tokenizer_b, t) for t in range(n_b)])
    return Tops([matching.distinct_rows(map_a[t]) for t in tops_a], [matching.distinct_rows(map_b[t]) for t in tops_b],
                n)
