"""Every named query (queries/*.cypher) on a small hand-built graph, with the exact rows it
must return, on every store that runs Cypher: embedded ArcadeDB, ArcadeDB over Bolt, and
a real Neo4j when NEO4J_URI is set. One store per backend for the whole module (a JVM
start is slow); the queries only read."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import polars as pl
import pytest

import compgraph
from tests.helpers.bolt_server import DATABASE, PASSWORD
from compgraph import schema
from compgraph.attribution import import_graphs
from compgraph.library import named_queries
from tests.helpers.attribution import capital_graph, write as write_graphs
from tests.helpers.stores import CYPHER_BACKENDS, wipe as _wipe

M, M2, TOK = "m", "m2", "tok"
N00, N01, N10 = (schema.neuron_uid(M, layer, i) for layer, i in ((0, 0), (0, 1), (1, 0)))
X00 = schema.neuron_uid(M2, 0, 0)
Y00 = schema.head_uid(M2, 0, 0)
H00, H01, H10 = (schema.head_uid(M, layer, h) for layer, h in ((0, 0), (0, 1), (1, 0)))
S0, KV = schema.site_uid(M, "mlp", 0), schema.kv_head_uid(M, 1, 0)
PARIS, LONDON, THE = (schema.token_uid(TOK, i) for i in range(3))
IOI, CAPITALS = schema.task_uid("ioi"), schema.task_uid("capitals")
C_IOI = schema.circuit_uid(M, "ioi", "node", "activation")
C_CAP = schema.circuit_uid(M, "capitals", "node", "activation")
C_IOI2 = schema.circuit_uid(M2, "ioi", "node", "activation")
R_N, R_OLD, R_H = "run:m:neurons:aaa", "run:m:neurons:old", "run:m:heads:bbb"
R_C, R_E, R_E2, R_X = "run:m:connections:ddd", "run:m:effects/ioi:eee", "run:m:effects/capitals:fff", "run:m2:neurons:ccc"
R_M, R_E3 = "run:m:match/m2:ggg", "run:m2:effects/ioi:hhh"  # no :Run nodes of theirs
GM = "gemma-2-2b"  # the model of the imported attribution graphs (tests/helpers/attribution.py)
G1, G2 = schema.graph_uid(GM, "capital"), schema.graph_uid(GM, "capital2")
D1, D3 = f"{GM}/D:{GM}/L1/mlp_in", f"{GM}/D:{GM}/L3/mlp_in"
F1, F3 = f"{D1}/F7", f"{D3}/F42"
G_EMBED, G_ERR, G_PARIS, G_LONDON = f"{GM}/embed", f"{GM}/L2/mlp_error", f"{GM}:7127", f"{GM}:5134"


def _edges(store, rel, rows, **common):
    store.merge_edges(rel, pl.DataFrame([{**common, **r} for r in rows]))


def _run(uid, model, stage, started, **extra):
    return {"uid": uid, "model": model, "stage": stage, "stage_version": 1, "status": "complete",
            "config": '{"k": 2}', "inputs": '{"weights": "sha256:0"}', "code_version": "0.1.0", "started_at": started,
            **extra}


RUNS = [
    _run(R_OLD, M, "neurons", "2025-12-31T00:00:00", status="superseded", superseded_by=R_N),
    _run(R_N, M, "neurons", "2026-01-01T00:00:00", finished_at="2026-01-01T00:00:10", seconds=10.0,
         compute_seconds=8.0, write_seconds=2.0, rows_written=100),
    _run(R_H, M, "heads", "2026-01-02T00:00:00"),
    _run(R_C, M, "connections", "2026-01-03T00:00:00"),
    _run(R_E, M, "effects", "2026-01-04T00:00:00", scope="ioi"),
    _run(R_E2, M, "effects", "2026-01-05T00:00:00", scope="capitals"),
    _run(R_X, M2, "neurons", "2026-01-01T00:00:00"),
]


def build(store) -> None:
    """Models m and m2 sharing one tokenizer (three tokens); m: three neurons, three heads, an
    MLP site and a key/value-head site, two tasks with effects and node circuits, CONNECTS paths, seven runs."""
    store.merge_nodes(schema.MODEL, pl.DataFrame({"uid": [M, M2], "name": [M, M2]}))
    store.merge_nodes(schema.TOKEN, pl.DataFrame({"uid": [PARIS, LONDON, THE], "id": [0, 1, 2],
                                                  "text": [" Paris", " London", " the"], "tokenizer": TOK}))
    store.merge_nodes(schema.NEURON, pl.DataFrame({
        "uid": [N00, N01, N10, X00], "model": [M, M, M, M2], "layer": [0, 0, 1, 0], "index": [0, 1, 0, 0],
        "act_mean": [0.5, 0.25, 1.5, 2.0], "run_neurons": [R_N, R_N, R_N, R_X]}))
    store.merge_nodes(schema.HEAD, pl.DataFrame({
        "uid": [H00, H01, H10], "model": M, "layer": [0, 0, 1], "head": [0, 1, 0], "kv_head": 0,
        "induction_score": [0.9, 0.1, 0.5], "retrieval_score": [0.3, 0.05, 0.2], "retrieval": [True, False, True],
        "run_heads": R_H}))
    store.merge_nodes(schema.HEAD, pl.DataFrame({"uid": [Y00], "model": M2, "layer": 0, "head": 0, "kv_head": 0}))
    store.merge_nodes(schema.SITE, pl.DataFrame({"uid": [S0, KV], "model": M, "layer": [0, 1], "site": ["mlp", "kv_head"],
                                                 "kv_head": [None, 0]}))
    store.merge_nodes(schema.TASK, pl.DataFrame({"uid": [IOI, CAPITALS], "name": ["ioi", "capitals"],
                                                 "n_prompts": [10, 20]}))
    for run in RUNS:
        store.merge_nodes(schema.RUN, pl.DataFrame([run]))
    _edges(store, schema.EVALUATED_ON, [
        {"dst": IOI, "accuracy": 1.0, "metric_clean": 5.0, "metric_corrupt": 0.5, "n_examples": 8, "run": R_E},
        {"dst": CAPITALS, "accuracy": 0.75, "metric_clean": 8.0, "metric_corrupt": -8.0, "n_examples": 20,
         "run": R_E2},
    ], src=M, metric="logit_diff")
    _edges(store, schema.AFFECTS, [
        {"src": H00, "effect": -3.0, "effect_norm": 0.6, "method": "activation", "via": "verified"},
        {"src": H10, "effect": 2.0, "effect_norm": -0.4, "method": "activation", "via": "verified"},
        {"src": S0, "effect": 1.0, "effect_norm": -0.2, "method": "activation", "via": "verified"},
        {"src": N01, "effect": 0.5, "effect_norm": -0.1, "method": "attribution", "via": "attribution"},
    ], dst=IOI, ablation="corrupt", direction="noising", metric="logit_diff", n_examples=10, run=R_E)
    store.merge_nodes(schema.CIRCUIT, pl.DataFrame([
        {"uid": C_IOI, "model": M, "task": "ioi", "faithfulness": 0.9, "metric_full": 5.0, "metric_empty": 0.5,
         "metric_circuit": 4.55},
        {"uid": C_CAP, "model": M, "task": "capitals", "faithfulness": 0.8, "metric_full": 8.0, "metric_empty": -8.0,
         "metric_circuit": 4.8},
    ]).with_columns(level=pl.lit("node"), method=pl.lit("activation"), ablation=pl.lit("corrupt"), size=pl.lit(2)))
    _edges(store, schema.INCLUDES, [
        {"src": C_IOI, "dst": H00, "score": -3.0, "rank": 0, "run": R_E},
        {"src": C_IOI, "dst": H10, "score": 2.0, "rank": 1, "run": R_E},
        {"src": C_CAP, "dst": H10, "score": 4.0, "rank": 0, "run": R_E2},
        {"src": C_CAP, "dst": S0, "score": 1.5, "rank": 1, "run": R_E2},
        {"src": C_CAP, "dst": KV, "score": 0.5, "rank": 2, "run": R_E2},
    ])
    _edges(store, schema.FOR_TASK, [{"src": C_IOI, "dst": IOI, "run": R_E}, {"src": C_CAP, "dst": CAPITALS, "run": R_E2}])
    store.merge_nodes(schema.CIRCUIT, pl.DataFrame([
        {"uid": C_IOI2, "model": M2, "task": "ioi", "level": "node", "method": "activation", "ablation": "corrupt",
         "size": 1, "faithfulness": 0.7, "metric_full": 3.0, "metric_empty": 0.0, "metric_circuit": 2.1}]))
    _edges(store, schema.INCLUDES, [{"src": C_IOI2, "dst": Y00, "score": 1.0, "rank": 0, "run": R_E3}])
    _edges(store, schema.MATCHES, [  # m <-> m2: two neurons and a head pair, both directions
        {"src": N00, "dst": X00, "rank": 0, "score": 0.9, "excess": 0.6, "mutual": True},
        {"src": N01, "dst": X00, "rank": 0, "score": 0.5, "excess": 0.1, "mutual": False},
        {"src": X00, "dst": N00, "rank": 0, "score": 0.9, "excess": 0.6, "mutual": True},
        {"src": X00, "dst": N01, "rank": 1, "score": 0.5, "excess": 0.0, "mutual": False},
        {"src": H00, "dst": Y00, "rank": 0, "score": 0.8, "excess": 0.7, "mutual": True},
        {"src": Y00, "dst": H00, "rank": 0, "score": 0.8, "excess": 0.7, "mutual": True},
    ], method="activation", run=R_M)
    _edges(store, schema.DECODES_TO, [
        {"src": N00, "dst": PARIS, "via": "out", "rank": 0, "sign": 1, "logit": 5.0, "run": R_N},
        {"src": N00, "dst": LONDON, "via": "out", "rank": 1, "sign": 1, "logit": 3.0, "run": R_N},
        {"src": N00, "dst": THE, "via": "out", "rank": -1, "sign": -1, "logit": -4.0, "run": R_N},
        {"src": N00, "dst": PARIS, "via": "in", "rank": 0, "sign": 1, "logit": 2.0, "run": R_N},
        {"src": N10, "dst": THE, "via": "out", "rank": 0, "sign": 1, "logit": 6.0, "run": R_N},
        {"src": N10, "dst": PARIS, "via": "out", "rank": 1, "sign": 1, "logit": 4.0, "run": R_N},
        {"src": X00, "dst": PARIS, "via": "out", "rank": 0, "sign": 1, "logit": 7.0, "run": R_X},
        {"src": X00, "dst": LONDON, "via": "out", "rank": -1, "sign": -1, "logit": -1.0, "run": R_X},
    ])
    _edges(store, schema.CONNECTS, [
        {"src": H00, "dst": H10, "kind": "k_comp", "weight": 0.5},
        {"src": H00, "dst": H10, "kind": "q_comp", "weight": 0.2},
        {"src": H00, "dst": N00, "kind": "ov_to_mlp", "weight": 0.5},
        {"src": H00, "dst": N01, "kind": "ov_to_mlp", "weight": 0.9},
        {"src": N01, "dst": N00, "kind": "virtual", "weight": 1.0},
        {"src": N00, "dst": N10, "kind": "virtual", "weight": -2.0},
        {"src": N00, "dst": H10, "kind": "mlp_to_q", "weight": 0.1},
        {"src": N10, "dst": H10, "kind": "mlp_to_k", "weight": 0.3},
    ], run=R_C)
    folder = Path(tempfile.mkdtemp())  # two attribution graphs of another model, imported
    write_graphs(folder, capital_graph("capital"), capital_graph("capital2", weight=2.0))
    import_graphs(store, folder, cooccur_min=2)


@pytest.fixture(scope="module", params=CYPHER_BACKENDS)
def kb(request, tmp_path_factory):
    from compgraph.store.factory import open_store

    with pytest.MonkeyPatch.context() as env:
        if request.param == "embedded":
            store = open_store(tmp_path_factory.mktemp("queries") / "kb")
        else:
            if request.param == "bolt":
                uri, database = request.getfixturevalue("bolt_uri"), DATABASE
                env.setenv("NEO4J_USER", "root")
                env.setenv("NEO4J_PASSWORD", PASSWORD)
            else:
                uri, database = os.environ["NEO4J_URI"], os.environ.get("NEO4J_DATABASE")
            _wipe(uri, database)
            store = open_store(uri, database=database)
        with compgraph.KB(store) as opened:
            build(store)
            yield opened


def _run_row(uid):
    run = next(r for r in RUNS if r["uid"] == uid)
    columns = ("stage", "scope", "stage_version", "status", "superseded_by", "config", "inputs", "code_version",
               "started_at", "finished_at", "seconds", "compute_seconds", "write_seconds", "rows_written")
    return (uid, *(run.get(c) for c in columns))


def _decodes(*rows):
    return [(via, rank, 1 if rank >= 0 else -1, logit, text, i) for via, rank, logit, text, i in rows]


# name -> (parameters, the exact rows in order)
CASES: dict[str, list[tuple[dict, list[tuple]]]] = {
    "circuit_members": [
        ({"model": M, "task": "ioi", "level": "node", "method": "activation"},
         [(C_IOI, H00, "head", 0, 0, -3.0, 0), (C_IOI, H10, "head", 1, 0, 2.0, 1)]),
        ({"model": M, "task": "capitals", "level": "node", "method": "activation"},
         [(C_CAP, H10, "head", 1, 0, 4.0, 0), (C_CAP, S0, "site", 0, None, 1.5, 1), (C_CAP, KV, "site", 1, 0, 0.5, 2)]),
        ({"model": M, "task": "ioi", "level": "edge", "method": "activation"}, []),
    ],
    "circuits": [
        ({"model": M}, [("capitals", "node", "activation", "corrupt", 2, 0.8, 8.0, -8.0, 4.8, [H10, S0, KV]),
                        ("ioi", "node", "activation", "corrupt", 2, 0.9, 5.0, 0.5, 4.55, [H00, H10])]),
        ({"model": M2}, [("ioi", "node", "activation", "corrupt", 1, 0.7, 3.0, 0.0, 2.1, [Y00])]),
    ],
    "component_matches": [
        ({"uid": N00}, [(M2, X00, "neuron", 0, 0, "activation", 0, 0.9, 0.6, True)]),
        ({"uid": X00}, [(M, N00, "neuron", 0, 0, "activation", 0, 0.9, 0.6, True),
                        (M, N01, "neuron", 0, 1, "activation", 1, 0.5, 0.0, False)]),
        ({"uid": N10}, []),
    ],
    "circuit_matches": [
        ({"model_a": M, "model_b": M2, "task": "ioi", "level": "node", "method": "activation",
          "match_method": "activation"}, [(H00, 0, Y00, 0, 0.8, 0.7, True)]),
        ({"model_a": M, "model_b": M2, "task": "capitals", "level": "node", "method": "activation",
          "match_method": "activation"}, []),
    ],
    "matched_everywhere": [
        ({"method": "activation", "min_excess": 0.5}, [(H00, M, "head", 0, 0, 1, [Y00]), (N00, M, "neuron", 0, 0, 1, [X00]),
                                                      (Y00, M2, "head", 0, 0, 1, [H00]), (X00, M2, "neuron", 0, 0, 1, [N00])]),
        ({"method": "activation", "min_excess": 0.65}, [(H00, M, "head", 0, 0, 1, [Y00]), (Y00, M2, "head", 0, 0, 1, [H00])]),
    ],
    "component_decoding": [
        ({"uid": N00}, _decodes(("in", 0, 2.0, " Paris", 0), ("out", 0, 5.0, " Paris", 0),
                                ("out", 1, 3.0, " London", 1), ("out", -1, -4.0, " the", 2))),
        ({"uid": H00}, []),
    ],
    "component_reuse": [
        ({"model": M, "level": "node", "method": "activation"},
         [(H10, "head", 1, 0, 2, ["capitals", "ioi"]), (H00, "head", 0, 0, 1, ["ioi"]),
          (S0, "site", 0, None, 1, ["capitals"]), (KV, "site", 1, 0, 1, ["capitals"])]),
    ],
    "component_runs": [
        ({"uid": N00}, [(R_C, "connections", None, "complete", 1, ["CONNECTS"]),
                        (R_N, "neurons", None, "complete", 1, ["DECODES_TO", "properties"])]),
        ({"uid": H10}, [(R_C, "connections", None, "complete", 1, ["CONNECTS"]),
                        (R_E2, "effects", "capitals", "complete", 1, ["INCLUDES"]),
                        (R_E, "effects", "ioi", "complete", 1, ["AFFECTS", "INCLUDES"]),
                        (R_H, "heads", None, "complete", 1, ["properties"])]),
    ],
    "label_counts": [
        ({}, [("AttributionGraph", 2), ("Circuit", 3), ("CompgraphMeta", 1), ("Component", 14), ("Dictionary", 2),
              ("Feature", 2), ("Head", 4), ("Model", 3), ("Neuron", 4), ("Run", 10), ("Site", 4), ("Task", 2),
              ("Token", 5)]),
    ],
    "graphs_with_feature": [
        ({"uid": F3}, [(G1, "capital", "The capital of", [2, 3], 0.5, 2.0),
                       (G2, "capital2", "The capital of", [2, 3], 0.5, 2.0)]),
        ({"uid": H00}, []),
    ],
    "feature_prevalence": [
        ({"model": GM, "limit": 10}, [(F1, D1, 1, 7, 2, 0.4, 1.5), (F3, D3, 3, 42, 2, 0.6, 1.25)]),
        ({"model": GM, "limit": 1}, [(F1, D1, 1, 7, 2, 0.4, 1.5)]),
    ],
    "recurring_attributions": [
        ({"model": GM, "min_graphs": 2, "limit": 10}, [(F1, F3, 1, 7, 3, 42, 2, 4, 1.0)]),
        ({"model": GM, "min_graphs": 3, "limit": 10}, []),
    ],
    "graph_links": [
        ({"graph": G1}, [(F1, F3, 2, 2, "", 1.5), (F1, F3, 2, 3, "", 0.5), (F3, G_PARIS, 2, 3, "", 0.8),
                         (F3, G_LONDON, 3, 3, "", 0.25), (F3, G_PARIS, 3, 3, "", 4.0), (G_ERR, G_PARIS, 3, 3, "", -1.5),
                         (G_EMBED, F1, 2, 2, "", 2.0), (G_EMBED, F3, 3, 3, "", 1.0)]),
        ({"graph": "graph:none"}, []),
    ],
    "feature_cooccurrence": [
        ({"model": GM, "min_graphs": 2}, [(F1, F3, 2)]),
        ({"model": GM, "min_graphs": 3}, []),
    ],
    "model_summary": [({"model": M}, [("Head", 3), ("Neuron", 3), ("Site", 2)])],
    "neighbourhood": [
        ({"uid": N10}, [
            ("out", "CONNECTS", H10, "Head", {"kind": "mlp_to_k", "weight": 0.3, "run": R_C}),
            ("out", "DECODES_TO", PARIS, "Token", {"via": "out", "rank": 1, "sign": 1, "logit": 4.0, "run": R_N}),
            ("out", "DECODES_TO", THE, "Token", {"via": "out", "rank": 0, "sign": 1, "logit": 6.0, "run": R_N}),
            ("in", "CONNECTS", N00, "Neuron", {"kind": "virtual", "weight": -2.0, "run": R_C}),
        ]),
    ],
    "neuron_decoding": [
        ({"model": M, "layer": 0, "index": 0, "via": "out"},
         [(0, 1, 5.0, " Paris", 0), (1, 1, 3.0, " London", 1), (-1, -1, -4.0, " the", 2)]),
    ],
    "neuron_tokens": [
        ({"model": M, "limit": 2, "k": 2}, [(N10, 1, 0, 6.0, [" the", " Paris"]), (N00, 0, 0, 5.0, [" Paris", " London"])]),
        ({"model": M, "limit": 1, "k": 1}, [(N10, 1, 0, 6.0, [" the"])]),
    ],
    "retrieval_heads": [({"model": M}, [(0, 0, 0.3, 0.9), (1, 0, 0.2, 0.5)])],
    "runs": [({"model": M}, [_run_row(u) for u in (R_E2, R_E, R_C, R_H, R_N, R_OLD)])],
    "shared_components": [
        ({"model": M, "task_a": "ioi", "task_b": "capitals", "level": "node", "method": "activation"},
         [(H10, "head", 1, 0, 1, 0, 2.0, 4.0)]),
    ],
    "strongest_paths": [
        ({"src": H00, "dst": H10, "min_weight": 0.0, "limit": 10}, [
            ([H00, H10], ["k_comp"], [0.5], 1, 0.5),
            ([H00, N00, N10, H10], ["ov_to_mlp", "virtual", "mlp_to_k"], [0.5, -2.0, 0.3], 3, 0.3),
            ([H00, H10], ["q_comp"], [0.2], 1, 0.2),
            ([H00, N01, N00, H10], ["ov_to_mlp", "virtual", "mlp_to_q"], [0.9, 1.0, 0.1], 3, 0.9 * 1.0 * 0.1),
            ([H00, N00, H10], ["ov_to_mlp", "mlp_to_q"], [0.5, 0.1], 2, 0.5 * 0.1),
        ]),
        ({"src": H00, "dst": H10, "min_weight": 0.25, "limit": 1}, [([H00, H10], ["k_comp"], [0.5], 1, 0.5)]),
        ({"src": H10, "dst": H00, "min_weight": 0.0, "limit": 10}, []),
    ],
    "task_accuracy": [({"model": M}, [("capitals", "logit_diff", 0.75, 8.0, -8.0, 20, 20),
                                      ("ioi", "logit_diff", 1.0, 5.0, 0.5, 8, 10)])],
    "token_decoders": [
        ({"text": " Paris", "via": "out", "limit": 10},
         [(M2, X00, "neuron", 0, 0, 0, 7.0, 0), (M, N00, "neuron", 0, 0, 0, 5.0, 0), (M, N10, "neuron", 1, 0, 1, 4.0, 0)]),
        ({"text": " London", "via": "out", "limit": 10}, [(M, N00, "neuron", 0, 0, 1, 3.0, 1)]),
        ({"text": " Paris", "via": "in", "limit": 1}, [(M, N00, "neuron", 0, 0, 0, 2.0, 0)]),
    ],
    "top_effects": [
        ({"model": M, "task": "ioi", "method": "activation", "limit": 2},
         [(H00, "Head", 0, -3.0, 0.6, "corrupt", "verified"), (H10, "Head", 1, 2.0, -0.4, "corrupt", "verified")]),
        ({"model": M, "task": "ioi", "method": "attribution", "limit": 5},
         [(N01, "Neuron", 0, 0.5, -0.1, "corrupt", "attribution")]),
    ],
    "top_heads": [
        ({"model": M, "score": "induction_score", "limit": 2}, [(0, 0, 0, 0.9), (1, 0, 0, 0.5)]),
        ({"model": M, "score": "retrieval_score", "limit": 5}, [(0, 0, 0, 0.3), (1, 0, 0, 0.2), (0, 1, 0, 0.05)]),
    ],
}


def test_every_named_query_has_cases():
    assert set(CASES) == set(named_queries())


def _columns(returns: str) -> list[str]:
    return [c.strip() for c in returns.split(",")]


def _got(value):
    """A struct value (a map) without the keys this row lacks (a struct column has every key)."""
    return {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else value


def _want(value):
    return pytest.approx(value, rel=1e-12) if isinstance(value, float) else value


@pytest.mark.parametrize("name", sorted(CASES))
def test_named_query_rows(kb, name):
    query = named_queries()[name]
    for params, expected in CASES[name]:
        frame = kb.named(name, **params)
        if frame.height:  # an empty answer may come back without its columns
            assert frame.columns == _columns(query.returns), name
        got = [tuple(_got(v) for v in row) for row in frame.rows()]
        assert got == [tuple(_want(v) for v in row) for row in expected], (name, params)


def test_kb_typed_reads_agree_with_the_named_query(kb):
    members = kb.circuit_members(M, task="ioi", method="activation")
    named = kb.named("circuit_members", model=M, task="ioi", level="node", method="activation")
    assert members.select("circuit", "component", "kind", "layer", "index", "score", "rank").rows() == named.rows()
    assert kb.effects(M, "ioi")["component"].to_list() == [H00, H10, S0, N01]
    graph = kb.component_graph(M, edges="CONNECTS")
    assert graph.edges[H00, H10] == {"rel": "CONNECTS", "weight": 0.5, "kind": "k_comp", "task": None,
                                     "method": None, "n_parallel": 2}
    assert graph.number_of_nodes() == 8 and graph.number_of_edges() == 7


def test_graph_paths_follow_positions_to_the_target_logit(kb):
    """Of an attribution graph's links, the chains from the embeddings to the target token where
    each link starts where the previous one ended (node and position), strongest first."""
    paths = kb.graph_paths(G1, limit=10)
    assert paths.rows() == [
        ([G_EMBED, F3, G_PARIS], [3, 3, 3], [1.0, 4.0], 2, 4.0),
        ([G_EMBED, F1, F3, G_PARIS], [2, 2, 3, 3], [2.0, 0.5, 4.0], 3, 4.0),
        ([G_EMBED, F1, F3, G_PARIS], [2, 2, 2, 3], [2.0, 1.5, 0.8], 3, pytest.approx(2.0 * 1.5 * 0.8)),
    ]
    assert kb.graph_paths(G2, limit=1)["strength"].to_list() == [pytest.approx(2.0 * 1.5 * 0.8)]
    assert kb.graph_paths(G1, max_hops=2)["hops"].to_list() == [2]
