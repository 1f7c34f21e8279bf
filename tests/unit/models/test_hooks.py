"""Hooks on every supported family, as tiny models built from configs.

Each check compares a site with something computed without compgraph's hooks: plain
torch hooks written here, canonical weights, raw parameters, or autograd itself.
"""

from __future__ import annotations

import functools

import pytest
import torch
from compgraph.errors import HookError
from compgraph.models import params
from compgraph.models.adapters import registry
from compgraph.models.adapters.base import Adapter, Tap
from compgraph.models.hooks import can_skip, capture, overwrite, skip_below
from tests.helpers.models import CONFIGS, D, F, H, HOOK_CASES, V, hook_model, random_model

FUSED = ["gpt2", "gpt_neox", "gpt_neox_seq"]


def out(result) -> torch.Tensor:
    return result.logits if hasattr(result, "logits") else result.last_hidden_state


def ids(seed: int = 1) -> torch.Tensor:
    return torch.randint(1, V, (2, 7), generator=torch.Generator().manual_seed(seed))


def sites_of(model, adapter: Adapter, layer: int) -> list:
    names = [n for n in adapter.sites if n != "embed"]
    if adapter.is_parallel(model.config):
        names.remove("resid_mid")
    return [(n, layer) for n in names] + [("embed", None)]


def sub(model, adapter: Adapter, layer: int, path: str) -> torch.nn.Module:
    return params.layer_module(model, adapter, layer, path)


def parent(path: str) -> str:
    return path.rpartition(".")[0]


class Retain:
    """Plain torch hooks (not compgraph's): keep a module's input or output tensors."""

    def __init__(self):
        self.got, self.handles = {}, []

    def output(self, key, mod, item=None):
        def hook(m, args, result):
            self.got[key] = result if item is None else result[item]
        self.handles.append(mod.register_forward_hook(hook))

    def input(self, key, mod):
        def hook(m, args):
            self.got[key] = args[0]
        self.handles.append(mod.register_forward_pre_hook(hook))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def qkv_slices(full: torch.Tensor, adapter: Adapter, n_heads: int, d_head: int) -> tuple:
    """q, k, v [b, p, heads, d] cut from a fused projection output, written independently of hooks.py."""
    if adapter.qkv_layout == "gpt2":
        return tuple(t.unflatten(-1, (n_heads, d_head)) for t in full.split(n_heads * d_head, dim=-1))
    return full.unflatten(-1, (n_heads, 3 * d_head)).chunk(3, dim=-1)


# --- (a) identity overwrites ----------------------------------------------------------------

@pytest.mark.parametrize("case", list(HOOK_CASES))
def test_overwriting_every_site_with_its_own_value_changes_nothing(case):
    model, adapter = hook_model(case)
    sites = sites_of(model, adapter, 1)
    with torch.no_grad(), capture(model, adapter, sites) as got:
        base = out(model(ids()))
    for site in sites:
        if not adapter.sites[site[0]].writable:
            continue
        seen = []

        def same(x, value=got[site][0]):
            seen.append(x.shape if isinstance(x, torch.Tensor) else len(x))
            return value

        with torch.no_grad(), overwrite(model, adapter, site, same):
            patched = out(model(ids()))
        want = got[site][0].shape if isinstance(got[site][0], torch.Tensor) else len(got[site][0])
        assert seen == [want], site
        torch.testing.assert_close(patched, base, rtol=0, atol=1e-6, msg=str(site))


@pytest.mark.parametrize("case", list(HOOK_CASES))
def test_patching_the_residual_from_another_input_reproduces_its_output(case):
    """Every position of resid_* at layer 0 from run B: the rest of the model is run B's,
    which fails if an overwrite misses the residual branch (resid_mid is written in place)."""
    model, adapter = hook_model(case)
    names = ["resid_pre", "resid_post"] + ([] if adapter.is_parallel(model.config) else ["resid_mid"])
    with torch.no_grad(), capture(model, adapter, [(n, 0) for n in names]) as other:
        want = out(model(ids(2)))
    for name in names:
        with torch.no_grad(), overwrite(model, adapter, (name, 0), lambda x, v=other[(name, 0)][0]: v):
            got = out(model(ids(1)))
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5, msg=name)


@pytest.mark.parametrize("case", list(HOOK_CASES))
def test_skip_below_runs_the_model_from_a_layer_on_saved_input(case):
    """Layer 0 skipped and layer 1's input set to the value a plain torch pre-hook saw in a
    full run: the same output, layer 0's submodules never called, its forward restored."""
    model, adapter = hook_model(case)
    assert can_skip(adapter)
    block0, block1 = (params.module(model, f"{adapter.layers}.{i}") for i in (0, 1))
    with torch.no_grad(), Retain() as seen:
        seen.input("resid_pre1", block1)  # hidden_states is the first positional argument
        want = out(model(ids()))
    calls = []
    inner = next(block0.children())
    handle = inner.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        with torch.no_grad(), skip_below(model, adapter, 1), \
                overwrite(model, adapter, ("resid_pre", 1), lambda _: seen.got["resid_pre1"]):
            got = out(model(ids()))
        assert calls == []
        assert "forward" not in block0.__dict__
        with torch.no_grad():
            again = out(model(ids()))
        assert len(calls) == 1
    finally:
        handle.remove()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(again, want, rtol=0, atol=0)


def test_skip_below_restores_a_forward_set_on_the_instance():
    """A wrapper set on the block instance (as accelerate's hooks are) is back after the
    context; inside, the skipped block keeps its signature, so hooks on it still bind."""
    model, adapter = hook_model("llama")
    block0 = params.module(model, f"{adapter.layers}.0")
    original = block0.forward
    seen = []

    @functools.wraps(original)  # as accelerate's add_hook_to_module does
    def wrapper(*args, **kwargs):
        seen.append(1)
        return original(*args, **kwargs)

    block0.forward = wrapper
    try:
        with torch.no_grad(), skip_below(model, adapter, 1), capture(model, adapter, [("resid_pre", 0)]) as got:
            model(ids())
        assert seen == [] and len(got[("resid_pre", 0)]) == 1
        assert block0.forward is wrapper
        with torch.no_grad():
            model(ids())
        assert seen == [1]
    finally:
        del block0.forward


def test_capture_outside_an_in_place_overwrite_keeps_the_value_before_it():
    model, adapter = hook_model("gpt2")
    site = ("resid_mid", 1)
    with torch.no_grad(), capture(model, adapter, [site]) as clean:
        model(ids())
    with torch.no_grad(), capture(model, adapter, [site]) as outer, overwrite(model, adapter, site, torch.zeros_like), \
            capture(model, adapter, [site]) as inner:
        model(ids())
    assert torch.equal(outer[site][0], clean[site][0]) and not inner[site][0].any()


@pytest.mark.parametrize("case", ["llama", "gpt2", "gpt_neox", "gemma3_wide"])
def test_zeroing_one_head_per_head_equals_zeroing_its_slice_flat(case):
    model, adapter = hook_model(case)
    n_heads, _, d_head = params.head_dims(model.config)

    def zero_head(z):
        z = z.clone()
        z[:, :, 2] = 0
        return z

    def zero_slice(z):
        z = z.clone()
        z[..., 2 * d_head:3 * d_head] = 0
        return z

    with torch.no_grad(), overwrite(model, adapter, ("attn_head_z", 1), zero_head):
        per_head = out(model(ids()))
    with torch.no_grad(), overwrite(model, adapter, ("attn_z", 1), zero_slice):
        flat = out(model(ids()))
    with torch.no_grad():
        base = out(model(ids()))
    assert torch.equal(per_head, flat) and not torch.allclose(per_head, base)


# --- (b) heads through W_O ------------------------------------------------------------------

@pytest.mark.parametrize("case", list(HOOK_CASES))
def test_head_outputs_through_canonical_W_O_sum_to_attn_out(case):
    model, adapter = hook_model(case)
    n_heads, _, d_head = params.head_dims(model.config)
    with torch.no_grad(), capture(model, adapter, [("attn_head_z", 1), ("attn_out", 1)]) as got:
        model(ids())
    z, attn_out = got[("attn_head_z", 1)][0], got[("attn_out", 1)][0]
    assert z.shape == (2, 7, n_heads, d_head)
    W_O = params.attention(model, adapter, 1).W_O
    bias = sub(model, adapter, 1, adapter.o).bias
    per_head = torch.einsum("bphd,hdm->bphm", z, W_O)
    torch.testing.assert_close(per_head.sum(2) + (0 if bias is None else bias), attn_out, rtol=0, atol=1e-5)


# --- (c) gradients --------------------------------------------------------------------------

def _oracle_tensors(model, adapter: Adapter, r: Retain, layer: int) -> None:
    """Plain hooks on the modules the grad test's sites live in (from the adapter's fields)."""
    r.output("embed", params.module(model, adapter.embed))
    r.input("resid_pre", params.module(model, f"{adapter.layers}.{layer}"))
    if adapter.qkv_layout == "separate":
        for name in "qkv":
            r.output(name, sub(model, adapter, layer, getattr(adapter, name)))
    else:
        r.output("qkv", sub(model, adapter, layer, adapter.q))
    r.output("pattern", sub(model, adapter, 0, parent(adapter.q)), item=1)
    r.input("attn_z", sub(model, adapter, layer, adapter.o))
    r.output("attn_out", sub(model, adapter, layer, adapter.o))
    norm = sub(model, adapter, layer, adapter.mlp_norm)
    if adapter.attn_norm is None:  # post-norm (BERT): resid_mid is that norm's output
        r.output("resid_mid", norm)
    else:
        r.input("resid_mid", norm)
    r.output("mlp_out", sub(model, adapter, layer, adapter.mlp_out or "mlp"))


@pytest.mark.parametrize("case, frozen", [(c, False) for c in HOOK_CASES] + [(c, True) for c in ("llama", "gpt2", "bert")],
                         ids=[*HOOK_CASES, "llama-frozen", "gpt2-frozen", "bert-frozen"])
def test_capture_grad_equals_autograd(case, frozen):
    """Frozen: parameters without grad, so the graph starts at the first captured tensor."""
    model, adapter = hook_model(case)
    n_heads, n_kv, d_head = params.head_dims(model.config)
    parallel = adapter.is_parallel(model.config)
    probe = torch.randn(2, 7, out(model(ids())).shape[-1], generator=torch.Generator().manual_seed(3))

    with Retain() as r:  # the oracle: torch.autograd.grad through plain hooks
        _oracle_tensors(model, adapter, r, 1)
        scalar = (out(model(ids())) * probe).sum()
    keys = [k for k in r.got if not (k == "resid_mid" and parallel)]
    want = dict(zip(keys, torch.autograd.grad(scalar, [r.got[k] for k in keys])))
    if "qkv" in want:
        want["q"], want["k"], want["v"] = qkv_slices(want.pop("qkv"), adapter, n_heads, d_head)
    else:
        want["q"], want["k"], want["v"] = (want[n].unflatten(-1, (-1, d_head)) for n in "qkv")
    want["attn_head_z"] = want["attn_z"].unflatten(-1, (n_heads, d_head))

    model.requires_grad_(not frozen)
    sites = [(n, 1) for n in ("q", "k", "v", "attn_head_z", "attn_z", "attn_out", "mlp_out", "resid_pre")]
    sites += [("pattern", 0), ("embed", None)] + ([] if parallel else [("resid_mid", 1)])
    with capture(model, adapter, sites, grad=True) as acts:
        scalar = (out(model(ids())) * probe).sum()
    scalar.backward()
    assert acts[("k", 1)][0].shape == (2, 7, n_kv, d_head) and acts[("q", 1)][0].shape == (2, 7, n_heads, d_head)
    for site in sites:
        assert acts[site][0].requires_grad, site
        torch.testing.assert_close(acts.grads[site][0], want[site[0]], rtol=1e-5, atol=1e-6, msg=str(site))


def test_capture_grad_on_a_tuple_site():
    model, adapter = hook_model("mixtral")
    probe = torch.randn(2, 7, V, generator=torch.Generator().manual_seed(3))
    with capture(model, adapter, [("experts_in", 1)], grad=True) as acts:
        scalar = (out(model(ids())) * probe).sum()
    scalar.backward(retain_graph=True)
    g_hidden, g_index, g_weight = (None if g is None else g.clone() for g in acts.grads[("experts_in", 1)][0])
    hidden, index, weight = acts[("experts_in", 1)][0]
    want = torch.autograd.grad(scalar, [hidden, weight])
    assert g_index is None and not index.is_floating_point()
    torch.testing.assert_close(g_hidden, want[0])
    torch.testing.assert_close(g_weight, want[1])


def test_capture_grad_refuses_no_grad_mode():
    model, adapter = hook_model("llama")
    with pytest.raises(HookError, match="needs autograd"), torch.no_grad(), \
            capture(model, adapter, [("q", 0)], grad=True):
        model(ids())


def test_default_capture_detaches_and_keeps_one_value_per_call():
    model, adapter = hook_model("llama")
    with capture(model, adapter, [("attn_z", 0), ("q", 1)]) as got:
        model(ids(1))
        model(ids(2))
    assert len(got[("attn_z", 0)]) == 2 and got[("attn_z", 0)][0].shape == (2, 7, H * (D // H))
    assert not any(t.requires_grad for values in got.values() for t in values)


# --- (d) q, k, v from canonical weights -----------------------------------------------------

def _bias(model, adapter: Adapter, part: int, n_heads: int, n_kv: int, d_head: int) -> torch.Tensor:
    """Projection bias [heads, d_head] from the raw parameters (zeros when there is none)."""
    if adapter.qkv_layout == "separate":
        proj = sub(model, adapter, 1, (adapter.q, adapter.k, adapter.v)[part])
        heads = n_heads if part == 0 else n_kv
        return torch.zeros(heads, d_head) if proj.bias is None else proj.bias.view(heads, d_head)
    bias = sub(model, adapter, 1, adapter.q).bias
    if adapter.qkv_layout == "gpt2":
        return bias.view(3, n_heads, d_head)[part]
    return bias.view(n_heads, 3, d_head)[:, part]


@pytest.mark.parametrize("case", list(HOOK_CASES))
def test_qkv_equal_normed_input_times_canonical_weights(case):
    model, adapter = hook_model(case)
    n_heads, n_kv, d_head = params.head_dims(model.config)
    with torch.no_grad(), Retain() as r, capture(model, adapter, [("q", 1), ("k", 1), ("v", 1)]) as got:
        r.input("x", sub(model, adapter, 1, adapter.q))
        model(ids())
    x, attn = r.got["x"], params.attention(model, adapter, 1)
    for part, (name, W) in enumerate(zip("qkv", (attn.W_Q, attn.W_K, attn.W_V))):
        want = torch.einsum("bpm,hmd->bphd", x, W) + _bias(model, adapter, part, n_heads, n_kv, d_head)
        assert got[(name, 1)][0].shape == (2, 7, n_heads if name == "q" else n_kv, d_head)
        torch.testing.assert_close(got[(name, 1)][0], want, rtol=0, atol=1e-5, msg=name)


@pytest.mark.parametrize("case", list(HOOK_CASES))
def test_pattern_times_v_of_kv_head_h_over_group_gives_head_output(case):
    """The documented GQA mapping: query head h reads KV head h // (n_heads // n_kv_heads)."""
    model, adapter = hook_model(case)
    n_heads, n_kv, _ = params.head_dims(model.config)
    with torch.no_grad(), capture(model, adapter, [("pattern", 1), ("v", 1), ("attn_head_z", 1)]) as got:
        model(ids())
    pattern, v, z = (got[(n, 1)][0] for n in ("pattern", "v", "attn_head_z"))
    assert pattern.shape == (2, n_heads, 7, 7)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(2, n_heads, 7))
    kv_of = torch.arange(n_heads) // (n_heads // n_kv)
    torch.testing.assert_close(torch.einsum("bhqk,bkhd->bqhd", pattern, v[:, :, kv_of]), z, rtol=0, atol=1e-5)


def test_pattern_is_capture_only_and_needs_eager_attention():
    model, adapter = hook_model("llama")
    with pytest.raises(ValueError, match="cannot be overwritten"):
        with overwrite(model, adapter, ("pattern", 0), lambda p: p):
            pass
    model, adapter = hook_model("llama", attn="sdpa")
    with pytest.raises(ValueError, match="eager"), capture(model, adapter, [("pattern", 0)]):
        pass


# --- (e) resid_mid --------------------------------------------------------------------------

@pytest.mark.parametrize("case", list(HOOK_CASES))
def test_resid_mid_is_resid_pre_plus_attention_contribution(case):
    model, adapter = hook_model(case)
    names = ("resid_pre", "attn_out", "resid_mid", "resid_post", "mlp_out")
    if adapter.is_parallel(model.config):
        with pytest.raises(ValueError, match="parallel attention and MLP"):
            with capture(model, adapter, [("resid_mid", 1)]):
                pass
        return
    with torch.no_grad(), capture(model, adapter, [(n, 1) for n in names]) as got:
        model(ids())
    pre, attn_out, mid, post, mlp_out = (got[(n, 1)][0] for n in names)
    layer = params.module(model, f"{adapter.layers}.1")
    with torch.no_grad():
        if adapter.name == "gemma3":  # sandwich norms: attention's output is normed before it is added
            contribution = layer.post_attention_layernorm(attn_out)
            torch.testing.assert_close(mid, pre + contribution, rtol=0, atol=1e-5)
            torch.testing.assert_close(post, mid + layer.post_feedforward_layernorm(mlp_out), rtol=0, atol=1e-5)
        elif adapter.name == "bert":  # post-norm
            torch.testing.assert_close(mid, layer.attention.output.LayerNorm(pre + attn_out), rtol=0, atol=1e-5)
            torch.testing.assert_close(post, layer.output.LayerNorm(mid + mlp_out), rtol=0, atol=1e-5)
        else:
            torch.testing.assert_close(mid, pre + attn_out, rtol=0, atol=1e-5)
            torch.testing.assert_close(post, mid + mlp_out, rtol=0, atol=1e-5)


def test_parallel_residual_is_read_from_the_config():
    assert hook_model("gpt_neox")[1].is_parallel(hook_model("gpt_neox")[0].config)
    model, adapter = hook_model("gpt_neox_seq")
    assert not adapter.is_parallel(model.config) and not registry.adapter_for("llama").is_parallel(model.config)


# --- (f) fused layouts ----------------------------------------------------------------------

@pytest.mark.parametrize("case", FUSED)
def test_patching_q_on_a_fused_layout_rewrites_only_q(case):
    model, adapter = hook_model(case)
    n_heads, _, d_head = params.head_dims(model.config)
    fused = sub(model, adapter, 1, adapter.q)
    sites = [(n, 1) for n in "qkv"]
    with torch.no_grad(), Retain() as r, capture(model, adapter, sites) as before:
        r.output("fused", fused)
        base = out(model(ids()))
    clean = r.got["fused"]
    noise = torch.randn(2, 7, n_heads, d_head, generator=torch.Generator().manual_seed(4))
    with torch.no_grad(), overwrite(model, adapter, ("q", 1), lambda q: q + noise), \
            Retain() as r, capture(model, adapter, sites) as after:  # entered after: sees the patch
        r.output("fused", fused)
        patched = out(model(ids()))
    assert not torch.allclose(patched, base)
    for name in "kv":
        assert torch.equal(after[(name, 1)][0], before[(name, 1)][0]), name
    torch.testing.assert_close(after[("q", 1)][0], before[("q", 1)][0] + noise)
    # independently of the site slicing: only the q columns of the fused output moved
    is_q = torch.zeros(3, n_heads, d_head, dtype=torch.bool)
    is_q[0] = True
    is_q = is_q.flatten() if adapter.qkv_layout == "gpt2" else is_q.transpose(0, 1).flatten()
    moved = (r.got["fused"] != clean).any(0).any(0)
    assert torch.equal(moved, is_q)


# --- binding arguments, tables, refusals ----------------------------------------------------

def test_input_sites_bind_the_named_argument_passed_by_keyword():
    model, adapter = hook_model("llama")
    layer = params.module(model, f"{adapter.layers}.0")
    x = torch.randn(1, 5, D)
    rotary = model.model.rotary_emb(x, torch.arange(5)[None])
    with torch.no_grad():
        want = layer(torch.zeros_like(x), position_embeddings=rotary)
        with capture(model, adapter, [("resid_pre", 0)]) as got, \
                overwrite(model, adapter, ("resid_pre", 0), torch.zeros_like):
            patched = layer(hidden_states=x, position_embeddings=rotary)
    assert torch.equal(got[("resid_pre", 0)][0], x) and torch.equal(patched, want)
    bad = Adapter(**{**adapter.__dict__, "sites": {"resid_pre": Tap("", arg="hidden")}})
    with pytest.raises(ValueError, match="no argument 'hidden'"), capture(model, bad, [("resid_pre", 0)]):
        pass


@pytest.mark.parametrize("model_type", registry.supported())
def test_site_tables_agree_with_the_adapter_fields(model_type):
    adapter = registry.adapter_for(model_type)
    sites = adapter.sites
    assert sites["embed"].path == adapter.embed and sites["embed"].root
    assert sites["attn_out"].path == sites["attn_z"].path == sites["attn_head_z"].path == adapter.o
    assert [sites[n].path for n in "qkv"] == [adapter.q, adapter.k or adapter.q, adapter.v or adapter.q]
    assert sites["mlp_out"].path == (adapter.mlp_out or "mlp")
    if adapter.is_moe:
        assert sites["experts_in"].path == adapter.experts and "mlp_hidden" not in sites
    else:
        assert sites["mlp_hidden"].path == adapter.mlp_out and "experts_in" not in sites
    assert sites["resid_mid"].path == adapter.mlp_norm


def test_registry_refuses_unknown_site_names():
    with pytest.raises(ValueError, match="unknown sites"):
        registry.register(Adapter(name="x", model_types=("x",), layers="", embed="", final_norm=None, unembed=None,
                                  attn_norm=None, mlp_norm="", q="", k=None, v=None, o="", sites={"resid": Tap("")}))


def test_bad_sites_are_refused_with_the_reason():
    model, adapter = hook_model("mixtral")
    for site, match in [(("mlp_hidden", 0), "does not exist in a moe model"), (("q", None), "needs a layer"),
                        (("embed", 0), "has no layer")]:
        with pytest.raises(ValueError, match=match), capture(model, adapter, [site]):
            pass
    with pytest.raises(ValueError, match="shape"), torch.no_grad(), \
            overwrite(model, adapter, ("q", 0), lambda q: q.flatten(-2)):
        model(ids())


# --- the mlp_in site (the MLP's input after its norm), against the norm module applied to its residual ---

@pytest.mark.parametrize("case", list(HOOK_CASES))
def test_mlp_in_is_the_pre_mlp_norm_of_the_residual_it_reads(case):
    model, adapter = hook_model(case)
    parallel = adapter.is_parallel(model.config)
    read = "resid_pre" if parallel else "resid_mid"
    with torch.no_grad(), capture(model, adapter, [(read, 1), ("mlp_in", 1)]) as got:
        model(ids())
    resid, mlp_in = got[(read, 1)][0], got[("mlp_in", 1)][0]
    assert mlp_in.shape == resid.shape
    if adapter.name == "bert":  # post-norm: the MLP reads resid_mid as it is (already normed)
        torch.testing.assert_close(mlp_in, resid, rtol=0, atol=0)
        return
    with torch.no_grad():
        want = sub(model, adapter, 1, adapter.mlp_norm)(resid)
    torch.testing.assert_close(mlp_in, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", ["llama", "gpt2"])
def test_overwriting_mlp_in_feeds_the_mlp_and_leaves_the_residual(case):
    model, adapter = hook_model(case)
    mlp = params.module(model, f"{adapter.layers}.1.mlp")
    x = torch.randn(2, 7, model.config.hidden_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), overwrite(model, adapter, ("mlp_in", 1), lambda v: x), \
            capture(model, adapter, [("mlp_out", 1), ("resid_mid", 1)]) as patched:
        model(ids())
    with torch.no_grad(), capture(model, adapter, [("resid_mid", 1)]) as clean:
        model(ids())
        want = mlp(x)
    torch.testing.assert_close(patched[("mlp_out", 1)][0], want, rtol=0, atol=1e-6)
    assert torch.equal(patched[("resid_mid", 1)][0], clean[("resid_mid", 1)][0])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_hooks_read_and_overwrite(name):
    model, adapter = random_model(name)
    ids = torch.randint(1, V, (2, 7))
    sites = [("resid_pre", 1), ("attn_z", 0)]
    if not adapter.is_moe:
        sites += [("mlp_hidden", 1), ("mlp_pre_act", 0)]
    with torch.no_grad(), capture(model, adapter, sites) as got:
        base = model(ids)
    n_heads, _, d_head = params.head_dims(model.config)
    assert got[("attn_z", 0)][0].shape[-1] == n_heads * d_head
    if not adapter.is_moe:
        assert got[("mlp_hidden", 1)][0].shape[-1] == F
    out = base.logits if hasattr(base, "logits") else base.last_hidden_state
    with torch.no_grad(), overwrite(model, adapter, ("attn_z", 0), torch.zeros_like):
        ablated = model(ids)
    changed = ablated.logits if hasattr(ablated, "logits") else ablated.last_hidden_state
    assert not torch.allclose(out, changed)
    with torch.no_grad():
        again = model(ids)
    assert torch.allclose(out, again.logits if hasattr(again, "logits") else again.last_hidden_state)
