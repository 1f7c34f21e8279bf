"""One in-memory type for every sparse dictionary: SAEs and transcoders.

Row-vector convention, like :mod:`compgraph.models.params` (activations are rows,
``x @ W``), whatever orientation the file used:

=========  ==================  =====================================================
tensor     shape               meaning
=========  ==================  =====================================================
W_enc      [d_in, width]       column j is feature j's read direction
b_enc      [width]
threshold  [width] or None     JumpReLU only
W_dec      [width, d_out]      row j is feature j's write direction
b_dec      [d_out]
W_skip     [d_in, d_out]|None  linear skip connection (transcoders): adds ``x @ W_skip``
=========  ==================  =====================================================

``encode(x)``::

    x' = x - b_dec  if subtract_b_dec (SAELens ``apply_b_dec_to_input``; sparsify SAEs)
    pre = x' @ W_enc + b_enc
    relu      f = max(pre, 0)
    jumprelu  f = pre * (pre > threshold)
    topk      f = the k largest of max(pre, 0), the rest 0          (SAELens, sparsify)
    topk_raw  f = the k largest of pre, kept as they are, the rest 0 (circuit-tracer)

``decode(f, x=None)`` = ``f @ W_dec + b_dec`` (+ ``x @ W_skip`` with a skip connection,
which needs the input ``x``).

How each format maps onto this (the readers in :mod:`compgraph.dictionaries.readers`):

- SAELens JumpReLU is ``relu(pre) * (pre > t)``, which equals ``pre * (pre > max(t, 0))``:
  the reader stores ``max(t, 0)``, so one JumpReLU rule serves every format.
- SAELens TopK takes the top k of ``pre`` and then applies ReLU; sparsify applies ReLU and
  then takes the top k. Both give the same dense result (the positive values among the k
  largest), up to the order of exact ties at the k-th place: both are ``topk``.
- circuit-tracer's TopK has no ReLU: negative pre-activations among the k largest stay.
  That is ``topk_raw``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from compgraph.errors import ConfigError

Kind = Literal["sae", "transcoder"]
Activation = Literal["relu", "jumprelu", "topk", "topk_raw"]
ACTIVATIONS = ("relu", "jumprelu", "topk", "topk_raw")
KINDS = ("sae", "transcoder")


@dataclass(frozen=True, kw_only=True, eq=False)
class Dictionary:
    """A sparse dictionary read from disk: weights in compgraph's orientation plus where
    it reads from and writes to in the model."""

    kind: Kind
    """``"sae"`` (reconstructs its input site) or ``"transcoder"`` (predicts ``output_site``)."""
    site: str
    """Canonical site the encoder reads (``resid_post``, ``mlp_in``, ...; see readers)."""
    layer: int | None
    """Block index of ``site``; None only for ``embed``."""
    activation: Activation
    """One of ``relu``, ``jumprelu``, ``topk``, ``topk_raw`` (module docstring)."""
    W_enc: torch.Tensor
    """[d_in, width]."""
    b_enc: torch.Tensor
    """[width]."""
    W_dec: torch.Tensor
    """[width, d_out]."""
    b_dec: torch.Tensor
    """[d_out]."""
    k: int | None = None
    """Active features per token (``topk`` and ``topk_raw`` only)."""
    threshold: torch.Tensor | None = None
    """[width] (``jumprelu`` only)."""
    W_skip: torch.Tensor | None = None
    """[d_in, d_out] linear skip connection, or None."""
    subtract_b_dec: bool = False
    """Subtract ``b_dec`` from the input before encoding (needs d_in == d_out)."""
    output_site: str | None = None
    """Canonical site a transcoder writes (``mlp_out``, ...); for an SAE, ``site``."""
    output_layer: int | None = None
    """Block index of ``output_site``."""
    hook: str = ""
    """The format's own name for the input site (``blocks.6.hook_resid_post``, ``layers.6``)."""
    source: str = ""
    """The file or folder it was read from."""
    format: str = ""
    """``saelens``, ``sparsify`` or ``circuit-tracer``."""

    @property
    def width(self) -> int:
        """Number of features (d_sae)."""
        return int(self.W_enc.shape[1])

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_out(self) -> int:
        return int(self.W_dec.shape[1])

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - b_dec?) @ W_enc + b_enc`` for ``x`` [..., d_in] → [..., width]."""
        x = x.to(self.W_enc.dtype)
        if self.subtract_b_dec:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations [..., width] of inputs ``x`` [..., d_in] (dense)."""
        return apply_activation(self.pre_activations(x), self.activation, k=self.k, threshold=self.threshold)

    def decode(self, f: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Output [..., d_out] of feature activations ``f``; a skip connection needs ``x``."""
        out = f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec
        if self.W_skip is not None:
            if x is None:
                raise ConfigError("this dictionary has a skip connection: decode(f, x) needs its input x")
            out = out + x.to(self.W_skip.dtype) @ self.W_skip
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x), x)``: the reconstruction (SAE) or prediction (transcoder)."""
        return self.decode(self.encode(x), x)

    def describe(self) -> str:
        """One line for logs: ``sae resid_post@6 width 4096 topk(k=32) from PATH``."""
        act = f"topk(k={self.k})" if self.k is not None else self.activation
        out = f" -> {self.output_site}@{self.output_layer}" if self.kind == "transcoder" else ""
        return f"{self.kind} {self.site}@{self.layer}{out} width {self.width} {act} ({self.format}) from {self.source}"


def apply_activation(pre: torch.Tensor, activation: str, *, k: int | None = None,
                     threshold: torch.Tensor | None = None) -> torch.Tensor:
    """The sparsifying nonlinearity on pre-activations ``pre`` [..., width]."""
    if activation == "relu":
        return torch.relu(pre)
    if activation == "jumprelu":
        if threshold is None:
            raise ConfigError("jumprelu needs a threshold")
        return pre * (pre > threshold.to(pre.dtype)).to(pre.dtype)
    if activation in ("topk", "topk_raw"):
        if k is None:
            raise ConfigError(f"{activation} needs k")
        source = torch.relu(pre) if activation == "topk" else pre
        values, indices = torch.topk(source, k=min(int(k), pre.shape[-1]), dim=-1)
        return torch.zeros_like(pre).scatter_(-1, indices, values)
    raise ConfigError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")


def validate(d: Dictionary, where: str) -> Dictionary:
    """Check that the tensors agree with each other and the fields with the kind and
    activation; raise a one-line :class:`ConfigError` naming ``where`` otherwise."""

    def fail(problem: str) -> None:
        raise ConfigError(f"{where}: {problem}")

    if d.kind not in KINDS:
        fail(f"unknown kind {d.kind!r} (known: {', '.join(KINDS)})")
    if d.activation not in ACTIVATIONS:
        fail(f"unknown activation {d.activation!r} (known: {', '.join(ACTIVATIONS)})")
    for name in ("W_enc", "W_dec"):
        if getattr(d, name).ndim != 2:
            fail(f"{name} has shape {list(getattr(d, name).shape)}, expected a matrix")
    d_in, width = d.W_enc.shape
    if tuple(d.b_enc.shape) != (width,):
        fail(f"b_enc has shape {list(d.b_enc.shape)}, expected [{width}] (the width of W_enc {list(d.W_enc.shape)})")
    if d.W_dec.shape[0] != width:
        fail(f"W_dec has shape {list(d.W_dec.shape)}, expected [{width}, d_out] "
             f"(the width of W_enc {list(d.W_enc.shape)})")
    d_out = d.W_dec.shape[1]
    if tuple(d.b_dec.shape) != (d_out,):
        fail(f"b_dec has shape {list(d.b_dec.shape)}, expected [{d_out}] (d_out of W_dec {list(d.W_dec.shape)})")
    if d.W_skip is not None and tuple(d.W_skip.shape) != (d_in, d_out):
        fail(f"W_skip has shape {list(d.W_skip.shape)}, expected [{d_in}, {d_out}]")
    if d.subtract_b_dec and d_in != d_out:
        fail(f"b_dec is subtracted from the input but has {d_out} entries for an input of width {d_in}")
    if d.activation == "jumprelu":
        if d.threshold is None:
            fail("jumprelu without a threshold tensor")
        if tuple(d.threshold.shape) != (width,):
            fail(f"threshold has shape {list(d.threshold.shape)}, expected [{width}]")
    if d.activation in ("topk", "topk_raw"):
        if d.k is None or int(d.k) < 1 or int(d.k) > width:
            fail(f"{d.activation} needs 1 <= k <= width {width}, got k={d.k}")
    if d.kind == "sae" and d_in != d_out:
        fail(f"an SAE must reconstruct its input: d_in {d_in} != d_out {d_out}")
    if d.kind == "transcoder" and d.output_site is None:
        fail("a transcoder needs an output site")
    return d


def check_against(dictionary: Dictionary, d_model_of_site: int) -> None:
    """Refuse a dictionary whose input width differs from its site's width in the model."""
    if dictionary.d_in != int(d_model_of_site):
        raise ConfigError(
            f"{dictionary.source}: dictionary input width {dictionary.d_in} does not match the model's "
            f"{dictionary.site} width {int(d_model_of_site)} at layer {dictionary.layer}")
