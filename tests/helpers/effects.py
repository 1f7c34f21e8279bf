"""Shared by the effect tests: tiny models in float64, random tasks, a plain-torch runner.

Nothing here uses compgraph's hooks or effects: the oracles of the tests are built on
``run`` (plain ``register_forward_(pre_)hook``) alone.
"""

from __future__ import annotations

import pytest
import torch
import transformers as T

from compgraph.data.tasks import TaskBatch
from compgraph.effects.runs import derangement
from compgraph.models import params
from compgraph.models.adapters import registry
from tests.helpers.models import CONFIGS, F, H, V

N, T_ = 4, 7


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run faster on one torch thread, and several times faster when other jobs
    share the cores (two threads wait on each other at every op)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def effects_model(name: str, config=None):
    """A family's tiny causal LM in float64 (eager experts), 1-D parameters randomised."""
    torch.manual_seed(0)
    config = config or CONFIGS[name]()
    config._attn_implementation = "eager"
    if hasattr(config, "_experts_implementation"):
        config._experts_implementation = "eager"  # the grouped-mm path has no float64 kernel
    adapter = registry.adapter_for(config.model_type)
    model = T.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.3)
    for mod in model.modules():  # experts read their own config reference
        if hasattr(mod, "gate_up_proj") and hasattr(mod, "config"):
            mod.config._experts_implementation = "eager"
    return model.double(), adapter


def metric(logits, answer, wrong):
    last = logits[:, -1]
    return last.gather(1, answer[:, None])[:, 0] - last.gather(1, wrong[:, None])[:, 0]


def task(pad: bool = False, seed: int = 3):
    """Random prompts; with ``pad`` the first two examples are left-padded (mask 0). (Llama
    in float64 turns fully masked pad rows into NaN in transformers' eager attention, so
    padding is tested in float32.)"""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, V, (N, T_), generator=g)
    corrupt = torch.randint(1, V, (N, T_), generator=g)
    answer, wrong = torch.randint(1, V, (N,), generator=g), torch.randint(1, V, (N,), generator=g)
    mask = torch.ones(N, T_, dtype=torch.long)
    if pad:
        mask[0, :2] = 0
        mask[1, :1] = 0
        corrupt[mask == 0] = clean[mask == 0] = 0
    position = (mask.cumsum(1) - 1).clamp(min=0)
    return dict(clean_ids=clean, corrupt_ids=corrupt, answer_ids=answer, wrong_ids=wrong,
                attention_mask=mask, position_ids=position)


def batch(t: dict) -> TaskBatch:
    """The :class:`TaskBatch` of a :func:`task` dict."""
    return TaskBatch.of(**t)


def run(model, ids, t, hooks=()):
    """M per example of a run with plain hooks [(module, kind, fn)] attached."""
    handles = []
    for mod, kind, fn in hooks:
        handles.append(mod.register_forward_pre_hook(fn) if kind == "pre" else mod.register_forward_hook(fn))
    try:
        out = model(input_ids=ids, attention_mask=t["attention_mask"], position_ids=t["position_ids"])
    finally:
        for h in handles:
            h.remove()
    return metric(out.logits, t["answer_ids"], t["wrong_ids"])


def layer_mod(model, adapter, layer, path):
    return model.get_submodule(f"{adapter.layers}.{layer}.{path}")


def vec(values) -> torch.Tensor:
    return torch.tensor(list(values), dtype=torch.float64)


def vec_rows(rows) -> torch.Tensor:
    """The mean over examples of per-example effect lists."""
    return torch.tensor(rows, dtype=torch.float64).mean(0)


# --- plain-torch oracles of single patches ------------------------------------------------------

def where(model, adapter, kind, layer):
    """(module, side) holding a component kind's activation, from the adapter's fields."""
    if kind in ("head", "attn"):
        return layer_mod(model, adapter, layer, adapter.o), "in" if kind == "head" else "out"
    if kind == "neuron":
        return layer_mod(model, adapter, layer, adapter.mlp_out), "in"
    return layer_mod(model, adapter, layer, "mlp" if adapter.is_moe else adapter.mlp_out), "out"


def cut(kind, index, value, d_head):
    """The component's activation from its module's tensor (flat per-head layout)."""
    if kind == "head":
        return value[..., index * d_head:(index + 1) * d_head]
    if kind == "neuron":
        return value[..., index:index + 1]
    return value


def paste(kind, index, value, new, d_head):
    value = value.clone()
    if kind == "head":
        value[..., index * d_head:(index + 1) * d_head] = new
    elif kind == "neuron":
        value[..., index:index + 1] = new
    else:
        value = new.expand_as(value).clone()
    return value


def record(model, adapter, kind, layer, ids, t):
    """The full tensor at a component's module in a run."""
    mod, side = where(model, adapter, kind, layer)
    got = {}
    if side == "in":
        hook = (mod, "pre", lambda m, a: got.__setitem__("v", a[0].detach().clone()))
    else:
        hook = (mod, "post", lambda m, a, o: got.__setitem__("v", o.detach().clone()))
    with torch.no_grad():
        run(model, ids, t, [hook])
    return got["v"]


def expert_output(experts, tokens, ids, w, e):
    """The expert's contribution through the experts module itself, other weights zeroed."""
    return experts(tokens, ids, w * (ids == e).to(w.dtype))


def oracle_effect(model, adapter, comp, ablation, direction, t, seed=0):
    kind, layer, index = comp
    d_head = params.head_dims(model.config)[2]
    base = t["corrupt_ids"] if direction == "denoising" else t["clean_ids"]
    with torch.no_grad():
        m_base = run(model, base, t).mean()
    if kind == "expert":
        return _oracle_expert(model, adapter, comp, ablation, t, seed, m_base)
    mod, side = where(model, adapter, kind, layer)
    clean_full = record(model, adapter, kind, layer, t["clean_ids"], t)
    clean = cut(kind, index, clean_full, d_head)
    corrupt = lambda: cut(kind, index, record(model, adapter, kind, layer, t["corrupt_ids"], t), d_head)  # noqa: E731
    target = clean if direction == "denoising" else _oracle_target(ablation, clean, corrupt, t, seed)
    if side == "in":
        hook = (mod, "pre", lambda m_, a: (paste(kind, index, a[0], target, d_head), *a[1:]))
    else:
        hook = (mod, "post", lambda m_, a, o: paste(kind, index, o, target, d_head))
    with torch.no_grad():
        return float(run(model, base, t, [hook]).mean() - m_base)


def _oracle_target(ablation, clean, corrupt, t, seed):
    """What the oracle patches in: the corrupt run's value (``corrupt()``), zero, the mean
    over the clean run's prompt positions and examples, or another example's value."""
    if ablation == "corrupt":
        return corrupt()
    if ablation == "zero":
        return torch.zeros_like(clean)
    if ablation == "mean":
        m = t["attention_mask"].to(clean.dtype)[..., None]
        return ((clean * m).sum((0, 1)) / m.sum()).expand_as(clean)
    return clean[derangement(N, seed)]


def _oracle_expert(model, adapter, comp, ablation, t, seed, m_clean):
    _, layer, e = comp
    experts = layer_mod(model, adapter, layer, adapter.experts)
    block = layer_mod(model, adapter, layer, "mlp")

    def contribution(ids):
        got = {}
        hook = (experts, "pre", lambda m, a: got.__setitem__("a", tuple(x.detach() for x in a)))
        with torch.no_grad():
            run(model, ids, t, [hook])
            return expert_output(experts, *got["a"], e).view(N, T_, -1)

    clean = contribution(t["clean_ids"])
    target = _oracle_target(ablation, clean, lambda: contribution(t["corrupt_ids"]), t, seed)
    live = {}
    hooks = [(experts, "pre", lambda m, a: live.__setitem__("a", a)),
             (block, "post", lambda m, a, o: o - expert_output(experts, *live["a"], e).view_as(o) + target)]
    with torch.no_grad():
        return float(run(model, t["clean_ids"], t, hooks).mean() - m_clean)


def sample_components(model, adapter):
    comps = [("head", 0, 1), ("head", 1, H - 1), ("attn", 0, None), ("mlp", 1, None), ("mlp", 0, None)]
    if adapter.is_moe:
        comps += [("expert", 0, 0), ("expert", 1, 3)]
    else:
        comps += [("neuron", 0, 5), ("neuron", 1, F - 1)]
    return comps


def oracle_attribution(model, adapter, comps, t, steps=None):
    """Σ_positions (corrupt − clean)·∂M/∂activation, M the mean over examples; with ``steps``
    the gradient averaged over runs on embeddings (1-k/m)·corrupt + (k/m)·clean, k=1..m."""
    d_head = params.head_dims(model.config)[2]
    embed_mod = model.get_submodule(adapter.embed)
    diffs = {c: None for c in comps}
    for c in comps:
        if c[0] == "expert":
            continue
        a = record(model, adapter, c[0], c[1], t["corrupt_ids"], t)
        b = record(model, adapter, c[0], c[1], t["clean_ids"], t)
        diffs[c] = cut(c[0], c[2], a - b, d_head)
    emb = {}
    for side in ("clean_ids", "corrupt_ids"):
        got = {}
        with torch.no_grad():
            run(model, t[side], t, [(embed_mod, "post", lambda m, a, o: got.__setitem__("e", o.detach()))])
        emb[side] = got["e"]
    alphas = [1.0] if steps is None else [k / steps for k in range(1, steps + 1)]
    grads = {c: 0 for c in comps}
    for alpha in alphas:
        live = {}
        hooks = [(embed_mod, "post", lambda m, a, o, al=alpha: (1 - al) * emb["corrupt_ids"] + al * emb["clean_ids"])]
        for c in comps:
            if c[0] == "expert":
                continue
            mod, side = where(model, adapter, c[0], c[1])

            def keep(x, key=(id(mod), side)):
                live[key] = x  # in the graph already (the parameters require grad)
                return x
            if side == "in":
                hooks.append((mod, "pre", lambda m, a, keep=keep: (keep(a[0]), *a[1:])))
            else:
                hooks.append((mod, "post", lambda m, a, o, keep=keep: keep(o)))
        with torch.enable_grad():
            value = run(model, t["clean_ids"], t, hooks).mean()
            keys = list(live)
            got = dict(zip(keys, torch.autograd.grad(value, [live[k] for k in keys])))
        for c in comps:
            if c[0] == "expert":
                continue
            mod, side = where(model, adapter, c[0], c[1])
            grads[c] = grads[c] + cut(c[0], c[2], got[(id(mod), side)], d_head) / len(alphas)
    return [float((diffs[c] * grads[c]).sum()) for c in comps]
