"""The ``connections`` stage: weights-based CONNECTS edges, one shard per source layer.

Shard ``L{l}`` computes every connection whose *source* is in layer l — head → head
composition (``q_comp``, ``k_comp``, ``v_comp``, every ordered pair), head → neuron
(``ov_to_mlp``), neuron → neuron (``virtual``) and neuron → head (``mlp_to_q/k/v``), the
last three kept to the top ``connections_k`` per source — so the edges leaving one
component come from one shard, as the runner's replacement rule requires. Definitions:
:mod:`compgraph.weights.composition`, :mod:`compgraph.weights.virtual`. Shard ``nodes``
names every head and neuron first (identity only), so edges never miss an endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import torch

from compgraph import schema
from compgraph.engine.registry import register
from compgraph.engine.stage import Frames, Stage
from compgraph.models.info import ModelInfo
from compgraph.stages import rows
from compgraph.stages.shared import ConnectionsKConfig
from compgraph.weights import composition, frames, virtual


@dataclass(frozen=True, kw_only=True)
class ConnectionsConfig(ConnectionsKConfig):
    """``connections_k``."""


def identity_nodes(info: ModelInfo) -> Frames:
    nodes = [(schema.HEAD, rows.head_identity(info))]
    if not info.is_moe:
        nodes += [(schema.NEURON, rows.neuron_identity(info.name, layer, info.d_mlp)) for layer in range(info.n_layers)]
    return Frames.of(nodes=nodes)


class ConnectionsStage(Stage):
    name = "connections"
    version = 1
    Config = ConnectionsConfig
    inputs = ("weights",)
    description = "Weights-based CONNECTS: head composition, virtual weights, OV->MLP, MLP->QK/V."

    def shards(self, info: ModelInfo, config: ConnectionsConfig, execution) -> list[str]:
        return ["nodes"] + [f"L{layer}" for layer in range(info.n_layers)]

    @torch.no_grad()
    def run(self, ctx, config: ConnectionsConfig, shard: str) -> Frames:
        if shard == "nodes":
            return identity_nodes(ctx.info)
        loaded, layer = ctx.model(), int(shard[1:])
        model, adapter, k = loaded.model, loaded.adapter, config.connections_k
        parts = [f for _, f in composition.head_composition(model, adapter, layers=[layer])]
        parts += [f for _, f in composition.ov_to_mlp_topk(model, adapter, k, layers=[layer])]
        parts += [f for _, f in virtual.virtual_topk(model, adapter, k, layers=[layer])]
        parts += [f for _, f in composition.mlp_to_head_topk(model, adapter, k, layers=[layer])]
        parts = [p for p in parts if p.height]
        edges = rows.connects_rows(pl.concat(parts) if parts else frames.empty(), ctx.info.name)
        return Frames.of(edges=[(schema.CONNECTS, edges)])


STAGE = register(ConnectionsStage())
