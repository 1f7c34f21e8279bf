"""Read SAEs and transcoders from disk into :class:`~compgraph.dictionaries.base.Dictionary`.

``read_dictionary(path)`` detects the format and always returns a list (one dictionary for
an SAELens or sparsify folder; one per hookpoint for a sparsify run folder; one per layer
for a circuit-tracer transcoder set):

==============  ===========================================================================
format          what is on disk
==============  ===========================================================================
saelens         ``cfg.json`` + ``sae_weights.safetensors``: ``W_enc`` [d_in, d_sae],
                ``b_enc``, ``W_dec`` [d_sae, d_out], ``b_dec``, ``threshold`` (JumpReLU),
                ``W_skip`` [d_out, d_in] (skip transcoder). Config: ``d_in``, ``d_sae``,
                ``architecture``, the hook name (top level, or in ``metadata`` / ``meta``
                since 6.0; ``hook_point`` before), ``k`` (6.0) or ``activation_fn_kwargs.k``.
sparsify        ``<hookpoint>/cfg.json`` + ``<hookpoint>/sae.safetensors``: ``encoder.weight``
                [num_latents, d_in], ``encoder.bias``, ``W_dec`` [num_latents, d_in],
                ``b_dec``, ``W_skip`` [d_in, d_in]. Config: ``d_in``, ``k``, ``num_latents``
                or ``expansion_factor``, ``transcode``, ``skip_connection``, ``activation``.
                The folder name is the hookpoint (a module path of the HF model).
circuit-tracer  ``config.yaml`` (``model_kind: transcoder_set``, ``feature_input_hook``,
                ``feature_output_hook``, ``transcoders`` [paths, one per layer] or
                ``layer_{i}.safetensors`` beside it, ``activation``, ``k``); each file:
                ``W_enc`` [d_transcoder, d_model], ``b_enc``, ``W_dec`` [d_transcoder,
                d_model], ``b_dec``, ``activation_function.threshold``, ``W_skip``
                [d_model, d_model] (applied as ``x @ W_skip.T``).
==============  ===========================================================================

Hook names → compgraph sites. TransformerLens names (SAELens ``hook_name``, circuit-tracer
``feature_*_hook``; ``blocks.{L}.`` optional in circuit-tracer, where the layer is the
file's index):

==========================================  ============  =================================
hook                                        site          note
==========================================  ============  =================================
``hook_embed``                              embed         layer None
``blocks.L.hook_resid_pre``                 resid_pre
``blocks.L.hook_resid_mid``,                resid_mid     TL's ``hook_mlp_in`` is a copy of
``blocks.L.hook_mlp_in``                                  resid_mid (before ln2)
``blocks.L.ln2.hook_normalized``,           mlp_in        the MLP's input, after its norm
``blocks.L.mlp.hook_in``
``blocks.L.mlp.hook_pre``                   mlp_pre_act
``blocks.L.mlp.hook_post``                  mlp_hidden
``blocks.L.hook_mlp_out``,                  mlp_out
``blocks.L.mlp.hook_out``
``blocks.L.attn.hook_z``                    attn_z        heads flattened [H*d_head]
``blocks.L.hook_attn_out``,                 attn_out
``blocks.L.attn.hook_out``
``blocks.L.hook_resid_post``                resid_post
==========================================  ============  =================================

sparsify hookpoints (HF module paths; a ``model.``, ``model.language_model.``,
``gpt_neox.`` or ``transformer.`` prefix is dropped; ``h.L`` reads like ``layers.L``):

======================================  ===============  ==================================
hookpoint                               SAE site         transcoder (input → output)
======================================  ===============  ==================================
``layers.L``                            resid_post       resid_pre → resid_post
``layers.L.mlp``                        mlp_out          mlp_in → mlp_out
``layers.L.self_attn`` / ``.attn`` /    attn_out         refused (the attention input is
``.attention``                                           not one residual-width site)
======================================  ===============  ==================================

``mlp_in`` is the MLP's input after the pre-MLP norm, a site of :mod:`compgraph.models.hooks`.

Every problem is a one-line :class:`~compgraph.errors.ConfigError` naming the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import torch

from compgraph.dictionaries.base import Dictionary, validate
from compgraph.errors import ConfigError

SAELENS_CONFIG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SPARSIFY_CONFIG = "cfg.json"
SPARSIFY_WEIGHTS = "sae.safetensors"
CIRCUIT_TRACER_CONFIG = "config.yaml"

TL_HOOK_SITES = {
    "hook_resid_pre": "resid_pre",
    "hook_resid_mid": "resid_mid",
    "hook_mlp_in": "resid_mid",
    "ln2.hook_normalized": "mlp_in",
    "mlp.hook_in": "mlp_in",
    "mlp.hook_pre": "mlp_pre_act",
    "mlp.hook_post": "mlp_hidden",
    "hook_mlp_out": "mlp_out",
    "mlp.hook_out": "mlp_out",
    "attn.hook_z": "attn_z",
    "hook_attn_out": "attn_out",
    "attn.hook_out": "attn_out",
    "hook_resid_post": "resid_post",
}
"""TransformerLens hook names (after ``blocks.L.``) → compgraph sites."""

_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_SPARSIFY_PREFIXES = ("model.language_model.", "model.", "gpt_neox.", "transformer.")
_SPARSIFY_HOOK = re.compile(r"^(?:layers|h)\.(\d+)(?:\.(mlp|self_attn|attn|attention))?$")


def _fail(where: Path | str, problem: str) -> ConfigError:
    return ConfigError(f"{where}: {' '.join(str(problem).split())}")


# --------------------------------------------------------------------------- helpers


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise _fail(path, f"cannot read: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise _fail(path, f"not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise _fail(path, "expected a JSON object")
    return data


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise _fail(path, "file not found")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise _fail(path, f"not a readable safetensors file ({e})") from None


def _need(cfg: dict[str, Any], key: str, where: Path) -> Any:
    if key not in cfg or cfg[key] is None:
        raise _fail(where, f"missing field {key!r}")
    return cfg[key]


def _int(value: Any, key: str, where: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise _fail(where, f"field {key!r} must be an integer, got {value!r}")
    return int(value)


def _tensor(tensors: dict[str, torch.Tensor], key: str, where: Path) -> torch.Tensor:
    if key not in tensors:
        raise _fail(where, f"missing tensor {key!r} (has: {', '.join(sorted(tensors)) or 'none'})")
    return tensors[key]


def _shape(t: torch.Tensor, expected: tuple[int, ...], name: str, where: Path, why: str) -> None:
    if tuple(t.shape) != expected:
        raise _fail(where, f"tensor {name} has shape {list(t.shape)}, expected {list(expected)} ({why})")


def tl_site(hook: str, where: Path | str, *, layer: int | None = None) -> tuple[str, int | None]:
    """``(site, layer)`` of a TransformerLens hook name; ``layer`` fills in a name without
    ``blocks.L.`` (circuit-tracer's per-layer hooks)."""
    if hook == "hook_embed":
        return "embed", None
    m = _BLOCK.match(hook)
    if m:
        layer, name = int(m.group(1)), m.group(2)
    else:
        name = hook
    site = TL_HOOK_SITES.get(name)
    if site is None or layer is None:
        raise _fail(where, f"unknown hook {hook!r} (known: hook_embed, blocks.L.<{', '.join(TL_HOOK_SITES)}>)")
    return site, layer


# --------------------------------------------------------------------------- SAELens

_SAELENS_SAE = {"standard", "jumprelu", "topk"}
_SAELENS_TRANSCODERS = {"transcoder", "skip_transcoder", "jumprelu_transcoder"}


def read_saelens(folder: str | Path) -> list[Dictionary]:
    """One SAELens SAE or transcoder (``cfg.json`` + ``sae_weights.safetensors``)."""
    folder = Path(folder)
    cfg_path, weights_path = folder / SAELENS_CONFIG, folder / SAELENS_WEIGHTS
    cfg = _load_json(cfg_path)
    meta = {**(cfg.get("meta") or {}), **(cfg.get("metadata") or {})}

    architecture = cfg.get("architecture", "standard")  # pre-6.0 configs may omit it
    if architecture not in _SAELENS_SAE | _SAELENS_TRANSCODERS:
        raise _fail(cfg_path, f"unsupported architecture {architecture!r} "
                              f"(supported: {', '.join(sorted(_SAELENS_SAE | _SAELENS_TRANSCODERS))})")
    d_in = _int(_need(cfg, "d_in", cfg_path), "d_in", cfg_path)
    d_sae = _int(_need(cfg, "d_sae", cfg_path), "d_sae", cfg_path)
    hook = cfg.get("hook_name") or meta.get("hook_name") or cfg.get("hook_point")
    if not hook:
        raise _fail(cfg_path, "missing field 'hook_name' (top level or in metadata)")
    if (cfg.get("hook_head_index", meta.get("hook_head_index")) is not None
            or cfg.get("hook_point_head_index") is not None):
        raise _fail(cfg_path, "SAEs on one attention head (hook_head_index) are not supported")
    norm = cfg.get("normalize_activations", "none")
    if norm not in (None, False, "none"):
        raise _fail(cfg_path, f"normalize_activations {norm!r} is not supported (only 'none'): "
                              "its scale is not stored with the weights")
    hook_layer = cfg.get("hook_layer", meta.get("hook_layer"))
    if hook_layer is not None:
        hook_layer = _int(hook_layer, "hook_layer", cfg_path)
    site, layer = tl_site(hook, cfg_path, layer=hook_layer)

    act_fn = cfg.get("activation_fn_str", cfg.get("activation_fn", "relu")) or "relu"
    kind = "transcoder" if architecture in _SAELENS_TRANSCODERS else "sae"
    if architecture in ("jumprelu", "jumprelu_transcoder"):
        activation = "jumprelu"
    elif architecture == "topk" or act_fn == "topk":  # pre-6.0: standard + activation_fn "topk"
        activation = "topk"
    elif act_fn == "relu":
        activation = "relu"
    else:
        raise _fail(cfg_path, f"unsupported activation function {act_fn!r} for architecture {architecture!r}")
    k = None
    if activation == "topk":
        k_value = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
        if k_value is None:
            raise _fail(cfg_path, "missing field 'k' (top level or in activation_fn_kwargs) for a TopK SAE")
        k = _int(k_value, "k", cfg_path)

    output_site, output_layer, d_out = site, layer, d_in
    if kind == "transcoder":
        hook_out = _need(cfg, "hook_name_out", cfg_path)
        output_site, output_layer = tl_site(hook_out, cfg_path)
        d_out = _int(_need(cfg, "d_out", cfg_path), "d_out", cfg_path)

    t = _load_tensors(weights_path)
    for name in ("scaling_factor", "finetuning_scaling_factor"):
        if name in t and not torch.allclose(t[name].float(), torch.ones_like(t[name].float())):
            raise _fail(weights_path, f"a {name} other than 1 is not supported")
    W_enc, b_enc = _tensor(t, "W_enc", weights_path), _tensor(t, "b_enc", weights_path)
    W_dec, b_dec = _tensor(t, "W_dec", weights_path), _tensor(t, "b_dec", weights_path)
    _shape(W_enc, (d_in, d_sae), "W_enc", weights_path, f"[d_in, d_sae] from {SAELENS_CONFIG}")
    _shape(b_enc, (d_sae,), "b_enc", weights_path, f"[d_sae] from {SAELENS_CONFIG}")
    _shape(W_dec, (d_sae, d_out), "W_dec", weights_path, f"[d_sae, {'d_out' if kind == 'transcoder' else 'd_in'}] "
                                                         f"from {SAELENS_CONFIG}")
    _shape(b_dec, (d_out,), "b_dec", weights_path, f"[{'d_out' if kind == 'transcoder' else 'd_in'}] "
                                                  f"from {SAELENS_CONFIG}")
    threshold = None
    if activation == "jumprelu":
        if "threshold" in t:
            threshold = t["threshold"]
        elif "log_threshold" in t:
            threshold = torch.exp(t["log_threshold"])
        else:
            raise _fail(weights_path, "missing tensor 'threshold' for a JumpReLU SAE")
        _shape(threshold, (d_sae,), "threshold", weights_path, f"[d_sae] from {SAELENS_CONFIG}")
        threshold = threshold.clamp(min=0)  # relu(pre) * (pre > t) == pre * (pre > max(t, 0))
    W_skip = None
    if architecture == "skip_transcoder":
        W_skip = _tensor(t, "W_skip", weights_path)
        _shape(W_skip, (d_out, d_in), "W_skip", weights_path, f"[d_out, d_in] from {SAELENS_CONFIG}")
        W_skip = W_skip.T.contiguous()

    return [validate(Dictionary(
        kind=kind, site=site, layer=layer, activation=activation, k=k, threshold=threshold,
        W_enc=W_enc, b_enc=b_enc, W_dec=W_dec, b_dec=b_dec, W_skip=W_skip,
        subtract_b_dec=kind == "sae" and bool(cfg.get("apply_b_dec_to_input", True)),
        output_site=output_site, output_layer=output_layer, hook=hook,
        source=str(folder), format="saelens"), str(folder))]


# --------------------------------------------------------------------------- sparsify


def sparsify_site(hookpoint: str, transcode: bool, where: Path) -> tuple[str, str, int]:
    """``(input site, output site, layer)`` of a sparsify hookpoint folder name."""
    name = hookpoint
    for prefix in _SPARSIFY_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    m = _SPARSIFY_HOOK.match(name)
    if not m:
        raise _fail(where, f"cannot tell the site from the hookpoint folder name {hookpoint!r} "
                           "(expected layers.L, layers.L.mlp or layers.L.self_attn)")
    layer, module = int(m.group(1)), m.group(2)
    if module is None:
        return ("resid_pre" if transcode else "resid_post"), "resid_post", layer
    if module == "mlp":
        return ("mlp_in" if transcode else "mlp_out"), "mlp_out", layer
    if transcode:
        raise _fail(where, f"transcoders on attention ({hookpoint!r}) are not supported")
    return "attn_out", "attn_out", layer


def read_sparsify(folder: str | Path) -> list[Dictionary]:
    """One sparsify sparse coder (``<hookpoint>/cfg.json`` + ``<hookpoint>/sae.safetensors``)."""
    folder = Path(folder)
    cfg_path, weights_path = folder / SPARSIFY_CONFIG, folder / SPARSIFY_WEIGHTS
    cfg = _load_json(cfg_path)
    d_in = _int(_need(cfg, "d_in", cfg_path), "d_in", cfg_path)
    k = _int(_need(cfg, "k", cfg_path), "k", cfg_path)
    num_latents = _int(cfg.get("num_latents", 0) or 0, "num_latents", cfg_path)
    if num_latents == 0:
        if cfg.get("expansion_factor") is None:
            raise _fail(cfg_path, "missing field 'num_latents' (or 'expansion_factor')")
        num_latents = d_in * _int(cfg["expansion_factor"], "expansion_factor", cfg_path)
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise _fail(cfg_path, f"unsupported activation {activation!r} (supported: 'topk')")
    for flag in ("embed_skip", "gram_lookup"):
        if cfg.get(flag):
            raise _fail(cfg_path, f"{flag}=true is not supported")
    transcode = bool(cfg.get("transcode", False))
    skip = bool(cfg.get("skip_connection", False))
    site, output_site, layer = sparsify_site(folder.name, transcode, cfg_path)

    t = _load_tensors(weights_path)
    W_enc, b_enc = _tensor(t, "encoder.weight", weights_path), _tensor(t, "encoder.bias", weights_path)
    W_dec, b_dec = _tensor(t, "W_dec", weights_path), _tensor(t, "b_dec", weights_path)
    _shape(W_enc, (num_latents, d_in), "encoder.weight", weights_path, "[num_latents, d_in] from cfg.json")
    _shape(b_enc, (num_latents,), "encoder.bias", weights_path, "[num_latents] from cfg.json")
    _shape(W_dec, (num_latents, d_in), "W_dec", weights_path, "[num_latents, d_in] from cfg.json")
    _shape(b_dec, (d_in,), "b_dec", weights_path, "[d_in] from cfg.json")
    W_skip = t.get("W_skip")
    if skip and W_skip is None:
        raise _fail(weights_path, "missing tensor 'W_skip' (cfg.json has skip_connection=true)")
    if W_skip is not None:
        if not skip:
            raise _fail(weights_path, "has a tensor 'W_skip' but cfg.json has skip_connection=false")
        _shape(W_skip, (d_in, d_in), "W_skip", weights_path, "[d_in, d_in] from cfg.json")
        W_skip = W_skip.T.contiguous()  # sparsify adds x @ W_skip.mT

    return [validate(Dictionary(
        kind="transcoder" if transcode else "sae", site=site, layer=layer, activation="topk", k=k,
        W_enc=W_enc.T.contiguous(), b_enc=b_enc, W_dec=W_dec, b_dec=b_dec, W_skip=W_skip,
        subtract_b_dec=not transcode, output_site=output_site, output_layer=layer, hook=folder.name,
        source=str(folder), format="sparsify"), str(folder))]


# --------------------------------------------------------------------------- circuit-tracer


def _resolve_layer_path(entry: Any, base: Path, cfg_path: Path, index: int) -> Path:
    if not isinstance(entry, str) or not entry:
        raise _fail(cfg_path, f"transcoders[{index}] is not a path: {entry!r}")
    if entry.startswith("hf://"):
        from huggingface_hub import try_to_load_from_cache
        from urllib.parse import parse_qs, urlparse

        parsed = urlparse(entry)
        repo_name, _, file_path = parsed.path.lstrip("/").partition("/")
        revision = parse_qs(parsed.query).get("revision", [None])[0]
        cached = try_to_load_from_cache(f"{parsed.netloc}/{repo_name}", file_path, revision=revision)
        if not isinstance(cached, str):
            raise _fail(cfg_path, f"transcoders[{index}] {entry} is not in the local Hugging Face cache")
        return Path(cached)
    path = Path(entry)
    return path if path.is_absolute() else base / path


def read_circuit_tracer(config: str | Path) -> list[Dictionary]:
    """A circuit-tracer transcoder set: one dictionary per layer, in layer order."""
    import yaml

    cfg_path = Path(config)
    if cfg_path.is_dir():
        cfg_path = cfg_path / CIRCUIT_TRACER_CONFIG
    try:
        cfg = yaml.safe_load(cfg_path.read_text())
    except OSError as e:
        raise _fail(cfg_path, f"cannot read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise _fail(cfg_path, f"not valid YAML ({type(e).__name__})") from None
    if not isinstance(cfg, dict):
        raise _fail(cfg_path, "expected a YAML mapping")
    model_kind = _need(cfg, "model_kind", cfg_path)
    if model_kind != "transcoder_set":
        raise _fail(cfg_path, f"unsupported model_kind {model_kind!r} (supported: 'transcoder_set')")
    hook_in = _need(cfg, "feature_input_hook", cfg_path)
    hook_out = _need(cfg, "feature_output_hook", cfg_path)
    activation_cfg = cfg.get("activation")
    if activation_cfg not in (None, "relu", "jumprelu", "topk"):
        raise _fail(cfg_path, f"unsupported activation {activation_cfg!r} (supported: relu, jumprelu, topk)")
    k = _int(_need(cfg, "k", cfg_path), "k", cfg_path) if activation_cfg == "topk" else None

    base = cfg_path.parent
    if "transcoders" in cfg:
        entries = cfg["transcoders"]
        if not isinstance(entries, list) or not entries:
            raise _fail(cfg_path, "field 'transcoders' must be a non-empty list of paths, one per layer")
        paths = [_resolve_layer_path(e, base, cfg_path, i) for i, e in enumerate(entries)]
    else:
        found = {int(m.group(1)): p for p in base.glob("layer_*.safetensors")
                 if (m := re.fullmatch(r"layer_(\d+)\.safetensors", p.name))}
        if not found:
            raise _fail(cfg_path, "missing field 'transcoders' and no layer_{i}.safetensors beside it")
        if sorted(found) != list(range(len(found))):
            raise _fail(cfg_path, f"layer files must cover layers 0..{max(found)} without gaps, found {sorted(found)}")
        paths = [found[i] for i in range(len(found))]

    out = []
    for layer, path in enumerate(paths):
        if path.suffix == ".npz":
            raise _fail(path, "Gemma Scope .npz transcoders are not supported (safetensors only)")
        site, _ = tl_site(hook_in, cfg_path, layer=layer)
        output_site, _ = tl_site(hook_out, cfg_path, layer=layer)
        out.append(_read_circuit_tracer_layer(path, layer, site, output_site, activation_cfg, k, hook_in))
    widths = {d.width for d in out}
    if len(widths) != 1:
        raise _fail(cfg_path, f"layers disagree on the number of features: {sorted(widths)}")
    return out


def _read_circuit_tracer_layer(path: Path, layer: int, site: str, output_site: str,
                               activation_cfg: str | None, k: int | None, hook_in: str) -> Dictionary:
    t = _load_tensors(path)
    W_enc, b_enc = _tensor(t, "W_enc", path), _tensor(t, "b_enc", path)
    W_dec, b_dec = _tensor(t, "W_dec", path), _tensor(t, "b_dec", path)
    if b_enc.ndim != 1 or b_dec.ndim != 1:
        raise _fail(path, f"b_enc {list(b_enc.shape)} and b_dec {list(b_dec.shape)} must be vectors")
    width, d_model = int(b_enc.shape[0]), int(b_dec.shape[0])
    _shape(W_enc, (width, d_model), "W_enc", path, "[d_transcoder, d_model] from b_enc and b_dec")
    _shape(W_dec, (width, d_model), "W_dec", path, "[d_transcoder, d_model] from b_enc and b_dec")
    threshold = t.get("activation_function.threshold", t.get("threshold"))
    if activation_cfg == "relu":
        activation = "relu"
    elif activation_cfg == "topk":
        activation = "topk_raw"
    elif threshold is not None:
        activation = "jumprelu"
    elif activation_cfg == "jumprelu":
        raise _fail(path, "missing tensor 'activation_function.threshold' for a JumpReLU transcoder")
    else:
        activation = "relu"
    if activation == "jumprelu":
        _shape(threshold, (width,), "activation_function.threshold", path, "[d_transcoder] from b_enc")
    W_skip = t.get("W_skip")
    if W_skip is not None:
        _shape(W_skip, (d_model, d_model), "W_skip", path, "[d_model, d_model] from b_dec")
        W_skip = W_skip.T.contiguous()  # circuit-tracer adds x @ W_skip.T
    return validate(Dictionary(
        kind="transcoder", site=site, layer=layer, activation=activation, k=k,
        threshold=threshold if activation == "jumprelu" else None,
        W_enc=W_enc.T.contiguous(), b_enc=b_enc, W_dec=W_dec, b_dec=b_dec, W_skip=W_skip,
        output_site=output_site, output_layer=layer, hook=hook_in, source=str(path),
        format="circuit-tracer"), str(path))


# --------------------------------------------------------------------------- detection

READERS: dict[str, Callable[[Path], list[Dictionary]]] = {
    "saelens": read_saelens,
    "sparsify": read_sparsify,
    "circuit-tracer": read_circuit_tracer,
}


def detect_format(path: str | Path) -> tuple[str, Path]:
    """``(format, path to hand its reader)`` for a dictionary file or folder."""
    path = Path(path)
    if not path.exists():
        raise _fail(path, "no such file or folder")
    if path.is_file():
        if path.name == CIRCUIT_TRACER_CONFIG:
            return "circuit-tracer", path
        if path.name in (SAELENS_CONFIG, SAELENS_WEIGHTS, SPARSIFY_WEIGHTS):
            return detect_format(path.parent)
        raise _fail(path, f"not a dictionary file (expected a folder, {CIRCUIT_TRACER_CONFIG} or {SAELENS_CONFIG})")
    if (path / CIRCUIT_TRACER_CONFIG).is_file():
        return "circuit-tracer", path / CIRCUIT_TRACER_CONFIG
    if (path / SAELENS_CONFIG).is_file() and (path / SAELENS_WEIGHTS).is_file():
        return "saelens", path
    if (path / SPARSIFY_CONFIG).is_file() and (path / SPARSIFY_WEIGHTS).is_file():
        return "sparsify", path
    if (path / SAELENS_CONFIG).is_file():
        raise _fail(path, f"has {SAELENS_CONFIG} but neither {SAELENS_WEIGHTS} (SAELens) "
                          f"nor {SPARSIFY_WEIGHTS} (sparsify)")
    if _sparsify_hookpoints(path):
        return "sparsify-run", path
    raise _fail(path, f"no dictionary found (expected {SAELENS_CONFIG} + {SAELENS_WEIGHTS}, "
                      f"{SPARSIFY_CONFIG} + {SPARSIFY_WEIGHTS}, or {CIRCUIT_TRACER_CONFIG})")


def _sparsify_hookpoints(folder: Path) -> list[Path]:
    subs = [p for p in folder.iterdir() if p.is_dir()
            and (p / SPARSIFY_CONFIG).is_file() and (p / SPARSIFY_WEIGHTS).is_file()]
    key = lambda p: [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", p.name)]  # noqa: E731
    return sorted(subs, key=key)


_HUB_ID = re.compile(r"([\w.-]+/[\w.-]+)(/[^@]+)?(?:@([\w./-]+))?")


def resolve_path(path: str | Path) -> Path:
    """``path`` itself when it exists; otherwise a hub id ``org/name[/subfolder][@revision]``
    looked up in the local Hugging Face cache only (never the network)."""
    p = Path(path)
    m = _HUB_ID.fullmatch(str(path))
    if p.exists() or m is None or p.is_absolute():
        return p
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo_id, sub, revision = m.group(1), (m.group(2) or "").strip("/"), m.group(3)
    try:
        snapshot = Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise _fail(path, "no such file or folder, and not in the local Hugging Face cache as a hub id") from None
    return snapshot / sub if sub else snapshot


def read_dictionary(path: str | Path) -> list[Dictionary]:
    """Every dictionary at ``path``: an SAELens folder, a sparsify hookpoint folder (or a
    sparsify run folder holding several), or a circuit-tracer ``config.yaml`` (or its folder);
    or a hub id ``org/name[/subfolder][@revision]`` already in the local Hugging Face cache."""
    fmt, target = detect_format(resolve_path(path))
    if fmt == "sparsify-run":
        return [d for sub in _sparsify_hookpoints(target) for d in read_sparsify(sub)]
    return READERS[fmt](target)
