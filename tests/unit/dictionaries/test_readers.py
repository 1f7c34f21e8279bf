"""Dictionary readers: each format written by the test in its real layout, read back, and
checked against a plain-torch computation in the format's own orientation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file

from compgraph.dictionaries.base import check_against
from compgraph.dictionaries.readers import (
    detect_format,
    read_circuit_tracer,
    read_dictionary,
    read_sparsify,
)
from compgraph.errors import ConfigError

D, W = 8, 24  # d_model, features


def _rand(*shape, seed=[0]):
    seed[0] += 1
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed[0]))


def _x(n=5):
    return _rand(n, D)


def _one_line_error(excinfo, *parts):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, msg
    return msg


# ------------------------------------------------------------------ writers (real layouts)


def write_saelens(folder: Path, *, architecture="standard", d_in=D, d_sae=W, k=None, v6=True,
                  hook="blocks.6.hook_resid_post", tensors=None, drop=(), **extra):
    """SAELens ``save_inference_model``: cfg.json + sae_weights.safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    t = tensors or {"W_enc": _rand(d_in, d_sae), "b_enc": _rand(d_sae), "W_dec": _rand(d_sae, d_in),
                    "b_dec": _rand(d_in)}
    if architecture == "jumprelu" and "threshold" not in t:
        t["threshold"] = _rand(d_sae).abs() * 0.5
    if v6:  # 6.x: hook name under metadata, k at top level
        cfg = {"architecture": architecture, "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
               "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
               "metadata": {"model_name": "tiny", "hook_name": hook, "hook_head_index": None,
                            "prepend_bos": True, "context_size": 128, "sae_lens_version": "6.5.0"}}
        if k is not None:
            cfg["k"] = k
    else:  # before 6.0: hook name at top level, TopK as activation_fn_str + kwargs
        cfg = {"architecture": architecture, "d_in": d_in, "d_sae": d_sae, "dtype": "float32",
               "model_name": "tiny", "hook_name": hook, "hook_layer": 6, "hook_head_index": None,
               "activation_fn_str": "topk" if k is not None else "relu",
               "activation_fn_kwargs": {"k": k} if k is not None else {},
               "apply_b_dec_to_input": True, "normalize_activations": "none", "sae_lens_version": "3.5.0"}
    cfg.update(extra)
    for key in drop:
        cfg.pop(key, None)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file({n: v.contiguous() for n, v in t.items()}, str(folder / "sae_weights.safetensors"))
    return cfg, t


def write_sparsify(folder: Path, *, transcode=False, skip=False, k=4, num_latents=W, d_in=D, drop=(), tensors=None):
    """sparsify ``save_to_disk``: <hookpoint>/cfg.json + <hookpoint>/sae.safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"activation": "topk", "expansion_factor": 32, "normalize_decoder": True, "num_latents": num_latents,
           "k": k, "multi_topk": False, "skip_connection": skip, "transcode": transcode, "d_in": d_in}
    for key in drop:
        cfg.pop(key)
    t = tensors or {"encoder.weight": _rand(num_latents, d_in), "encoder.bias": _rand(num_latents),
                    "W_dec": _rand(num_latents, d_in), "b_dec": _rand(d_in)}
    if skip and "W_skip" not in t:
        t["W_skip"] = _rand(d_in, d_in)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    save_file({n: v.contiguous() for n, v in t.items()}, str(folder / "sae.safetensors"))
    return cfg, t


def write_circuit_tracer(folder: Path, *, n_layers=3, jumprelu=True, skip=True, activation=None, k=None,
                         listed=True, cfg_extra=None, drop=(), layer_tensors=None):
    """circuit-tracer transcoder set: config.yaml + layer_{i}.safetensors (``to_safetensors`` keys)."""
    folder.mkdir(parents=True, exist_ok=True)
    layers = []
    for i in range(n_layers):
        t = {"W_enc": _rand(W, D), "W_dec": _rand(W, D), "b_enc": _rand(W), "b_dec": _rand(D)}
        if jumprelu:
            t["activation_function.threshold"] = _rand(W) * 0.5  # some negative: circuit-tracer keeps them
        if skip:
            t["W_skip"] = _rand(D, D)
        if layer_tensors and i in layer_tensors:
            t.update(layer_tensors[i])
        save_file(t, str(folder / f"layer_{i}.safetensors"))
        layers.append(t)
    cfg = {"model_name": "tiny", "model_kind": "transcoder_set",
           "feature_input_hook": "mlp.hook_in", "feature_output_hook": "mlp.hook_out"}
    if listed:
        cfg["transcoders"] = [f"layer_{i}.safetensors" for i in range(n_layers)]
    if activation is not None:
        cfg["activation"] = activation
    if k is not None:
        cfg["k"] = k
    cfg.update(cfg_extra or {})
    for key in drop:
        cfg.pop(key)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    return cfg, layers


# ------------------------------------------------------------------ SAELens


def test_saelens_standard_relu_matches_plain_torch(tmp_path):
    _, t = write_saelens(tmp_path / "sae", architecture="standard")
    [d] = read_dictionary(tmp_path / "sae")
    assert (d.kind, d.site, d.layer, d.width, d.d_in, d.activation, d.format) == (
        "sae", "resid_post", 6, W, D, "relu", "saelens")
    assert d.hook == "blocks.6.hook_resid_post" and d.output_site == "resid_post"
    x = _x()
    f = torch.relu((x - t["b_dec"]) @ t["W_enc"] + t["b_enc"])
    torch.testing.assert_close(d.encode(x), f)
    torch.testing.assert_close(d.decode(f), f @ t["W_dec"] + t["b_dec"])
    torch.testing.assert_close(d.forward(x), f @ t["W_dec"] + t["b_dec"])


def test_saelens_apply_b_dec_to_input_false(tmp_path):
    _, t = write_saelens(tmp_path / "sae", apply_b_dec_to_input=False)
    [d] = read_dictionary(tmp_path / "sae")
    x = _x()
    torch.testing.assert_close(d.encode(x), torch.relu(x @ t["W_enc"] + t["b_enc"]))


def test_saelens_jumprelu_matches_plain_torch(tmp_path):
    t = {"W_enc": _rand(D, W), "b_enc": _rand(W), "W_dec": _rand(W, D), "b_dec": _rand(D),
         "threshold": _rand(W) * 0.5}  # negative thresholds too: SAELens applies ReLU first
    write_saelens(tmp_path / "sae", architecture="jumprelu", tensors=t, hook="blocks.3.hook_mlp_out")
    [d] = read_dictionary(tmp_path / "sae")
    assert (d.activation, d.site, d.layer) == ("jumprelu", "mlp_out", 3)
    x = _x()
    pre = (x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    torch.testing.assert_close(d.encode(x), torch.relu(pre) * (pre > t["threshold"]).float())


@pytest.mark.parametrize("v6", [True, False], ids=["v6-config", "pre-6-config"])
def test_saelens_topk_matches_plain_torch(tmp_path, v6):
    _, t = write_saelens(tmp_path / "sae", architecture="topk" if v6 else "standard", k=3, v6=v6)
    [d] = read_dictionary(tmp_path / "sae")
    assert (d.activation, d.k) == ("topk", 3)
    x = _x()
    pre = (x - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    top = torch.topk(pre, 3, dim=-1)  # SAELens: top k first, then ReLU on the kept values
    expected = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
    torch.testing.assert_close(d.encode(x), expected)
    assert ((d.encode(x) != 0).sum(-1) <= 3).all()


def test_saelens_skip_transcoder(tmp_path):
    d_out = 6
    t = {"W_enc": _rand(D, W), "b_enc": _rand(W), "W_dec": _rand(W, d_out), "b_dec": _rand(d_out),
         "W_skip": _rand(d_out, D)}
    write_saelens(tmp_path / "tc", architecture="skip_transcoder", tensors=t, hook="blocks.2.ln2.hook_normalized",
                  d_out=d_out, hook_name_out="blocks.2.hook_mlp_out")
    [d] = read_dictionary(tmp_path / "tc")
    assert (d.kind, d.site, d.output_site, d.output_layer, d.d_out) == ("transcoder", "mlp_in", "mlp_out", 2, d_out)
    x = _x()
    f = torch.relu(x @ t["W_enc"] + t["b_enc"])  # transcoders never subtract b_dec from the input
    torch.testing.assert_close(d.encode(x), f)
    torch.testing.assert_close(d.forward(x), f @ t["W_dec"] + t["b_dec"] + x @ t["W_skip"].T)
    with pytest.raises(ValueError, match="skip connection"):
        d.decode(f)


# ------------------------------------------------------------------ sparsify


def test_sparsify_sae_matches_plain_torch(tmp_path):
    _, t = write_sparsify(tmp_path / "run" / "layers.6", k=4)
    [d] = read_dictionary(tmp_path / "run" / "layers.6")
    assert (d.kind, d.site, d.layer, d.width, d.k, d.format) == ("sae", "resid_post", 6, W, 4, "sparsify")
    x = _x()
    pre = F.relu(F.linear(x - t["b_dec"], t["encoder.weight"], t["encoder.bias"]))  # ReLU, then top k
    acts, idx = pre.topk(4, sorted=False)
    f = torch.zeros_like(pre).scatter(-1, idx, acts)
    torch.testing.assert_close(d.encode(x), f)
    torch.testing.assert_close(d.decode(f), f @ t["W_dec"] + t["b_dec"])


def test_sparsify_transcoder_with_skip(tmp_path):
    _, t = write_sparsify(tmp_path / "run" / "layers.2.mlp", transcode=True, skip=True, k=5)
    [d] = read_dictionary(tmp_path / "run" / "layers.2.mlp")
    assert (d.kind, d.site, d.output_site, d.layer) == ("transcoder", "mlp_in", "mlp_out", 2)
    assert not d.subtract_b_dec
    x = _x()
    pre = F.relu(F.linear(x, t["encoder.weight"], t["encoder.bias"]))
    acts, idx = pre.topk(5, sorted=False)
    f = torch.zeros_like(pre).scatter(-1, idx, acts)
    torch.testing.assert_close(d.encode(x), f)
    torch.testing.assert_close(d.forward(x), f @ t["W_dec"] + t["b_dec"] + x @ t["W_skip"].mT)


def test_sparsify_run_folder_reads_every_hookpoint_in_natural_order(tmp_path):
    for name in ("layers.10", "layers.2", "layers.2.mlp"):
        write_sparsify(tmp_path / "run" / name)
    ds = read_dictionary(tmp_path / "run")
    assert [(d.hook, d.site, d.layer) for d in ds] == [
        ("layers.2", "resid_post", 2), ("layers.2.mlp", "mlp_out", 2), ("layers.10", "resid_post", 10)]


def test_sparsify_expansion_factor_when_num_latents_is_zero(tmp_path):
    folder = tmp_path / "model.layers.1"
    write_sparsify(folder, num_latents=2 * D)
    cfg = json.loads((folder / "cfg.json").read_text())
    cfg.update(num_latents=0, expansion_factor=2)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    [d] = read_sparsify(folder)
    assert (d.width, d.layer, d.site) == (2 * D, 1, "resid_post")


# ------------------------------------------------------------------ circuit-tracer


@pytest.mark.parametrize("listed", [True, False], ids=["transcoders-list", "layer-files"])
def test_circuit_tracer_set_jumprelu_skip(tmp_path, listed):
    _, layers = write_circuit_tracer(tmp_path / "set", listed=listed)
    ds = read_dictionary(tmp_path / "set")
    assert [d.layer for d in ds] == [0, 1, 2]
    x = _x()
    for d, t in zip(ds, layers):
        assert (d.kind, d.site, d.output_site, d.activation, d.format) == (
            "transcoder", "mlp_in", "mlp_out", "jumprelu", "circuit-tracer")
        pre = F.linear(x, t["W_enc"], t["b_enc"])
        f = pre * (pre > t["activation_function.threshold"])  # no ReLU: negative thresholds let negatives through
        torch.testing.assert_close(d.encode(x), f)
        torch.testing.assert_close(d.forward(x), f @ t["W_dec"] + t["b_dec"] + x @ t["W_skip"].T)


def test_circuit_tracer_relu_and_topk(tmp_path):
    _, layers = write_circuit_tracer(tmp_path / "relu", jumprelu=False, skip=False, activation="relu", n_layers=1)
    [d] = read_circuit_tracer(tmp_path / "relu" / "config.yaml")
    x, t = _x(), layers[0]
    assert d.activation == "relu" and d.W_skip is None
    torch.testing.assert_close(d.encode(x), F.relu(F.linear(x, t["W_enc"], t["b_enc"])))

    _, layers = write_circuit_tracer(tmp_path / "topk", jumprelu=False, skip=False, activation="topk", k=3, n_layers=1)
    [d] = read_dictionary(tmp_path / "topk" / "config.yaml")
    t = layers[0]
    pre = F.linear(x, t["W_enc"], t["b_enc"])
    _, idx = torch.topk(pre, k=3, dim=-1)
    expected = pre * torch.zeros_like(pre).scatter(-1, idx, 1.0)
    assert (d.activation, d.k) == ("topk_raw", 3)
    torch.testing.assert_close(d.encode(x), expected)


def test_circuit_tracer_hf_uri_from_local_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hub"
    snap = cache / "models--org--tcs" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (cache / "models--org--tcs" / "refs").mkdir()
    (cache / "models--org--tcs" / "refs" / "main").write_text("a" * 40)
    _, layers = write_circuit_tracer(snap, n_layers=2, listed=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    cfg = {"model_kind": "transcoder_set", "feature_input_hook": "hook_resid_mid",
           "feature_output_hook": "hook_mlp_out",
           "transcoders": [f"hf://org/tcs/layer_{i}.safetensors" for i in range(2)]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    ds = read_dictionary(tmp_path / "config.yaml")
    assert [(d.site, d.output_site, d.layer) for d in ds] == [("resid_mid", "mlp_out", 0), ("resid_mid", "mlp_out", 1)]
    torch.testing.assert_close(ds[1].W_dec, layers[1]["W_dec"])

    cfg["transcoders"].append("hf://org/tcs/layer_9.safetensors")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError) as e:
        read_dictionary(tmp_path)
    _one_line_error(e, "config.yaml", "transcoders[2]", "not in the local Hugging Face cache")


# ------------------------------------------------------------------ detection


def test_detect_format(tmp_path):
    write_saelens(tmp_path / "a")
    write_sparsify(tmp_path / "run" / "layers.0")
    write_circuit_tracer(tmp_path / "c", n_layers=1)
    assert detect_format(tmp_path / "a")[0] == "saelens"
    assert detect_format(tmp_path / "a" / "cfg.json")[0] == "saelens"
    assert detect_format(tmp_path / "run" / "layers.0")[0] == "sparsify"
    assert detect_format(tmp_path / "run" / "layers.0" / "sae.safetensors")[0] == "sparsify"
    assert detect_format(tmp_path / "run")[0] == "sparsify-run"
    assert detect_format(tmp_path / "c") == ("circuit-tracer", tmp_path / "c" / "config.yaml")
    assert detect_format(tmp_path / "c" / "config.yaml")[0] == "circuit-tracer"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as e:
        read_dictionary(tmp_path / "empty")
    _one_line_error(e, "empty", "no dictionary found")
    with pytest.raises(ConfigError) as e:
        read_dictionary(tmp_path / "nowhere")
    _one_line_error(e, "nowhere", "no such file")


# ------------------------------------------------------------------ errors: one line naming the file


def test_saelens_missing_field(tmp_path):
    write_saelens(tmp_path / "sae", drop=("d_sae",))
    with pytest.raises(ConfigError) as e:
        read_dictionary(tmp_path / "sae")
    _one_line_error(e, "cfg.json", "missing field 'd_sae'")


def test_saelens_missing_hook_name(tmp_path):
    write_saelens(tmp_path / "sae", drop=("metadata",))
    with pytest.raises(ConfigError) as e:
        read_dictionary(tmp_path / "sae")
    _one_line_error(e, "cfg.json", "missing field 'hook_name'")


def test_saelens_unknown_architecture(tmp_path):
    write_saelens(tmp_path / "sae", architecture="gated")
    with pytest.raises(ConfigError) as e:
        read_dictionary(tmp_path / "sae")
    _one_line_error(e, "cfg.json", "unsupported architecture 'gated'")


def test_saelens_tensor_shape_disagrees_with_config(tmp_path):
    t = {"W_enc": _rand(D, W + 1), "b_enc": _rand(W), "W_dec": _rand(W, D), "b_dec": _rand(D)}
    write_saelens(tmp_path / "sae", tensors=t)
    with pytest.raises(ConfigError) as e:
        read_dictionary(tmp_path / "sae")
    _one_line_error(e, "sae_weights.safetensors", "W_enc", f"[{D}, {W + 1}]", f"expected [{D}, {W}]")


def test_saelens_unknown_hook_and_normalization(tmp_path):
    write_saelens(tmp_path / "a", hook="blocks.1.hook_nowhere")
    with pytest.raises(ConfigError) as e:
        read_dictionary(tmp_path / "a")
    _one_line_error(e, "cfg.json", "unknown hook 'blocks.1.hook_nowhere'")
    write_saelens(tmp_path / "b", normalize_activations="layer_norm")
    with pytest.raises(ConfigError) as e:
        read_dictionary(tmp_path / "b")
    _one_line_error(e, "cfg.json", "normalize_activations 'layer_norm'")


def test_saelens_topk_without_k(tmp_path):
    write_saelens(tmp_path / "sae", architecture="topk")
    with pytest.raises(ConfigError) as e:
        read_dictionary(tmp_path / "sae")
    _one_line_error(e, "cfg.json", "missing field 'k'")


def test_sparsify_missing_field_and_bad_shapes(tmp_path):
    write_sparsify(tmp_path / "a" / "layers.0", drop=("k",))
    with pytest.raises(ConfigError) as e:
        read_dictionary(tmp_path / "a" / "layers.0")
    _one_line_error(e, "layers.0/cfg.json", "missing field 'k'")

    t = {"encoder.weight": _rand(W, D), "encoder.bias": _rand(W), "W_dec": _rand(W - 1, D), "b_dec": _rand(D)}
    write_sparsify(tmp_path / "b" / "layers.0", tensors=t)
    with pytest.raises(ConfigError) as e:
        read_dictionary(tmp_path / "b" / "layers.0")
    _one_line_error(e, "sae.safetensors", "W_dec", f"expected [{W}, {D}]")

    write_sparsify(tmp_path / "c" / "weird_name")
    with pytest.raises(ConfigError) as e:
        read_dictionary(tmp_path / "c" / "weird_name")
    _one_line_error(e, "cfg.json", "hookpoint folder name 'weird_name'")


def test_circuit_tracer_errors(tmp_path):
    write_circuit_tracer(tmp_path / "a", drop=("feature_output_hook",), n_layers=1)
    with pytest.raises(ConfigError) as e:
        read_dictionary(tmp_path / "a")
    _one_line_error(e, "config.yaml", "missing field 'feature_output_hook'")

    write_circuit_tracer(tmp_path / "b", n_layers=2, layer_tensors={1: {"W_dec": _rand(W + 2, D)}})
    with pytest.raises(ConfigError) as e:
        read_dictionary(tmp_path / "b")
    _one_line_error(e, "layer_1.safetensors", "W_dec", f"expected [{W}, {D}]")

    write_circuit_tracer(tmp_path / "c", n_layers=1, cfg_extra={"model_kind": "cross_layer_transcoder"})
    with pytest.raises(ConfigError) as e:
        read_dictionary(tmp_path / "c")
    _one_line_error(e, "config.yaml", "unsupported model_kind 'cross_layer_transcoder'")

    write_circuit_tracer(tmp_path / "d", n_layers=1, jumprelu=False, activation="topk")
    with pytest.raises(ConfigError) as e:
        read_dictionary(tmp_path / "d")
    _one_line_error(e, "config.yaml", "missing field 'k'")

    write_circuit_tracer(tmp_path / "e", n_layers=1,
                         cfg_extra={"transcoders": ["layer_0.safetensors", "gone.safetensors"]})
    with pytest.raises(ConfigError) as e:
        read_dictionary(tmp_path / "e")
    _one_line_error(e, "gone.safetensors", "file not found")


def test_check_against(tmp_path):
    write_saelens(tmp_path / "sae")
    [d] = read_dictionary(tmp_path / "sae")
    check_against(d, D)
    with pytest.raises(ConfigError) as e:
        check_against(d, 576)
    _one_line_error(e, str(tmp_path / "sae"), f"input width {D}", "resid_post width 576", "layer 6")


# ------------------------------------------------------------------ activation semantics, read from a file


def test_saelens_jumprelu_negative_threshold_known_answer(tmp_path):
    n = 5
    t = {"W_enc": torch.eye(n), "b_enc": torch.zeros(n), "W_dec": torch.eye(n), "b_dec": torch.zeros(n),
         "threshold": torch.tensor([0.375, -2.0, 2.0, 0.125, 0.125])}
    write_saelens(tmp_path / "sae", architecture="jumprelu", d_in=n, d_sae=n, tensors=t)
    [d] = read_dictionary(tmp_path / "sae")
    x = torch.tensor([[0.5, -1.0, 2.0, 0.25, 0.0625]])
    assert d.encode(x).tolist() == [[0.5, 0.0, 0.0, 0.25, 0.0]]  # SAELens: ReLU before the mask


def test_hub_id_read_from_local_cache_only(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hub"
    repo = cache / "models--org--saes"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("b" * 40)
    _, t = write_saelens(repo / "snapshots" / ("b" * 40) / "blocks.6.hook_resid_post")
    write_sparsify(repo / "snapshots" / ("b" * 40) / "sparsify" / "layers.3")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    [d] = read_dictionary("org/saes/blocks.6.hook_resid_post")
    assert (d.format, d.site, d.layer) == ("saelens", "resid_post", 6)
    torch.testing.assert_close(d.W_enc, t["W_enc"])
    [d] = read_dictionary("org/saes/sparsify@main")
    assert (d.format, d.layer) == ("sparsify", 3)
    with pytest.raises(ConfigError) as e:
        read_dictionary("org/absent")
    _one_line_error(e, "org/absent", "not in the local Hugging Face cache")
