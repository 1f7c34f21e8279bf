"""Decode residual-stream directions into tokens through the unembedding.

``decode_topk`` returns, per direction, the k largest and k smallest logits over the
vocabulary. The matmul runs in row chunks; the selection does not call ``topk`` over
the whole vocabulary twice: one ``aminmax`` pass gives each block of ``block``
tokens its max and min, the k best blocks per row (which must hold the k best
tokens) are gathered, and ``topk`` runs on those k*block candidates only.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from compgraph.errors import ConfigError


class Decoded(NamedTuple):
    top_ids: torch.Tensor  # [n, k] largest logit first
    top_logits: torch.Tensor
    bottom_ids: torch.Tensor  # [n, k] smallest logit first
    bottom_logits: torch.Tensor


def _select(logits: torch.Tensor, k: int, block: int) -> Decoded:
    n, vocab = logits.shape
    n_blocks = vocab // block
    if n_blocks < 2 * k or block < 2:  # small vocabularies: plain topk is as fast
        top = logits.topk(k, dim=1)
        bottom = logits.topk(k, dim=1, largest=False)
        return Decoded(top.indices, top.values, bottom.indices, bottom.values)
    main = logits[:, : n_blocks * block].view(n, n_blocks, block)
    lo, hi = torch.aminmax(main, dim=2)
    if n_blocks * block < vocab:  # the tail that does not fill a block competes as its own block
        tail = logits[:, n_blocks * block:]
        lo = torch.cat([lo, tail.min(dim=1, keepdim=True).values], dim=1)
        hi = torch.cat([hi, tail.max(dim=1, keepdim=True).values], dim=1)
        padded = torch.nn.functional.pad(tail, (0, block - tail.shape[1]), value=float("nan"))
        main = torch.cat([main, padded.unsqueeze(1)], dim=1)
    result = []
    for largest, edge in ((True, hi), (False, lo)):
        blocks = edge.topk(k, dim=1, largest=largest).indices  # [n, k]
        cand = torch.gather(main, 1, blocks.unsqueeze(-1).expand(-1, -1, block)).reshape(n, k * block)
        fill = float("-inf") if largest else float("inf")
        cand = torch.nan_to_num(cand, nan=fill)
        best = cand.topk(k, dim=1, largest=largest)
        token = blocks.gather(1, best.indices // block) * block + best.indices % block
        result += [token, best.values]
    return Decoded(*result)


@torch.no_grad()
def decode_topk(directions: torch.Tensor, unembed: torch.Tensor, k: int, *,
                gain: torch.Tensor | None = None, chunk: int = 2048, block: int = 64) -> Decoded:
    """Top-k and bottom-k tokens of ``(directions * gain) @ unembed``.

    directions [n, d_model]; unembed [d_model, vocab]; gain [d_model] (a norm's gain,
    folded into the directions) or None. Results on the directions' device.
    """
    if k < 1 or k > unembed.shape[1]:
        raise ConfigError(f"k must be in 1..{unembed.shape[1]}, not {k}")
    w_u = unembed.to(directions.dtype)
    parts = []
    for start in range(0, directions.shape[0], chunk):
        rows = directions[start:start + chunk]
        if gain is not None:
            rows = rows * gain.to(rows.dtype)
        parts.append(_select(rows @ w_u, k, block))
    return Decoded(*(torch.cat([p[i] for p in parts]) for i in range(4)))
