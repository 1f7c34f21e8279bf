"""The weights-based connections' oracle: raw module parameters read with its own
per-family knowledge of the layouts (fused QKV, Conv1D, norms, Gemma's +1 gain offset,
sandwich and QK norms), every d_model x d_model matrix formed explicitly in float64; it
never calls compgraph code (only the adapter registry, through tests.helpers.models, to build the models)."""

from __future__ import annotations

import polars as pl
import torch
import transformers as T

from tests.helpers.models import randomised

V, D, F, L, H, KV = 97, 32, 48, 3, 4, 2
K = 5

CONFIGS = {
    "llama": lambda: T.LlamaConfig(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L,
                                   num_attention_heads=H, num_key_value_heads=KV),
    "qwen2": lambda: T.Qwen2Config(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L,
                                   num_attention_heads=H, num_key_value_heads=KV),
    "qwen3": lambda: T.Qwen3Config(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L,
                                   num_attention_heads=H, num_key_value_heads=KV, head_dim=8),
    "gpt2": lambda: T.GPT2Config(vocab_size=V, n_embd=D, n_layer=L, n_head=H, n_inner=F,
                                 bos_token_id=0, eos_token_id=0),
    "gpt_neox": lambda: T.GPTNeoXConfig(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L,
                                        num_attention_heads=H),
    "gpt_neox_sequential": lambda: T.GPTNeoXConfig(vocab_size=V, hidden_size=D, intermediate_size=F,
                                                   num_hidden_layers=L, num_attention_heads=H,
                                                   use_parallel_residual=False),
    "gemma3_text": lambda: T.Gemma3TextConfig(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L,
                                              num_attention_heads=H, num_key_value_heads=KV, head_dim=8),
    "bert": lambda: T.BertConfig(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L,
                                 num_attention_heads=H),
    "mixtral": lambda: T.MixtralConfig(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=L,
                                       num_attention_heads=H, num_key_value_heads=KV, num_local_experts=4,
                                       num_experts_per_tok=2),
}
DENSE = [n for n in CONFIGS if n != "mixtral"]


def build(name: str):
    return randomised(CONFIGS[name]())


# ---- the oracle: raw parameters, full matrices, float64 -----------------------------------

_LLAMA = dict(layers="model.layers", layout="separate", attn="self_attn", q="q_proj", k="k_proj", v="v_proj",
              o="o_proj", attn_norm="input_layernorm", mlp_norm="post_attention_layernorm", up="mlp.up_proj",
              gate="mlp.gate_proj", down="mlp.down_proj", ln=False, offset=0.0, qk_norm=False, post=None)
RAW = {
    "llama": _LLAMA, "qwen2": _LLAMA, "mixtral": _LLAMA, "qwen3": {**_LLAMA, "qk_norm": True},
    "gemma3_text": {**_LLAMA, "mlp_norm": "pre_feedforward_layernorm", "offset": 1.0, "qk_norm": True,
                    "post": ("post_attention_layernorm", "post_feedforward_layernorm")},
    "gpt2": dict(layers="transformer.h", layout="conv1d", attn="attn", attn_norm="ln_1", mlp_norm="ln_2",
                 up="mlp.c_fc", gate=None, down="mlp.c_proj", ln=True, offset=0.0, qk_norm=False, post=None),
    "gpt_neox": dict(layers="gpt_neox.layers", layout="interleaved", attn="attention", attn_norm="input_layernorm",
                     mlp_norm="post_attention_layernorm", up="mlp.dense_h_to_4h", gate=None,
                     down="mlp.dense_4h_to_h", ln=True, offset=0.0, qk_norm=False, post=None),
    "bert": dict(layers="encoder.layer", layout="separate", attn="attention", q="self.query", k="self.key",
                 v="self.value", o="output.dense", attn_norm=None, mlp_norm="attention.output.LayerNorm",
                 up="intermediate.dense", gate=None, down="output.dense", ln=True, offset=0.0, qk_norm=False,
                 post=None),
}
RAW["gpt_neox_sequential"] = RAW["gpt_neox"]


def _p(model, name):
    return dict(model.named_parameters())[name].detach().double()


def _read_fold(model, spec, layer, path):
    """C diag(g) as a [D, D] matrix (identity when there is no norm)."""
    if path is None:
        return torch.eye(D, dtype=torch.float64)
    g = _p(model, f"{spec['layers']}.{layer}.{path}.weight") + spec["offset"]
    center = torch.eye(D, dtype=torch.float64) - torch.full((D, D), 1.0 / D, dtype=torch.float64)
    return (center if spec["ln"] else torch.eye(D, dtype=torch.float64)) @ torch.diag(g)


def raw_heads(name, model, layer):
    """Per query head: W_Q, W_K, W_V [D, dh] (KV head expanded), W_O [dh, D], all folded."""
    spec, cfg = RAW[name], model.config
    n_kv = getattr(cfg, "num_key_value_heads", None) or H
    dh = getattr(cfg, "head_dim", None) or D // H
    pre = f"{spec['layers']}.{layer}.{spec['attn']}."
    if spec["layout"] == "conv1d":
        w = _p(model, pre + "c_attn.weight")  # [D, 3D], x @ w
        q, k, v = (w[:, i * D:(i + 1) * D] for i in range(3))
        cols = lambda m, h: m[:, h * dh:(h + 1) * dh]  # noqa: E731
        Wq = [cols(q, h) for h in range(H)]
        Wk = [cols(k, h) for h in range(H)]
        Wv = [cols(v, h) for h in range(H)]
        o = _p(model, pre + "c_proj.weight")  # [H*dh, D]
        Wo = [o[h * dh:(h + 1) * dh] for h in range(H)]
    elif spec["layout"] == "interleaved":
        w = _p(model, pre + "query_key_value.weight")  # [H*3*dh, D], rows per head q|k|v
        block = lambda h, i: w[h * 3 * dh + i * dh: h * 3 * dh + (i + 1) * dh].T  # noqa: E731
        Wq, Wk, Wv = ([block(h, i) for h in range(H)] for i in range(3))
        o = _p(model, pre + "dense.weight")  # [D, H*dh]
        Wo = [o[:, h * dh:(h + 1) * dh].T for h in range(H)]
    else:
        rows = lambda path, h: _p(model, pre + path + ".weight")[h * dh:(h + 1) * dh].T  # noqa: E731
        group = H // n_kv
        Wq = [rows(spec["q"], h) for h in range(H)]
        Wk = [rows(spec["k"], h // group) for h in range(H)]
        Wv = [rows(spec["v"], h // group) for h in range(H)]
        o = _p(model, pre + spec["o"] + ".weight")  # [D, H*dh]
        Wo = [o[:, h * dh:(h + 1) * dh].T for h in range(H)]
    fold = _read_fold(model, spec, layer, spec["attn_norm"])
    Wq, Wk, Wv = ([fold @ m for m in ms] for ms in (Wq, Wk, Wv))
    if spec["qk_norm"]:
        gq = _p(model, pre + "q_norm.weight") + spec["offset"]
        gk = _p(model, pre + "k_norm.weight") + spec["offset"]
        Wq, Wk = [m * gq for m in Wq], [m * gk for m in Wk]
    if spec["post"]:
        Wo = [m * (_p(model, f"{spec['layers']}.{layer}.{spec['post'][0]}.weight") + spec["offset"]) for m in Wo]
    return Wq, Wk, Wv, Wo


def raw_neurons(name, model, layer):
    """(writes [F, D], {"in": reads [F, D], "gate": ...}) folded."""
    spec = RAW[name]
    pre = f"{spec['layers']}.{layer}."
    conv = spec["layout"] == "conv1d"
    down = _p(model, pre + spec["down"] + ".weight")
    writes = down if conv else down.T
    if spec["post"]:
        writes = writes * (_p(model, pre + spec["post"][1] + ".weight") + spec["offset"])
    fold = _read_fold(model, spec, layer, spec["mlp_norm"])
    reads = {}
    for via, path in (("in", spec["up"]), ("gate", spec["gate"])):
        if path:
            w = _p(model, pre + path + ".weight")
            reads[via] = (fold @ (w if conv else w.T)).T
    return writes, reads


def comp(a, b):
    return float(torch.linalg.matrix_norm(a @ b) / (torch.linalg.matrix_norm(a) * torch.linalg.matrix_norm(b)))


def _collect(it) -> pl.DataFrame:
    return pl.concat([f for _, f in it])


# ---- head composition ---------------------------------------------------------------------
