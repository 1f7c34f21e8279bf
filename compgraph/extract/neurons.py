"""MLP neurons: weight decoding through the LM head, and activation statistics.

Definitions (neuron i of layer l):
- ``DECODES_TO via "out"``: the neuron's write direction (row i of the out/down
  projection) times the final norm's gain, through the unembedding.
- ``via "in"`` / ``"gate"``: its read direction (row i of the up / gate projection)
  times the gain of the norm feeding the MLP, through the unembedding. For models
  without a separate LM head (BERT) the unembedding is the tied token embedding.
- ``act_mean`` / ``act_max``: mean and max of the neuron's activation (the input of
  the out projection: act(gate) * up for gated MLPs) over corpus tokens.
- ``act_freq``: fraction of corpus tokens on which the nonlinearity's input is > 0
  (the gate's pre-activation for gated MLPs). For ReLU and GELU/SiLU this is where
  the activation is positive and not merely a small negative tail.
- ``ACTIVATES_ON``: among the corpus's ``tracked_tokens`` most frequent tokens, the k
  with the largest mean activation (``mean_act``, ``max_act``, ``count`` = occurrences
  in the corpus).
Special tokens (BOS, EOS, padding) are left out of the statistics.

Memory of the statistics is independent of the corpus length: per layer
``2 * tracked_tokens * d_mlp`` floats of accumulators, layers grouped so a group fits
the job's ``memory_gb`` budget; each group is one pass over the corpus that stops
after the group's last layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, NamedTuple

import numpy as np
import polars as pl
import torch

from compgraph import schema
from compgraph.engine.registry import register
from compgraph.engine.stage import CorpusConfig, Frames, ModelInfo, Stage, check_top_k
from compgraph.extract.decode import Decoded, decode_topk
from compgraph.models import weights
from compgraph.models.adapters.base import Adapter
from compgraph.models.forward import forward_until
from compgraph.models.hooks import capture


def decoded_edges(src_uids: list[str], decoded: Decoded, token_uid_prefix: str, via: str) -> pl.DataFrame:
    """DECODES_TO rows: rank 0.. for the top-k, -1.. for the bottom-k (see schema)."""
    n, k = decoded.top_ids.shape
    parts = []
    for ids, logits, sign in ((decoded.top_ids, decoded.top_logits, 1), (decoded.bottom_ids, decoded.bottom_logits, -1)):
        ranks = torch.arange(k).repeat(n) if sign > 0 else -(torch.arange(k) + 1).repeat(n)
        parts.append(pl.DataFrame({
            "src": pl.Series(src_uids).gather(np.repeat(np.arange(n), k)),
            "token": ids.reshape(-1).cpu().numpy(),
            "logit": logits.reshape(-1).float().cpu().numpy(),
            "rank": ranks.numpy(),
            "sign": sign,
        }))
    frame = pl.concat(parts)
    return frame.select(
        "src", pl.format("{}:{}", pl.lit(token_uid_prefix), pl.col("token")).alias("dst"),
        pl.lit(via).alias("via"), pl.col("logit").cast(pl.Float64), pl.col("rank").cast(pl.Int64),
        pl.col("sign").cast(pl.Int64),
    )


def neuron_uids(model_name: str, layer: int, d_mlp: int) -> list[str]:
    return [schema.neuron_uid(model_name, layer, i) for i in range(d_mlp)]


@torch.no_grad()
def decode_layer(model, adapter: Adapter, layer: int, *, model_name: str, tokenizer_id: str,
                 top_k: int, n_tokens: int | None = None) -> Frames:
    """Neuron nodes (identity only) and their DECODES_TO rows for every ``via``, over the
    first ``n_tokens`` columns of the unembedding (default: all)."""
    w_u = weights.unembed(model, adapter)[:, :n_tokens]
    out = weights.mlp_out(model, adapter, layer)
    uids = neuron_uids(model_name, layer, out.shape[0])
    reads = [("out", out, weights.final_gain(model, adapter)),
             ("in", weights.mlp_in(model, adapter, layer), weights.norm_gain(model, adapter, adapter.mlp_norm, layer))]
    gate = weights.mlp_gate(model, adapter, layer)
    if gate is not None:
        reads.append(("gate", gate, reads[1][2]))
    edges = pl.concat([decoded_edges(uids, decode_topk(w, w_u, top_k, gain=g), tokenizer_id, via)
                       for via, w, g in reads])
    return Frames.of(nodes=[(schema.NEURON, identity_frame(model_name, layer, len(uids)))],
                     edges=[(schema.DECODES_TO, edges)])


def identity_frame(model_name: str, layer: int, d_mlp: int) -> pl.DataFrame:
    return pl.DataFrame({
        "uid": neuron_uids(model_name, layer, d_mlp), schema.Prop.MODEL: model_name,
        schema.Prop.LAYER: layer, schema.Prop.INDEX: list(range(d_mlp)),
    })


class LayerStats:
    """Running sums for one layer's neurons over corpus tokens (special tokens left out).

    Memory: ``2 * n_tracked * d_mlp + 3 * d_mlp`` floats, independent of the corpus.
    """

    def __init__(self, d_mlp: int, tracked: torch.Tensor, device):
        self.total = torch.zeros(d_mlp, dtype=torch.float64, device=device)
        self.maximum = torch.full((d_mlp,), -torch.inf, device=device)
        self.active = torch.zeros(d_mlp, dtype=torch.long, device=device)
        self.by_token = torch.zeros(len(tracked), d_mlp, device=device)
        self.by_token_max = torch.full((len(tracked), d_mlp), -torch.inf, device=device)

    @staticmethod
    def nbytes(d_mlp: int, n_tracked: int) -> int:
        return 4 * (2 * n_tracked * d_mlp + 4 * d_mlp)

    def add(self, hidden: torch.Tensor, pre: torch.Tensor, keep: torch.Tensor, slots: torch.Tensor) -> None:
        """hidden, pre: [tokens, d_mlp]; keep: [tokens] bool; slots: tracked slot of each kept token or -1."""
        act = hidden[keep].float()
        self.total += act.sum(0, dtype=torch.float64)
        torch.maximum(self.maximum, act.max(0).values, out=self.maximum)
        self.active += (pre[keep] > 0).sum(0)
        hit = slots >= 0
        sel, index = act[hit], slots[hit]
        self.by_token.index_add_(0, index, sel)
        self.by_token_max.scatter_reduce_(0, index.unsqueeze(1).expand(-1, sel.shape[1]), sel, "amax")


def tracked_tokens(stream, n_tokens: int, special_ids: set[int], limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, counts): the ``limit`` most frequent non-special ids of the corpus, by id."""
    counts = stream.token_counts(n_tokens)
    if special_ids:
        counts[torch.tensor(sorted(i for i in special_ids if i < n_tokens), dtype=torch.long)] = 0
    seen = int((counts > 0).sum())
    ids = counts.argsort(descending=True, stable=True)[: min(limit, seen)].sort().values
    return ids, counts[ids]


def layers_per_pass(d_mlp: int, n_tracked: int, memory_gb: float) -> int:
    return max(1, int(memory_gb * 1e9 // LayerStats.nbytes(d_mlp, n_tracked)))


class Streamed(NamedTuple):
    """What one pass over the corpus accumulated: per key its :class:`LayerStats`, the
    tracked token ids with their corpus counts, and the tokens seen (specials left out)."""

    stats: dict
    tracked: torch.Tensor
    counts: torch.Tensor
    n_seen: int


Reader = Callable[[dict], dict[Hashable, tuple[torch.Tensor, torch.Tensor]]]
"""From one batch's captured sites (``{site: [value]}``), per key the pair (activation,
indicator), both [tokens, n]: a unit counts as active on a token where its indicator is > 0."""


@torch.no_grad()
def stream_stats(model, adapter: Adapter, stream, sites: list, last_layer: int, read: Reader, *, n_tokens: int,
                 special_ids: set[int], tracked_limit: int, batch_size: int, progress=None) -> Streamed:
    """One pass over the corpus, stopping after block ``last_layer``: capture ``sites``,
    turn them into activations with ``read`` and accumulate :class:`LayerStats` per key."""
    device = next(model.parameters()).device
    tracked, counts = tracked_tokens(stream, n_tokens, special_ids, tracked_limit)
    slot_of = torch.full((n_tokens,), -1, dtype=torch.long)
    slot_of[tracked] = torch.arange(len(tracked))
    slot_of = slot_of.to(device)
    special = torch.tensor(sorted(special_ids), dtype=torch.long, device=device)
    stats: dict = {}
    n_seen = 0
    for batch in stream.batches(batch_size):
        flat = batch.reshape(-1).to(device)
        keep = ~torch.isin(flat, special) & (flat < n_tokens)
        slots = slot_of[flat[keep]]
        n_seen += int(keep.sum())
        with capture(model, adapter, sites) as got:
            forward_until(model, adapter, batch, last_layer)
        for key, (act, indicator) in read(got).items():
            if key not in stats:
                stats[key] = LayerStats(act.shape[1], tracked, device)
            stats[key].add(act, indicator, keep, slots)
        if progress is not None:
            progress()
    return Streamed(stats, tracked, counts, n_seen)


def stat_columns(acc: LayerStats, n_seen: int) -> list[pl.Series]:
    """``act_mean``, ``act_max``, ``act_freq`` of every unit (see the module docstring)."""
    return [pl.Series(schema.Prop.ACT_MEAN, (acc.total / max(n_seen, 1)).cpu().numpy()),
            pl.Series(schema.Prop.ACT_MAX, acc.maximum.double().cpu().numpy()),
            pl.Series(schema.Prop.ACT_FREQ, (acc.active.double() / max(n_seen, 1)).cpu().numpy())]


def _neuron_reader(layers: range) -> Reader:
    def read(got: dict) -> dict:
        out = {}
        for layer in layers:
            hidden = got[("mlp_hidden", layer)][0]
            hidden = hidden.reshape(-1, hidden.shape[-1])
            out[layer] = (hidden, got[("mlp_pre_act", layer)][0].reshape(hidden.shape))
        return out

    return read


def activation_stats(model, adapter: Adapter, stream, layers: range, *, model_name: str, tokenizer_id: str,
                     top_k: int, n_tokens: int, special_ids: set[int], tracked_limit: int, batch_size: int,
                     progress=None) -> Frames:
    """Neuron rows with act_mean / act_max / act_freq and ACTIVATES_ON rows for ``layers``,
    from one pass over the corpus that stops after the last of them."""
    sites = [(name, layer) for layer in layers for name in ("mlp_hidden", "mlp_pre_act")]
    got = stream_stats(model, adapter, stream, sites, layers[-1], _neuron_reader(layers), n_tokens=n_tokens,
                       special_ids=special_ids, tracked_limit=tracked_limit, batch_size=batch_size,
                       progress=progress)
    out = Frames()
    for layer in layers:
        acc = got.stats[layer]
        uids = neuron_uids(model_name, layer, acc.total.shape[0])
        nodes = identity_frame(model_name, layer, len(uids)).with_columns(stat_columns(acc, got.n_seen))
        out += Frames.of(nodes=[(schema.NEURON, nodes)],
                         edges=[(schema.ACTIVATES_ON, top_tokens(uids, acc, got.tracked, got.counts, tokenizer_id,
                                                                 top_k))])
    return out


def top_tokens(uids: list[str], acc: LayerStats, tracked: torch.Tensor, counts: torch.Tensor,
               tokenizer_id: str, k: int, min_count: int = 1) -> pl.DataFrame:
    """Per neuron, the k tracked tokens with the largest mean activation, among the tokens
    seen at least ``min_count`` times."""
    counts = counts.to(acc.by_token.device)
    seen = counts >= max(min_count, 1)
    mean = torch.where(seen.unsqueeze(1), acc.by_token / counts.clamp(min=1).unsqueeze(1), -torch.inf)
    k = min(k, int(seen.sum()))
    if k == 0:
        return pl.DataFrame(schema={"src": pl.String, "dst": pl.String, "mean_act": pl.Float64,
                                    "max_act": pl.Float64, "count": pl.Int64})
    best = mean.topk(k, dim=0)  # [k, d_mlp]
    rows = best.indices.T.reshape(-1)  # per neuron, k token slots
    neuron = torch.arange(len(uids), device=rows.device).repeat_interleave(k)
    return pl.DataFrame({
        "src": pl.Series(uids).gather(neuron.cpu().numpy()),
        "dst": [f"{tokenizer_id}:{t}" for t in tracked[rows.cpu()].tolist()],
        "mean_act": best.values.T.reshape(-1).double().cpu().numpy(),
        "max_act": acc.by_token_max[rows, neuron].double().cpu().numpy(),
        "count": counts[rows].cpu().numpy(),
    })


@dataclass(frozen=True, kw_only=True)
class NeuronsConfig(CorpusConfig):
    top_k: int
    """Tokens per neuron and sign (DECODES_TO) and per neuron (ACTIVATES_ON)."""
    tracked_tokens: int
    """ACTIVATES_ON candidates: the corpus's most frequent tokens, this many."""


class NeuronsStage(Stage):
    """MLP neurons of every dense layer: LM-head decoding (shard ``decode/L{l}``) and
    activation statistics (shard ``stats/L{a}-L{b}``: one corpus pass per layer group,
    the group sized to the memory budget)."""

    name = "neurons"
    version = 2
    Config = NeuronsConfig
    inputs = ("weights", "corpus")
    requires = ("tokens",)
    description = "MLP neurons: weight decoding, activation statistics, top activating tokens."

    def skip_reason(self, info: ModelInfo) -> str | None:
        return "a MoE model has no dense MLP neurons" if info.is_moe else None

    def validate(self, info: ModelInfo, config: NeuronsConfig) -> None:
        check_top_k(info, config.top_k)

    def shards(self, info: ModelInfo, config: NeuronsConfig, execution) -> list[str]:
        per_pass = layers_per_pass(info.d_mlp, config.tracked_tokens, execution.memory_gb)
        return ([f"decode/L{layer}" for layer in range(info.n_layers)]
                + [f"stats/L{a}-L{b}" for a, b in info.layer_groups(per_pass)])

    def run(self, ctx, config: NeuronsConfig, shard: str) -> Frames:
        loaded = ctx.model()
        kind, layers = shard.split("/")
        ids = dict(model_name=ctx.info.name, tokenizer_id=ctx.tokenizer_id, top_k=config.top_k)
        if kind == "decode":
            return decode_layer(loaded.model, loaded.adapter, int(layers[1:]), n_tokens=ctx.n_tokens, **ids)
        first, last = (int(x[1:]) for x in layers.split("-"))
        stream = ctx.tokens(seq_len=config.seq_len, max_tokens=config.max_tokens)
        advance = ctx.progress(f"neurons: activations L{first}-L{last}",
                               stream.n_batches(ctx.execution.batch_size))
        return activation_stats(loaded.model, loaded.adapter, stream, range(first, last + 1), n_tokens=ctx.n_tokens,
                                special_ids=ctx.special_ids(), tracked_limit=config.tracked_tokens,
                                batch_size=ctx.execution.batch_size, progress=advance, **ids)


STAGE = register(NeuronsStage())
