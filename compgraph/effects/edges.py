"""Edge effects: edge attribution patching (Syed et al. 2023) and EAP-IG over the residual graph.

The graph (:func:`edge_graph`):

- **sources** write into the residual stream: the token embeddings (``embed``: the
  embedding module's output), every head (``head``: its output through W_O, the per-head
  term ``z_h @ W_O[h]`` of the attention output; the o projection's bias is in no head),
  every MLP block (``mlp``: its output; MoE: the whole sparse block);
- **destinations** read it: every query head's q input (``input="q"``, dst
  ``("head", layer, h)``), every KV head's k and v inputs (``input="k"|"v"``, dst
  ``("kv_head", layer, g)``: under grouped-query attention one KV head's k and v feed query
  heads ``g·group .. (g+1)·group - 1``, so the edge ends at the KV head, not at a query
  head; without GQA g = h), every MLP input (``input="mlp"``, dst ``("mlp", layer, None)``)
  and the logits (``input="logits"``, dst ``("logits", None, None)``: the final norm's input);
- an edge src → dst exists when src writes before dst reads: the embeddings feed
  everything; a head or MLP of layer l feeds every destination of a later layer and the
  logits, and a head of layer l also feeds the MLP of layer l unless attention and MLP run
  in parallel (GPT-NeoX ``use_parallel_residual``).

Score (``method="attribution"``)::

    score(src -> dst) = mean over examples of Σ_positions Σ_d_model
                        (src output in the corrupt run − in the clean run) · ∂M/∂x_dst

on the clean run, where ``x_dst`` is the residual stream entering *that destination alone*:
the gradient flows back from M only through that destination's own read, norm included.
For a query head h of layer l: ∂M/∂x along its q path = J_norm(x)ᵀ · (∂M/∂q_h · W_Q[h]ᵀ),
with ``x`` the attention norm's input, ``J_norm`` that norm's Jacobian at ``x`` (the norm is
per position) and ∂M/∂q_h the gradient at the q projection's output (the ``q`` site: before
rotary embeddings and any q-norm, through which the gradient has already flowed); likewise
k and v with W_K[g], W_V[g] of the KV head. The vector-Jacobian products of all heads of a
layer are one autograd call on the norm applied to stacked copies of ``x``. For the MLP
and the logits the residual entering the norm is perturbed by a zero tensor added only on
that norm's input (the residual branch is untouched), whose gradient is exactly ∂M along
that read. This is what EAP-IG's per-destination copies of the residual compute
(TransformerLens ``use_split_qkv_input``), here without copying the model.

``method="eap-ig"``: ∂M/∂x_dst averaged over ``steps`` runs on interpolated token
embeddings, exactly as for nodes (see :mod:`compgraph.effects.attribution`); the source
differences stay those of the real corrupt and clean runs.

Sources must add up to the residual stream: a model whose attention or MLP output passes
through a norm before the residual (Gemma 3's sandwich norms) is refused, since a head's
contribution there is not its output through W_O. BERT (post-norm, no logits) is refused.

Edge-level interventions for circuits (:func:`edge_patched_metric`): every destination's
input is its clean residual plus, for each source whose edge into it is *not* in the
circuit, (the source's ablated output − its output in this very run); q/k/v inputs of
single heads are rebuilt as ``q_h + (norm(x + δ_h) − norm(x)) · W_Q[h]`` (the projection is
linear), MLP and logits inputs by adding δ on the norm's input. Each source's (ablated −
current) output is written once per pass into a buffer of one row per source; a destination's
δ is a matrix product of its column of the ablation mask with the rows of the ablated sources,
or, when fewer rows hold a kept edge into it, the sum of every source it reads (a running
prefix, once per pass) minus the product over the kept rows: the same sum in another order
(float noise). A layer's q, k and v destinations read the same sources and take one product
(``benchmarks/edge_patching.py``).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import NamedTuple

import polars as pl
import torch

from compgraph.data.tasks import Inputs, TaskBatch
from compgraph.effects.components import Dims, dims
from compgraph.effects.measure import GRADIENT_METHODS, Metric
from compgraph.effects.runs import derangement, device_of, example_chunks, forward_logits, per_example
from compgraph.errors import ConfigError, HookError
from compgraph.models import params
from compgraph.models.adapters.base import Adapter
from compgraph.models.hooks import capture, overwrite

INPUTS = ("q", "k", "v", "mlp", "logits")
DEFAULT_MEMORY = 2**30
"""Bytes of per-source outputs kept for one chunk of examples (sources × d_model × 4 per
token): SmolLM2's 301 sources take 0.7 MB a token, so 1 GiB runs ~1,500 tokens a pass (the
main job's 64 prompts in one to two passes instead of four to six at 256 MiB)."""

_NODE = pl.Struct({"kind": pl.String, "layer": pl.Int64, "index": pl.Int64})
EDGE_SCHEMA = {"src": _NODE, "dst": _NODE, "input": pl.String, "effect": pl.Float64, "method": pl.String}


class Node(NamedTuple):
    kind: str
    """embed | head | mlp (sources); head | kv_head | mlp | logits (destinations)."""
    layer: int | None
    index: int | None


@dataclass(frozen=True)
class EdgeGraph:
    dims: Dims
    sources: list[Node]
    """embed, then per layer: heads 0..H-1, mlp."""
    dests: list[tuple[Node, str]]
    """per layer: q of heads 0..H-1, k of KV heads, v of KV heads, mlp; then the logits."""
    valid: torch.Tensor
    """[S, D] bool: the edge exists."""

    def source_group(self, layer: int | None, kind: str) -> slice:
        """Rows of the sources of one kind in one layer (embed: layer None)."""
        if kind == "embed":
            return slice(0, 1)
        base = 1 + layer * (self.dims.n_heads + 1)
        return slice(base, base + self.dims.n_heads) if kind == "head" else slice(base + self.dims.n_heads,
                                                                                  base + self.dims.n_heads + 1)

    @functools.cached_property
    def prefix_rows(self) -> torch.Tensor:
        """[D]: per destination, the number r of sources it reads when they are the first r
        rows (sources 0 .. r-1, none after); -1 otherwise."""
        out = torch.full((self.valid.shape[1],), -1, dtype=torch.long)
        for j in range(self.valid.shape[1]):
            reads = torch.nonzero(self.valid[:, j]).flatten()
            count = int(reads.numel())
            if count == 0 or int(reads[-1]) == count - 1:
                out[j] = count
        return out

    def dest_layer(self, layer: int | None) -> slice:
        """Columns of one layer's destinations (None: the logits)."""
        per = self.dims.n_heads + 2 * self.dims.n_kv_heads + 1
        if layer is None:
            return slice(per * self.dims.n_layers, per * self.dims.n_layers + 1)
        return slice(per * layer, per * (layer + 1))


def edge_graph(model, adapter: Adapter) -> EdgeGraph:
    _refuse(adapter)
    d = dims(model, adapter)
    sources = [Node("embed", None, None)]
    dests: list[tuple[Node, str]] = []
    for layer in range(d.n_layers):
        sources += [Node("head", layer, h) for h in range(d.n_heads)] + [Node("mlp", layer, None)]
        dests += [(Node("head", layer, h), "q") for h in range(d.n_heads)]
        dests += [(Node("kv_head", layer, g), "k") for g in range(d.n_kv_heads)]
        dests += [(Node("kv_head", layer, g), "v") for g in range(d.n_kv_heads)]
        dests.append((Node("mlp", layer, None), "mlp"))
    dests.append((Node("logits", None, None), "logits"))
    valid = torch.zeros(len(sources), len(dests), dtype=torch.bool)
    for i, src in enumerate(sources):
        for j, (dst, kind) in enumerate(dests):
            valid[i, j] = _feeds(src, dst, kind, d.parallel)
    return EdgeGraph(d, sources, dests, valid)


def _feeds(src: Node, dst: Node, kind: str, parallel: bool) -> bool:
    if src.kind == "embed" or dst.kind == "logits":
        return True
    if dst.layer > src.layer:
        return True
    return dst.layer == src.layer and src.kind == "head" and kind == "mlp" and not parallel


def unsupported(adapter: Adapter) -> str | None:
    """Why this family has no edge graph (None: it has one)."""
    if adapter.attn_norm is None or adapter.final_norm is None or not adapter.causal:
        return f"edge effects need a pre-norm causal LM; {adapter.name} is not one"
    if not adapter.additive_blocks:
        return (f"{adapter.name}: a norm follows attention and the MLP (sandwich norms), so per-head "
                f"contributions to the residual stream are not defined; edges refused")
    return None


def _refuse(adapter: Adapter) -> None:
    reason = unsupported(adapter)
    if reason:
        raise ConfigError(reason)


# --- per-source outputs ---------------------------------------------------------------------

def _source_sites(d: Dims) -> list:
    return [("embed", None)] + [(name, layer) for layer in range(d.n_layers) for name in ("attn_head_z", "mlp_out")]


def _run_sources(model, adapter: Adapter, inputs: Inputs, d: Dims, check: bool = False) -> tuple[dict, torch.Tensor]:
    """Every source's output on ``inputs``, and the run's logits."""
    sites = _source_sites(d)
    if check:
        sites += [(name, layer) for layer in range(d.n_layers) for name in ("resid_pre", "resid_post", "attn_out")]
    with torch.no_grad(), capture(model, adapter, sites) as acts:
        out = forward_logits(model, inputs)
    values = {site: got[0] for site, got in acts.items()}
    if check:
        _check_additive(values, d)
    return values, out.clone()  # not a view that would keep every position's logits alive


def _check_additive(values: dict, d: Dims) -> None:
    """Refuse models whose blocks do not add attn_out + mlp_out to the residual stream."""
    for layer in range(d.n_layers):
        delta = values[("resid_post", layer)] - values[("resid_pre", layer)]
        parts = values[("attn_out", layer)] + values[("mlp_out", layer)]
        scale = float(delta.abs().max()) + 1e-6
        if not torch.allclose(delta, parts, rtol=0, atol=1e-3 * scale):
            raise ConfigError(f"layer {layer}: the block's output is not attn_out + mlp_out (a norm after attention "
                              f"or the MLP, as in Gemma 3): per-head source outputs are not defined, edges refused")


def _w_o(model, adapter: Adapter, d: Dims) -> list[torch.Tensor]:
    return [params.attention(model, adapter, layer).W_O.detach() for layer in range(d.n_layers)]


def _source_diffs(a: dict, b: dict, w_o: list, d: Dims) -> torch.Tensor:
    """[S, n, T, d_model]: every source's output in run ``a`` minus in run ``b`` (b may be a
    dict of broadcastable means)."""
    emb = a[("embed", None)] - b[("embed", None)]
    shape = a[("embed", None)].shape
    rows = [emb.expand(shape).unsqueeze(0)]
    for layer in range(d.n_layers):
        dz = (a[("attn_head_z", layer)] - b[("attn_head_z", layer)]).expand(a[("attn_head_z", layer)].shape)
        rows.append(torch.einsum("nthe,hed->hntd", dz, w_o[layer]))
        rows.append((a[("mlp_out", layer)] - b[("mlp_out", layer)]).expand(shape).unsqueeze(0))
    return torch.cat(rows)


# --- per-destination gradients ---------------------------------------------------------------

def _first_tensor(args: tuple, kwargs: dict) -> tuple[torch.Tensor, bool]:
    if args:
        return args[0], True
    for value in kwargs.values():
        if isinstance(value, torch.Tensor):
            return value, False
    raise HookError("a norm was called without a tensor argument")


def _replace_first(args, kwargs, new):
    if args:
        return (new, *args[1:]), kwargs
    kwargs = dict(kwargs)
    key = next(k for k, v in kwargs.items() if isinstance(v, torch.Tensor))
    kwargs[key] = new
    return args, kwargs


@contextlib.contextmanager
def _norm_hooks(model, adapter: Adapter, d: Dims, record: dict, add: dict | None = None, leaves: dict | None = None):
    """Pre-hooks on every layer's attention norm (record its input), MLP norm and the final
    norm (add ``add[key]`` to the input, or a fresh zero leaf kept in ``leaves[key]``).
    Keys: ("attn", l), ("mlp", l), ("final", None)."""
    handles = []

    def recorder(key):
        def hook(mod, args, kwargs):
            record[key] = _first_tensor(args, kwargs)[0].detach()
        return hook

    def adder(key):
        def hook(mod, args, kwargs):
            x, _ = _first_tensor(args, kwargs)
            if leaves is not None:
                leaf = torch.zeros_like(x, requires_grad=True)
                leaves[key] = leaf
                return _replace_first(args, kwargs, x + leaf)
            if add is not None and add.get(key) is not None:
                return _replace_first(args, kwargs, x + add[key](x))
            return None
        return hook

    try:
        for layer in range(d.n_layers):
            attn = params.layer_module(model, adapter, layer, adapter.attn_norm)
            handles.append(attn.register_forward_pre_hook(recorder(("attn", layer)), with_kwargs=True))
            mlp = params.layer_module(model, adapter, layer, adapter.mlp_norm)
            handles.append(mlp.register_forward_pre_hook(adder(("mlp", layer)), with_kwargs=True))
        final = params.module(model, adapter.final_norm)
        handles.append(final.register_forward_pre_hook(adder(("final", None)), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def _norm_vjp(norm: torch.nn.Module, x: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """J_norm(x)ᵀ · v for each v in ``vectors`` [D, *x.shape] (the norm is applied per position)."""
    with torch.enable_grad():
        xr = x.detach().unsqueeze(0).expand(vectors.shape[0], *x.shape).clone().requires_grad_(True)
        y = norm.forward(xr)  # .forward: no hooks
        (g,) = torch.autograd.grad(y, xr, vectors.to(y.dtype))
    return g


class _Attn(NamedTuple):
    W_Q: torch.Tensor
    W_K: torch.Tensor
    W_V: torch.Tensor


def _qkv_weights(model, adapter, d: Dims) -> list[_Attn]:
    out = []
    for layer in range(d.n_layers):
        a = params.attention(model, adapter, layer)
        out.append(_Attn(a.W_Q.detach(), a.W_K.detach(), a.W_V.detach()))
    return out


def _dest_grads(model, adapter: Adapter, inputs: Inputs, answer_ids, wrong_ids, metric: Metric, d: Dims,
                qkv: list[_Attn], embed: torch.Tensor | None = None):
    """One forward + backward of Σ_examples m; an iterator over G [D_l, n, T, d_model] per
    destination layer (columns :meth:`EdgeGraph.dest_layer`), then the logits' [1, n, T, d].
    G is ∂/∂(residual entering that destination alone)."""
    sites = [(name, layer) for layer in range(d.n_layers) for name in ("q", "k", "v")]
    record, leaves = {}, {}
    with torch.enable_grad(), contextlib.ExitStack() as stack:
        if embed is not None:
            stack.enter_context(overwrite(model, adapter, ("embed", None), lambda _: embed))
        stack.enter_context(_norm_hooks(model, adapter, d, record, leaves=leaves))
        acts = stack.enter_context(capture(model, adapter, sites, grad=True))
        logits = forward_logits(model, inputs)
        total = metric(logits, answer_ids.to(logits.device), wrong_ids.to(logits.device)).sum()
        keys = sites + sorted(leaves, key=lambda k: (k[1] is None, k[1] or 0))
        tensors = [acts[s][0] for s in sites] + [leaves[k] for k in keys[len(sites):]]
        grads = dict(zip(keys, torch.autograd.grad(total, tensors, allow_unused=True)))
    return _per_layer(model, adapter, d, qkv, grads, record, inputs.ids.shape)


def _per_layer(model, adapter, d: Dims, qkv, grads: dict, record: dict, shape):
    """Yield G [D_l, n, T, d_model] layer by layer, then the logits' (the norm VJPs are done
    as they are needed, so only one layer's G is held at a time)."""
    for layer in range(d.n_layers):
        a = qkv[layer]
        parts = []
        for name, w in (("q", a.W_Q), ("k", a.W_K), ("v", a.W_V)):
            g = grads[(name, layer)]
            n_units = w.shape[0]
            if g is None:
                g = torch.zeros(*shape, n_units, w.shape[2], device=w.device, dtype=w.dtype)
            parts.append(torch.einsum("nthe,hde->hntd", g.to(w.dtype), w))
        norm = params.layer_module(model, adapter, layer, adapter.attn_norm)
        g_attn = _norm_vjp(norm, record[("attn", layer)], torch.cat(parts))
        g_mlp = grads[("mlp", layer)]
        g_mlp = torch.zeros_like(record[("attn", layer)]) if g_mlp is None else g_mlp
        yield torch.cat([g_attn, g_mlp.unsqueeze(0).to(g_attn.dtype)])
    yield grads[("final", None)].unsqueeze(0)


# --- edge attribution -------------------------------------------------------------------------

def edge_attribution(model, adapter: Adapter, task: TaskBatch, metric: Metric, *, method: str = "attribution",
                     steps: int = 5, memory: int = DEFAULT_MEMORY) -> pl.DataFrame:
    """Every edge's score (module doc); one row per edge of :func:`edge_graph` with the
    columns of :data:`EDGE_SCHEMA` (``src`` and ``dst`` structs {kind, layer, index})."""
    if method not in GRADIENT_METHODS:
        raise ConfigError(f"edge methods: 'attribution' or 'eap-ig', not {method!r}")
    if steps < 1:
        raise ConfigError("steps must be at least 1")
    scores = edge_scores(model, adapter, task, metric, method=method, steps=steps, memory=memory)
    return edge_frame(edge_graph(model, adapter), scores, method)


def edge_scores(model, adapter: Adapter, task: TaskBatch, metric: Metric, *, method: str = "attribution", steps: int = 5,
                memory: int = DEFAULT_MEMORY) -> torch.Tensor:
    """[S, D] float64 scores (0 where the edge does not exist)."""
    graph = edge_graph(model, adapter)
    d = graph.dims
    w_o, qkv = _w_o(model, adapter, d), _qkv_weights(model, adapter, d)
    scores = torch.zeros(graph.valid.shape, dtype=torch.float64)
    per_token = len(graph.sources) * d.d_model * 4
    first = True
    for chunk in example_chunks(task.n, task.width, max(1, memory // per_token)):
        sub = task.rows(chunk)
        clean, _ = _run_sources(model, adapter, sub.clean, d, check=first)
        corrupt, _ = _run_sources(model, adapter, sub.corrupt, d)
        first = False
        diffs = _source_diffs(corrupt, clean, w_o, d).flatten(1)  # [S, n·T·d]
        runs = [None] if method == "attribution" else \
            [(1 - k / steps) * corrupt[("embed", None)] + (k / steps) * clean[("embed", None)]
             for k in range(1, steps + 1)]
        for embed in runs:
            grads = _dest_grads(model, adapter, sub.clean, sub.answer_ids, sub.wrong_ids, metric, d, qkv, embed)
            for layer, g in enumerate(grads):
                cols = graph.dest_layer(layer if layer < d.n_layers else None)
                scores[:, cols] += (diffs @ g.flatten(1).to(diffs.dtype).T).double().cpu() / len(runs)
    scores /= task.n
    return scores * graph.valid


def edge_frame(graph: EdgeGraph, scores: torch.Tensor, method: str) -> pl.DataFrame:
    src_idx, dst_idx = torch.nonzero(graph.valid, as_tuple=True)
    src = [graph.sources[i]._asdict() for i in src_idx.tolist()]
    dst = [graph.dests[j][0]._asdict() for j in dst_idx.tolist()]
    return pl.DataFrame({
        "src": src, "dst": dst, "input": [graph.dests[j][1] for j in dst_idx.tolist()],
        "effect": scores[src_idx, dst_idx].tolist(), "method": [method] * len(src),
    }, schema=EDGE_SCHEMA)


def edge_mask(graph: EdgeGraph, edges: pl.DataFrame) -> torch.Tensor:
    """[S, D] bool: the edges of a frame (columns src, dst, input) marked in the graph."""
    src_at = {s: i for i, s in enumerate(graph.sources)}
    dst_at = {(n, k): j for j, (n, k) in enumerate(graph.dests)}
    mask = torch.zeros(graph.valid.shape, dtype=torch.bool)
    for src, dst, kind in zip(edges["src"].to_list(), edges["dst"].to_list(), edges["input"].to_list()):
        i = src_at[Node(src["kind"], src["layer"], src["index"])]
        j = dst_at[(Node(dst["kind"], dst["layer"], dst["index"]), kind)]
        if not graph.valid[i, j]:
            raise ConfigError(f"no edge {src} -> {dst} ({kind}) in this model's graph")
        mask[i, j] = True
    return mask


# --- edge-level interventions ---------------------------------------------------------------

class _EdgePatch:
    """The hooks of one edge-patched forward pass (see the module doc).

    Each source's (ablated − current) output is written once into a buffer of one row per
    source, [S, n·T·d], when a destination first reads it (a source's output is final once
    its layer has run); a group of destinations gets its shifts as one matrix product of its
    columns of the ablation mask with the buffer's rows, or with the complement (see
    :meth:`delta`)."""

    def __init__(self, model, adapter, graph: EdgeGraph, outside: torch.Tensor, target: dict, w_o, qkv,
                 complement: bool = True):
        self.model, self.adapter, self.graph, self.d = model, adapter, graph, graph.dims
        self.outside = outside.to(torch.get_default_dtype())  # [S, D] 1 where the edge is ablated
        self.target, self.w_o, self.qkv = target, w_o, qkv
        self.kept = (graph.valid & (outside == 0)).to(self.outside.dtype)  # valid edges in the circuit
        self.groups = self._groups()
        self.stops = graph.prefix_rows
        self.complement = complement
        self._reset()

    def _reset(self) -> None:
        self.record: dict = {}
        self.current: dict = {}
        self.buffer: torch.Tensor | None = None  # [S, n, T, d]: ablated − current output per source
        self.filled = 0  # rows of the buffer written (groups in source order)
        self._cum: tuple[int, torch.Tensor | None] = (0, None)  # (rows, their sum) of the running prefix
        self._qkv: dict = {}  # per layer: the shift of its q, k and v destinations, computed once

    def _groups(self) -> list[tuple[slice, tuple, int | None]]:
        """Every source group (rows, site, layer) in source order: embed, then per layer heads, mlp."""
        groups = [(self.graph.source_group(None, "embed"), ("embed", None), None)]
        for layer in range(self.d.n_layers):
            groups.append((self.graph.source_group(layer, "head"), ("attn_head_z", layer), layer))
            groups.append((self.graph.source_group(layer, "mlp"), ("mlp_out", layer), layer))
        return groups

    def _fill(self, rows: int) -> torch.Tensor:
        """The buffer with at least its first ``rows`` rows written; a head's row is its
        (ablated − current) z through its slice of W_O."""
        for group, site, layer in self.groups:
            if self.filled >= rows:
                break
            if group.stop <= self.filled:
                continue
            cur = self.current[site]
            diff = (self.target[site] - cur).expand(cur.shape)
            if self.buffer is None:
                n, t = cur.shape[:2]
                self.buffer = torch.empty(len(self.graph.sources), n, t, self.d.d_model, dtype=cur.dtype,
                                          device=cur.device)
            out = self.buffer[group]
            if site[0] == "attn_head_z":  # [n, T, h, e] -> [h, n·T, e] @ [h, e, d]
                h, e = diff.shape[2:]
                torch.bmm(diff.permute(2, 0, 1, 3).reshape(h, -1, e), self.w_o[layer].to(diff.dtype),
                          out=out.view(h, -1, self.d.d_model))
            else:
                out.copy_(diff.unsqueeze(0))
            self.filled = group.stop
        return self.buffer

    def _product(self, w: torch.Tensor) -> torch.Tensor | None:
        """Σ_s w[s, j] · diff_s, [D_cols, n, T, d]: one matrix product over the rows where ``w``
        has a one (a slice of the buffer when they start at row 0 and fill most of the span)."""
        used = torch.nonzero(w.any(1)).flatten()
        if used.numel() == 0:
            return None
        stop = int(used[-1]) + 1
        buf = self._fill(stop)
        flat = buf.view(buf.shape[0], -1)
        if used.numel() * 2 >= stop:
            rows, wr = flat[:stop], w[:stop]
        else:
            rows, wr = flat.index_select(0, used.to(flat.device)), w[used]
        out = torch.mm(wr.T.to(flat.dtype).to(flat.device), rows)
        return out.view(w.shape[1], *buf.shape[1:])

    def _prefix(self, stop: int) -> torch.Tensor:
        """Σ of the first ``stop`` sources' diffs, [1, n, T, d]; extended from the last prefix
        asked for (destinations are reached in source order)."""
        done, total = self._cum
        if stop < done:
            done, total = 0, None
        if stop > done:
            part = self._fill(stop)[done:stop].sum(0, keepdim=True)
            total = part if total is None else total + part
        self._cum = (stop, total)
        return total

    def delta(self, cols: slice) -> torch.Tensor | None:
        """[D_cols, n, T, d] input shift of some destinations: Σ over the sources whose edge
        into a destination is ablated of (ablated − current output); None when every edge into
        them is in the circuit.

        A product over the rows holding an ablated edge, or, when fewer rows hold an edge kept
        in the circuit and the destinations read the same first sources, the sum of those
        sources (a running prefix, summed once per pass) minus the product over the kept rows:
        the same sum in another order (float noise)."""
        w = self.outside[:, cols]
        if not bool(w.any()):
            return None
        if not self.complement:
            return self._product(w)
        kept = self.kept[:, cols]
        stops = self.stops[cols]
        if bool((stops < 0).any()) or bool((stops != stops[0]).any()) or \
                int(kept.any(1).sum()) >= int(w.any(1).sum()):
            return self._product(w)
        total = self._prefix(int(stops[0]))
        minus = self._product(kept)
        return total if minus is None else total - minus

    def qkv_fn(self, layer: int, name: str):
        d, cols = self.d, self.graph.dest_layer(layer)
        offset = {"q": 0, "k": d.n_heads, "v": d.n_heads + d.n_kv_heads}[name]
        count = d.n_heads if name == "q" else d.n_kv_heads
        sel = slice(cols.start + offset, cols.start + offset + count)
        w = getattr(self.qkv[layer], "W_" + name.upper())

        def fn(value):
            if layer not in self._qkv:  # q, k and v read the same sources: one product for all
                self._qkv[layer] = self.delta(slice(cols.start, cols.stop - 1))
            shift = self._qkv[layer]
            if shift is None or not bool(self.outside[:, sel].any()):
                return value
            if shift.shape[0] > 1:
                shift = shift[offset:offset + count]
            x = self.record[("attn", layer)]
            norm = params.layer_module(self.model, self.adapter, layer, self.adapter.attn_norm)
            moved = norm.forward(x.unsqueeze(0) + shift.to(x.dtype)) - norm.forward(x).unsqueeze(0)
            change = torch.einsum("hntd,hde->nthe", moved.expand(count, *moved.shape[1:]), w.to(moved.dtype))
            keep = (self.outside[:, sel].any(0)).to(value.device).view(1, 1, count, 1)
            return value + torch.where(keep, change.to(value.dtype), torch.zeros_like(value))
        return fn

    def adders(self) -> dict:
        d = self.d
        out = {}
        for layer in range(d.n_layers):
            cols = self.graph.dest_layer(layer)
            mlp_col = slice(cols.stop - 1, cols.stop)
            out[("mlp", layer)] = (lambda x, c=mlp_col: self._shift(c, x))
        out[("final", None)] = (lambda x: self._shift(self.graph.dest_layer(None), x))
        return out

    def _shift(self, cols: slice, x: torch.Tensor) -> torch.Tensor:
        shift = self.delta(cols)
        return torch.zeros_like(x) if shift is None else shift[0].to(x.dtype)

    @contextlib.contextmanager
    def hooks(self):
        d = self.d
        self._reset()
        sites = _source_sites(d)
        with contextlib.ExitStack() as stack:
            acts = stack.enter_context(capture(self.model, self.adapter, sites))
            self._acts = acts
            stack.enter_context(_norm_hooks(self.model, self.adapter, d, self.record, add=self._live(self.adders())))
            for layer in range(d.n_layers):
                for name in ("q", "k", "v"):
                    stack.enter_context(overwrite(self.model, self.adapter, (name, layer),
                                                  self._live_fn(self.qkv_fn(layer, name))))
            yield

    def _refresh(self):
        for site, got in self._acts.items():
            if got:
                self.current[site] = got[-1]

    def _live(self, adders: dict) -> dict:
        return {k: (lambda x, f=f: (self._refresh(), f(x))[1]) for k, f in adders.items()}

    def _live_fn(self, fn):
        return lambda value: (self._refresh(), fn(value))[1]


def edge_patched_metric(model, adapter: Adapter, task: TaskBatch, in_circuit: torch.Tensor, metric: Metric, *,
                        ablation: str = "corrupt", graph: EdgeGraph | None = None, seed: int = 0,
                        memory: int = DEFAULT_MEMORY) -> float:
    """M of the clean run with every edge *not* in ``in_circuit`` ([S, D] bool) ablated:
    its destination receives the source's corrupt output (``corrupt``), its mean over the
    clean run's prompt positions and examples (``mean``), 0 (``zero``), or another example's
    clean output (``resample``) instead of the source's output in this run."""
    return edge_patched_metrics(model, adapter, task, [in_circuit], metric, ablation=ablation, graph=graph,
                                seed=seed, memory=memory)[0]


def edge_patched_metrics(model, adapter: Adapter, task: TaskBatch, circuits: list[torch.Tensor], metric: Metric, *,
                         ablation: str = "corrupt", graph: EdgeGraph | None = None, seed: int = 0,
                         memory: int = DEFAULT_MEMORY, empty_is_corrupt: bool = True) -> list[float]:
    """:func:`edge_patched_metric` of several circuits, the ablated source outputs computed
    once per chunk of examples; one forward pass per circuit, except that, with ``corrupt``
    ablation, a circuit without a single edge takes M of the corrupt run that made those
    outputs (``empty_is_corrupt``): every destination then receives every source's corrupt
    output, so its input is the corrupt run's residual, and the patched pass would compute
    that run again (the same value up to float rounding)."""
    if ablation not in ("corrupt", "mean", "zero", "resample"):
        raise ConfigError(f"unknown ablation {ablation!r}")
    graph = graph or edge_graph(model, adapter)
    d = graph.dims
    w_o, qkv = _w_o(model, adapter, d), _qkv_weights(model, adapter, d)
    means = _source_means(model, adapter, task, d) if ablation == "mean" else None
    perm = derangement(task.n, seed) if ablation == "resample" else None
    totals = [0.0] * len(circuits)
    per_token = len(graph.sources) * d.d_model * 4
    for chunk in example_chunks(task.n, task.width, max(1, memory // per_token)):
        sub = task.rows(chunk)
        corrupt_m = None  # Σ M of the corrupt run over the chunk: the empty circuit's (corrupt ablation)
        if ablation == "corrupt":
            target, logits = _run_sources(model, adapter, sub.corrupt, d)
            corrupt_m = float(per_example(metric, logits, sub.answer_ids, sub.wrong_ids).sum())
        elif ablation == "resample":
            target, _ = _run_sources(model, adapter, task.clean.rows(perm[chunk]), d)
        elif ablation == "mean":
            target = means
        else:
            target = {site: torch.zeros((), device=device_of(model)) for site in _source_sites(d)}
        for i, in_circuit in enumerate(circuits):
            if corrupt_m is not None and empty_is_corrupt and not bool((graph.valid & in_circuit).any()):
                totals[i] += corrupt_m
                continue
            patch = _EdgePatch(model, adapter, graph, graph.valid & ~in_circuit, target, w_o, qkv)
            with torch.no_grad(), patch.hooks():
                logits = forward_logits(model, sub.clean)
            totals[i] += float(per_example(metric, logits, sub.answer_ids, sub.wrong_ids).sum())
    return [t / task.n for t in totals]


def _source_means(model, adapter, task: TaskBatch, d: Dims) -> dict:
    sums, count = {}, 0.0
    for chunk in example_chunks(task.n, task.width, 4096):
        inputs = task.clean.rows(chunk)
        values, _ = _run_sources(model, adapter, inputs, d)
        mask = inputs.mask.to(device_of(model))
        count += float(mask.sum())
        for site, v in values.items():
            w = mask.view(*mask.shape, *([1] * (v.dim() - 2)))
            sums[site] = sums.get(site, 0) + (v * w).sum(dim=(0, 1)).double()
    dtype = next(model.parameters()).dtype
    return {site: (s / count).to(dtype) for site, s in sums.items()}


__all__ = ["EDGE_SCHEMA", "EdgeGraph", "Node", "edge_attribution", "edge_frame", "edge_graph", "edge_mask",
           "edge_patched_metric", "edge_patched_metrics", "edge_scores", "unsupported"]
