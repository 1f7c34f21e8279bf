"""Row builders: every uid a stage writes is the schema's uid of that component, and every
column is named by :class:`compgraph.schema.Prop`; answers written out by hand."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from compgraph import schema
from compgraph.extract.decode import Decoded
from compgraph.extract.stats import TopTokens
from compgraph.stages import rows
from compgraph.weights.frames import COLUMNS, Kind

P = schema.Prop


def test_decodes_rows_rank_top_from_zero_and_bottom_from_minus_one():
    decoded = Decoded(top_ids=torch.tensor([[5, 3], [1, 2]]), top_logits=torch.tensor([[9.0, 8.0], [7.0, 6.0]]),
                      bottom_ids=torch.tensor([[0, 4], [6, 7]]), bottom_logits=torch.tensor([[-9.0, -8.0], [-7.0, -6.0]]))
    frame = rows.decodes_rows(["n0", "n1"], decoded, "tok", "unembed")
    assert frame.columns == ["src", "dst", P.VIA, P.LOGIT, P.RANK, P.SIGN]
    assert sorted(frame.rows()) == sorted([
        ("n0", "tok:5", "unembed", 9.0, 0, 1), ("n0", "tok:3", "unembed", 8.0, 1, 1),
        ("n1", "tok:1", "unembed", 7.0, 0, 1), ("n1", "tok:2", "unembed", 6.0, 1, 1),
        ("n0", "tok:0", "unembed", -9.0, -1, -1), ("n0", "tok:4", "unembed", -8.0, -2, -1),
        ("n1", "tok:6", "unembed", -7.0, -1, -1), ("n1", "tok:7", "unembed", -6.0, -2, -1),
    ])
    # the vectorised token uid is the schema's
    assert set(frame["dst"]) == {schema.token_uid("tok", i) for i in range(8)}


def test_activates_rows_map_units_to_their_uids():
    top = TopTokens(unit=torch.tensor([1, 1, 0]), token=torch.tensor([7, 2, 7]),
                    mean_act=torch.tensor([0.5, 0.25, 1.0], dtype=torch.float64),
                    max_act=torch.tensor([2.0, 1.0, 3.0], dtype=torch.float64), count=torch.tensor([4, 1, 2]))
    frame = rows.activates_rows(["a", "b"], top, "tok")
    assert frame.rows() == [("b", "tok:7", 0.5, 2.0, 4), ("b", "tok:2", 0.25, 1.0, 1), ("a", "tok:7", 1.0, 3.0, 2)]
    assert frame.columns == ["src", "dst", P.MEAN_ACT, P.MAX_ACT, P.COUNT]
    empty = rows.activates_rows([], TopTokens(*(torch.zeros(0),) * 5), "tok")
    assert empty.is_empty() and empty.columns == frame.columns


def test_head_rows_flatten_layer_major_with_kv_groups():
    scores = {name: torch.arange(6, dtype=torch.float32).reshape(2, 3) / 10 for name in rows.HEAD_SCORE_PROPS}
    scores["retrieval"] = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    frame = rows.head_rows("m", scores, n_heads=3, n_kv_heads=3)
    assert frame[P.UID].to_list() == [schema.head_uid("m", layer, h) for layer in range(2) for h in range(3)]
    assert frame[P.LAYER].to_list() == [0, 0, 0, 1, 1, 1] and frame[P.HEAD].to_list() == [0, 1, 2, 0, 1, 2]
    assert frame[P.INDUCTION].to_list() == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert frame[P.RETRIEVAL].to_list() == [False, True, False, False, False, True]
    grouped = rows.head_rows("m", {k: torch.zeros(1, 4) for k in rows.HEAD_SCORE_PROPS}, n_heads=4, n_kv_heads=2)
    assert grouped[P.KV_HEAD].to_list() == [0, 0, 1, 1]
    assert set(rows.HEAD_SCORE_PROPS.values()) <= set(frame.columns)


def test_connects_rows_use_schema_uids_of_each_kinds_endpoints():
    frame = pl.DataFrame({
        "kind": [str(Kind.VIRTUAL), str(Kind.OV_TO_MLP), str(Kind.MLP_TO_Q), str(Kind.Q_COMP)],
        "src_layer": [0, 1, 0, 0], "src_index": [3, 2, 5, 1], "dst_layer": [1, 2, 1, 1], "dst_index": [4, 7, 0, 2],
        "weight": [0.5, -0.25, 1.0, 2.0], "baseline": [0.1, 0.2, 0.3, 0.4],
    }, schema=COLUMNS)
    out = rows.connects_rows(frame, "m")
    assert out.rows() == [
        (schema.neuron_uid("m", 0, 3), schema.neuron_uid("m", 1, 4), str(Kind.VIRTUAL), 0.5, 0.1),
        (schema.head_uid("m", 1, 2), schema.neuron_uid("m", 2, 7), str(Kind.OV_TO_MLP), -0.25, 0.2),
        (schema.neuron_uid("m", 0, 5), schema.head_uid("m", 1, 0), str(Kind.MLP_TO_Q), 1.0, 0.3),
        (schema.head_uid("m", 0, 1), schema.head_uid("m", 1, 2), str(Kind.Q_COMP), 2.0, 0.4),
    ]
    assert out.columns == ["src", "dst", P.KIND, P.WEIGHT, P.BASELINE]
    empty = rows.connects_rows(pl.DataFrame(schema=COLUMNS), "m")
    assert empty.is_empty() and empty.columns == out.columns


def test_component_uid_of_every_kind():
    K, S = schema.ComponentKind, schema.SiteKind
    assert rows.component_uid("m", K.HEAD, 2, 3) == schema.head_uid("m", 2, 3)
    assert rows.component_uid("m", K.NEURON, 2, 3) == schema.neuron_uid("m", 2, 3)
    assert rows.component_uid("m", K.EXPERT, 2, 3) == schema.expert_uid("m", 2, 3)
    # a KV head is the query head it is without grouping, else a :Site of its own
    assert rows.component_uid("m", S.KV_HEAD, 1, 0, group=1) == schema.head_uid("m", 1, 0)
    assert rows.component_uid("m", S.KV_HEAD, 1, 0, group=3) == schema.kv_head_uid("m", 1, 0)
    assert rows.component_uid("m", S.MLP, 4, None) == schema.site_uid("m", S.MLP, 4)


def test_identity_nodes_group_by_kind_and_dedupe():
    frame = pl.DataFrame({"kind": [str(schema.ComponentKind.HEAD), str(schema.SiteKind.MLP), str(schema.ComponentKind.HEAD)],
                          "layer": [0, 1, 0], "index": [2, None, 2]})
    out = dict((str(kind), f) for kind, f in rows.identity_nodes("m", frame))
    assert out[str(schema.HEAD)].rows(named=True) == [{P.UID: schema.head_uid("m", 0, 2), P.MODEL: "m", P.LAYER: 0, P.HEAD: 2}]
    assert out[str(schema.SITE)].rows(named=True) == [
        {P.UID: schema.site_uid("m", schema.SiteKind.MLP, 1), P.MODEL: "m", P.LAYER: 1, P.SITE: str(schema.SiteKind.MLP)}]


def test_affects_rows_carry_every_effect_property():
    effects = pl.DataFrame({"component": [str(schema.ComponentKind.NEURON)], "layer": [1], "index": [9],
                            "effect": [-0.5], "effect_norm": [-0.25], "method": ["activation"],
                            "ablation": ["mean"], "direction": ["denoise"]})
    out = rows.affects_rows("m", "ioi", "logit_diff", 12, effects, via="verified")
    assert out.rows(named=True) == [{
        "src": schema.neuron_uid("m", 1, 9), "dst": schema.task_uid("ioi"), P.EFFECT: -0.5, P.EFFECT_NORM: -0.25,
        P.METHOD: "activation", P.VIA: "verified", P.ABLATION: "mean", P.DIRECTION: "denoise", P.METRIC: "logit_diff",
        P.N_EXAMPLES: 12}]
    assert rows.affects_rows("m", "ioi", "logit_diff", 12, effects, via="x", src=["f"])["src"].to_list() == ["f"]


def test_every_row_column_is_a_schema_property():
    props = {str(p) for p in P} | {"src", "dst"}
    frames = [
        rows.neuron_identity("m", 0, 2), rows.expert_rows("m", 0, torch.tensor([0.5, 0.5])),
        rows.task_identity("t"), rows.model_identity("m"),
    ]
    for frame in frames:
        assert set(frame.columns) <= props, frame.columns
