"""Writing a dictionary in SAELens's layout (``cfg.json`` + ``sae_weights.safetensors``), the
inverse of :func:`compgraph.dictionaries.readers.read_saelens`."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from compgraph.dictionaries.base import Dictionary
from compgraph.dictionaries.readers import TL_HOOK_SITES
from compgraph.errors import ConfigError


def tl_hook(site: str, layer: int) -> str:
    """The TransformerLens hook name of a compgraph site (the first of
    :data:`compgraph.dictionaries.readers.TL_HOOK_SITES` naming it)."""
    for hook, name in TL_HOOK_SITES.items():
        if name == site:
            return f"blocks.{layer}.{hook}"
    raise ConfigError(f"no TransformerLens hook name for site {site!r}")


def save_saelens(d: Dictionary, out: str | Path, *, model_name: str = "", context_size: int | None = None,
                 extra: dict | None = None) -> Path:
    """Write ``d`` (activation ``topk``) as SAELens 6 does: ``cfg.json`` (architecture
    ``topk`` for an SAE; ``transcoder`` with ``activation_fn`` ``topk`` for a transcoder,
    plus ``d_out`` and ``hook_name_out``) and ``sae_weights.safetensors`` (W_enc [d_in,
    d_sae], b_enc, W_dec [d_sae, d_out], b_dec). ``extra`` goes under ``compgraph``."""
    if d.activation != "topk" or d.layer is None:
        raise ConfigError("save_saelens writes TopK dictionaries of a layer only")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    transcoder = d.kind == "transcoder"
    cfg = {
        "architecture": "transcoder" if transcoder else "topk", "d_in": d.d_in, "d_sae": d.width, "k": d.k,
        "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": d.subtract_b_dec,
        "normalize_activations": "none", "reshape_activations": "none",
        "metadata": {"model_name": model_name, "hook_name": tl_hook(d.site, d.layer), "hook_head_index": None,
                     "prepend_bos": True, "context_size": context_size, "sae_lens_training_version": None},
    }
    if transcoder:
        cfg.update({"activation_fn": "topk", "d_out": d.d_out,
                    "hook_name_out": tl_hook(d.output_site, d.output_layer)})
    if extra:
        cfg["compgraph"] = extra
    (out / "cfg.json").write_text(json.dumps(cfg, indent=2, default=str))
    save_file({n: getattr(d, n).detach().cpu().float().contiguous() for n in ("W_enc", "b_enc", "W_dec", "b_dec")},
              str(out / "sae_weights.safetensors"))
    return out
