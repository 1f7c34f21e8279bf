"""What a node effect is: methods, ablations, directions, and the frame every node-effect
function returns.

Inputs, for ``n`` examples of ``T`` tokens: a :class:`~compgraph.data.tasks.TaskBatch`
(clean and corrupt prompts, left-padded with their attention mask and position ids, the
answer and wrong token of each example) and ``metric(logits, answer_ids, wrong_ids) -> [n]``,
the per-example metric (e.g. :func:`compgraph.data.tasks.logit_diff`). The logits it
receives are those of the last position only (``[n, 1, vocab]``, the model's
``logits_to_keep=1``), so it must read position ``-1``.

Definitions (M = mean over examples of the per-example metric; a *component's activation*
is defined in :mod:`compgraph.effects.components`):

- **activation patching, noising** (``ablation="corrupt"``, ``direction="noising"``):
  M(clean run with the component's activation replaced, at every position, by its value
  in the corrupt run of the same example) − M(clean).
- **denoising** (``direction="denoising"``, ablation corrupt only): M(corrupt run with the
  component's clean value) − M(corrupt).
- **ablations** (noising only): ``zero``: the activation set to 0; ``mean``: set to its mean
  over the clean run's prompt positions (attention mask 1) and examples (one vector per
  component, the same at every position); ``resample``: set to the clean value of another
  example at the same position, example ``i`` taking example ``perm[i]`` where ``perm`` is
  a derangement (no fixed point) drawn from a generator seeded with ``seed``. Effect:
  M(ablated) − M(clean).
- **attribution patching** and **EAP-IG**: first-order estimates of the same noising
  effect from gradients (:mod:`compgraph.effects.attribution`).
- **verified**: attribution patching of every component, then activation patching of
  those whose effect could matter (:mod:`compgraph.effects.verified`); every row still
  says which of the two measured it.

Every effect is stored raw (``effect``, metric units) and as ``effect_norm`` = effect ÷
(M(corrupt) − M(clean)) for every method, ablation and direction alike (so a component
whose noising reproduces the whole corrupt run scores 1, and its denoising −1); NaN when
M(corrupt) = M(clean).
"""

from __future__ import annotations

import math
from typing import Callable

import polars as pl
import torch

from compgraph.effects.components import Component
from compgraph.errors import ConfigError

Metric = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``metric(logits [n, 1, vocab], answer_ids [n], wrong_ids [n]) -> [n]``."""

VERIFIED, ACTIVATION, ATTRIBUTION, EAP_IG = "verified", "activation", "attribution", "eap-ig"
METHODS = (VERIFIED, ACTIVATION, ATTRIBUTION, EAP_IG)
"""``verified``: attribution for all, activation patching of the candidates (:mod:`compgraph.effects.verified`)."""
GRADIENT_METHODS = (ATTRIBUTION, EAP_IG)
ABLATIONS = ("corrupt", "zero", "mean", "resample")
DIRECTIONS = ("noising", "denoising")
DEFAULT_BATCH_TOKENS = 8192

NODE_SCHEMA = {"component": pl.String, "layer": pl.Int64, "index": pl.Int64, "effect": pl.Float64,
               "effect_norm": pl.Float64, "method": pl.String, "ablation": pl.String, "direction": pl.String}
"""The columns of a node-effect frame: one row per component (kind, layer, index)."""


def check(ablation: str, direction: str, method: str = ACTIVATION) -> None:
    """Refuse an unknown method, ablation or direction, and combinations that do not exist."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    if ablation not in ABLATIONS:
        raise ConfigError(f"unknown ablation {ablation!r}; known: {', '.join(ABLATIONS)}")
    if direction not in DIRECTIONS:
        raise ConfigError(f"unknown direction {direction!r}; known: {', '.join(DIRECTIONS)}")
    if direction == "denoising" and ablation != "corrupt":
        raise ConfigError("denoising patches clean values into the corrupt run: ablation must be 'corrupt'")
    if method == EAP_IG and (ablation != "corrupt" or direction != "noising"):
        raise ConfigError("eap-ig integrates between the clean and corrupt inputs: ablation 'corrupt', noising only")


def effect_norm(effect: float, clean: float, corrupt: float) -> float:
    """effect ÷ (M(corrupt) − M(clean)); NaN when the two are equal."""
    denominator = corrupt - clean
    return effect / denominator if denominator != 0 else math.nan


def node_frame(components: list[Component], effects, baselines: dict, method: str, ablation: str,
               direction: str) -> pl.DataFrame:
    """A node-effect frame (:data:`NODE_SCHEMA`) from effects in metric units and the
    baselines ``{"clean": M(clean), "corrupt": M(corrupt)}``."""
    effects = [float(e) for e in effects]
    norm = [effect_norm(e, baselines["clean"], baselines["corrupt"]) for e in effects]
    return pl.DataFrame({
        "component": [str(c.kind) for c in components], "layer": [c.layer for c in components],
        "index": [c.index for c in components], "effect": effects, "effect_norm": norm,
        "method": [method] * len(components), "ablation": [ablation] * len(components),
        "direction": [direction] * len(components),
    }, schema=NODE_SCHEMA)
