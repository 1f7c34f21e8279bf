"""Transcoder feature → feature connections through the residual stream (Dunefsky et al. 2024).

For feature i of a transcoder A (writing ``output_site`` of layer l_A) and feature j of a
transcoder B (reading ``site`` of layer l_B) that reads the residual stream after A's
write (:func:`reaches`), in the row-vector convention::

    weight(i -> j) = (W_dec^A[i] C_A diag(g_A)) . (C_B diag(g_B) W_enc^B[:, j])

- ``g_B`` is the gain of the norm B reads through: the pre-MLP norm of layer l_B when B
  reads ``mlp_in`` (``C_B`` its centring for a LayerNorm, the identity for an RMSNorm);
  the identity when B reads the residual stream itself (``resid_pre``, ``resid_mid``,
  ``resid_post``). This is the folding of :mod:`compgraph.weights.folding`, as for
  neurons' virtual weights.
- ``g_A`` (``C_A``) is a norm on A's output before the residual add, where the family has
  one (Gemma 3's ``post_feedforward_layernorm``); else the identity.

The input-dependent scale 1/rms(x) of B's norm and all biases are left out: the weight
is input-invariant, signed and not normalised. Post-norm encoders (BERT) renormalise the
residual between blocks; that norm is not folded.

Residual-stream order (2l is block l's input): reads ``resid_pre@l`` at 2l, ``resid_mid@l``
and ``mlp_in@l`` at 2l+1 (``mlp_in`` at 2l with parallel attention and MLP), ``resid_post@l``
at 2l+2; writes ``attn_out@l`` and ``resid_mid@l`` are seen from 2l+1 on (from 2l+2 with
parallel attention and MLP), ``mlp_out@l`` and ``resid_post@l`` from 2l+2 on. B reads A's
write when its read position is at or after A's. Transcoders on other sites connect to
nothing.

Per source feature the ``k`` targets of largest |weight| over all target transcoders are
kept (both signs). The width_A × width_B matrix of one pair is never formed whole: one
[chunk, width_B] block at a time, plus the running top-k [width_A, k]
(:class:`compgraph.weights.frames.TopK`).
"""

from __future__ import annotations

import torch

from compgraph.dictionaries.base import Dictionary
from compgraph.weights import folding
from compgraph.weights.frames import TopK

def read_position(site: str, layer: int, parallel: bool) -> int | None:
    """Where in the residual stream a dictionary reading ``site`` of ``layer`` reads (None: not the residual)."""
    if site == "resid_pre" or site == "mlp_in" and parallel:
        return 2 * layer
    if site in ("resid_mid", "mlp_in"):
        return 2 * layer + 1
    if site == "resid_post":
        return 2 * layer + 2
    return None


def write_position(site: str, layer: int, parallel: bool) -> int | None:
    """From where on in the residual stream a write to ``site`` of ``layer`` is seen (None: not a residual write)."""
    if site in ("attn_out", "resid_mid"):
        return 2 * layer + (2 if parallel else 1)
    if site in ("mlp_out", "resid_post"):
        return 2 * layer + 2
    return None


def reaches(source: Dictionary, target: Dictionary, parallel: bool) -> bool:
    """Whether ``target`` reads the residual stream after ``source`` writes into it."""
    if source.layer is None or target.layer is None or source.output_layer is None:
        return False
    write = write_position(source.output_site or source.site, source.output_layer, parallel)
    read = read_position(target.site, target.layer, parallel)
    return write is not None and read is not None and read >= write


def folded_writes(model, adapter, d: Dictionary, dtype: torch.dtype) -> torch.Tensor:
    """[width, d_model]: decoder rows through the norm on the output, if any."""
    site = {"mlp_out": "mlp", "attn_out": "attn"}.get(d.output_site or "")
    fold = folding.write_fold(model, adapter, d.output_layer, site) if site else folding.IDENTITY
    device = next(model.parameters()).device
    return folding.fold_write(d.W_dec.to(device=device, dtype=dtype), fold, dim=-1)


def folded_reads(model, adapter, d: Dictionary, dtype: torch.dtype) -> torch.Tensor:
    """[d_model, width]: encoder columns through the norm the input passes (``mlp_in``: the pre-MLP norm)."""
    fold = folding.read_fold(model, adapter, d.layer, "mlp") if d.site == "mlp_in" else folding.IDENTITY
    device = next(model.parameters()).device
    return folding.fold_read(d.W_enc.to(device=device, dtype=dtype), fold, dim=0)


@torch.no_grad()
def connection_topk(model, adapter, source: Dictionary, targets: list[Dictionary], k: int, *, chunk: int = 2048,
                    dtype: torch.dtype = torch.float32) -> TopK | None:
    """The running top-k of ``source``'s features over every target it reaches (the
    ``layer`` field of the result holds the target's position in ``targets``); None when
    it reaches none."""
    parallel = adapter.is_parallel(model.config.get_text_config())
    reached = [(t_index, t) for t_index, t in enumerate(targets) if reaches(source, t, parallel)]
    if not reached:
        return None
    writes = folded_writes(model, adapter, source, dtype)
    top = TopK(source.width, k, writes.device, dtype)
    for t_index, target in reached:
        reads = folded_reads(model, adapter, target, dtype)
        for start in range(0, source.width, chunk):
            rows = slice(start, start + chunk)
            top.add(top.scratch.matmul("block", writes[rows], reads), t_index, rows)
    return top
