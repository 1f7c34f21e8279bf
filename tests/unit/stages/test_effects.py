"""The effects stage through the runner on a user's task file: stored AFFECTS equal the
definitions recomputed here in plain torch; the default (verified) method measures what its
rule says and keeps its run beside another method's; a malformed file writes nothing."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch

from compgraph import schema
from compgraph.ingest import IngestConfig
from compgraph.data.tasks import encode_task, load_task
from compgraph.errors import ConfigError
from compgraph.ingest import ingest
from compgraph.models import loading
from compgraph.store.memory import MemoryStore

EXAMPLES = [
    ("When Mary and John went to the store, John gave a drink to", "When Alice and Bob went to the store, Carl gave a drink to", " Mary", " John"),
    ("When Tom and James went to the park, James gave a ball to", "When Sarah and Paul went to the park, Mike gave a ball to", " Tom", " James"),
    ("The capital of France is", "The capital of Spain is", " Paris", " Madrid"),
    ("The capital of Italy is", "The capital of Japan is", " Rome", " Tokyo"),
]


def write_task(path, rows) -> str:
    path.write_text("".join(json.dumps({"clean": c, "corrupt": x, "answer": a, "wrong": w}) + "\n"
                            for c, x, a, w in rows))
    return str(path)


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    return loading.load(str(tiny_dir), device="cpu")


@pytest.fixture(scope="module")
def stored(loaded, tiny_dir, tmp_path_factory):
    task = write_task(tmp_path_factory.mktemp("task") / "mine.jsonl", EXAMPLES)
    store = MemoryStore()
    report = ingest(store, IngestConfig.of(str(tiny_dir), name="tiny", tasks=(task,), extract=("effects",),
                                        device="cpu", circuit_n=3, circuit_edges=10, effect_method="activation"),
                    loaded=loaded)
    assert [(s.stage, s.status) for s in report.stages] == [("effects/mine/activation", "complete"),
                                                            ("effects/mine/gradients/attribution", "complete")]
    return store, encode_task(load_task(task), loaded.tokenizer)


def run(model, enc, ids, hooks=()):
    handles = [model.get_submodule(path).register_forward_pre_hook(fn) for path, fn in hooks]
    try:
        logits = model(input_ids=ids, attention_mask=enc.clean.attention_mask, position_ids=enc.clean.position_ids).logits
    finally:
        for handle in handles:
            handle.remove()
    last = logits[:, -1]
    return last.gather(1, enc.answer_ids[:, None])[:, 0] - last.gather(1, enc.wrong_ids[:, None])[:, 0]


def o_proj_input(model, enc, ids, layer):
    got = {}
    handle = model.get_submodule(f"model.layers.{layer}.self_attn.o_proj").register_forward_pre_hook(
        lambda m, args: got.__setitem__("z", args[0].detach().clone()))
    with torch.no_grad():
        model(input_ids=ids, attention_mask=enc.clean.attention_mask, position_ids=enc.clean.position_ids)
    handle.remove()
    return got["z"]


def test_head_noising_effects_equal_a_direct_recomputation(stored, loaded):
    store, enc = stored
    model = loaded.model
    d_head = model.config.hidden_size // model.config.num_attention_heads
    affects = store.edges(schema.AFFECTS, where={"method": "activation"})
    with torch.no_grad():
        clean = run(model, enc, enc.clean.ids).mean()
        corrupt = run(model, enc, enc.corrupt.ids).mean()
    for layer, head in ((0, 1), (1, 3)):
        z_corrupt = o_proj_input(model, enc, enc.corrupt.ids, layer)

        def patch(module, args, head=head, z_corrupt=z_corrupt):
            z = args[0].clone()
            z[..., head * d_head:(head + 1) * d_head] = z_corrupt[..., head * d_head:(head + 1) * d_head]
            return (z,)

        with torch.no_grad():
            patched = run(model, enc, enc.clean.ids, [(f"model.layers.{layer}.self_attn.o_proj", patch)]).mean()
        row = affects.filter(pl.col("src") == schema.head_uid("tiny", layer, head)).row(0, named=True)
        assert row["effect"] == pytest.approx(float(patched - clean), rel=1e-4, abs=1e-7)
        assert row["effect_norm"] == pytest.approx(float((patched - clean) / (corrupt - clean)), rel=1e-4, abs=1e-6)
        assert (row["ablation"], row["direction"], row["metric"], row["n_examples"]) == (
            "corrupt", "noising", "logit_diff", len(EXAMPLES))


def test_neuron_attribution_equals_a_direct_recomputation(stored, loaded):
    store, enc = stored
    model = loaded.model
    layer, neuron = 1, 7
    path = f"model.layers.{layer}.mlp.down_proj"
    got = {}

    def keep(module, args):
        args[0].retain_grad()
        got["h"] = args[0]

    hidden_corrupt = {}
    handle = model.get_submodule(path).register_forward_pre_hook(
        lambda m, args: hidden_corrupt.__setitem__("h", args[0].detach().clone()))
    with torch.no_grad():
        model(input_ids=enc.corrupt.ids, attention_mask=enc.clean.attention_mask, position_ids=enc.clean.position_ids)
    handle.remove()
    with torch.enable_grad():
        metric = run(model, enc, enc.clean.ids, [(path, keep)]).mean()
        metric.backward()
    delta = (hidden_corrupt["h"] - got["h"].detach())[..., neuron]
    # mean over examples of sum over positions of delta * d(metric_e)/dh = sum of delta * d(mean metric)/dh
    want = float((delta * got["h"].grad[..., neuron]).sum())
    model.zero_grad(set_to_none=True)
    row = store.edges(schema.AFFECTS, where={"method": "attribution"}).filter(
        pl.col("src") == schema.neuron_uid("tiny", layer, neuron)).row(0, named=True)
    assert row["effect"] == pytest.approx(want, rel=1e-4, abs=1e-7)


def test_task_summary_and_circuit_are_stored(stored):
    store, enc = stored
    evaluated = store.edges(schema.EVALUATED_ON).row(0, named=True)
    assert 0 <= evaluated["accuracy"] <= 1 and evaluated["dst"] == schema.task_uid("mine")
    circuit = store.nodes(schema.CIRCUIT).filter(pl.col("level") == "node").row(0, named=True)
    assert circuit["size"] == 3 and circuit["n"] == 3
    full, empty, inside = circuit["metric_full"], circuit["metric_empty"], circuit["metric_circuit"]
    assert circuit["faithfulness"] == pytest.approx((inside - empty) / (full - empty))
    assert full == pytest.approx(evaluated["metric_clean"], rel=1e-5)
    members = store.edges(schema.INCLUDES).filter(pl.col("src") == circuit["uid"])
    assert sorted(members["rank"].to_list()) == [0, 1, 2]
    assert store.edges(schema.AFFECTS, where={"method": "activation"}).height == 2 * 4 + 2 + 2


def test_a_malformed_task_file_writes_nothing(loaded, tiny_dir, tmp_path):
    bad = write_task(tmp_path / "bad.jsonl", EXAMPLES[:2] + [("The capital of France is", "The capital of the United Kingdom is", " Paris", " London")])
    store = MemoryStore()
    with pytest.raises(ConfigError, match=r"bad.jsonl:3: .*length"):
        ingest(store, IngestConfig.of(str(tiny_dir), name="tiny", tasks=(bad,), device="cpu"), loaded=loaded)
    assert store.nodes(schema.RUN).height == 0 and store.nodes(schema.MODEL).height == 0
    assert store.nodes(schema.TOKEN).height == 0


def test_unfit_examples_dropped_leave_the_fitting_ones_and_their_run_equal_to_a_file_of_them(loaded, tiny_dir, tmp_path):
    """``--unfit-examples drop``: the examples another tokenizer's task has that do not fit
    are left out; the effects equal those of a file holding only the fitting ones."""
    unfit = ("The capital of France is", "The capital of the United Kingdom is", " Paris", " London")
    mixed = write_task(tmp_path / "mixed.jsonl", EXAMPLES[:2] + [unfit] + EXAMPLES[2:])
    fits = write_task(tmp_path / "fits.jsonl", EXAMPLES)
    got = {}
    for name, task, extra in (("mixed", mixed, {"unfit_examples": "drop"}), ("fits", fits, {})):
        store = MemoryStore()
        ingest(store, IngestConfig.of(str(tiny_dir), name="tiny", tasks=(task,), extract=("effects",), device="cpu",
                                      effect_method="activation", effect_edges=False, **extra), loaded=loaded)
        evaluated = store.edges(schema.EVALUATED_ON)
        assert evaluated[str(schema.Prop.N_EXAMPLES)].to_list() == [len(EXAMPLES)]
        got[name] = store.edges(schema.AFFECTS).select("src", str(schema.Prop.EFFECT), str(schema.Prop.VIA)).sort(
            "src", str(schema.Prop.VIA))
    assert got["mixed"].equals(got["fits"])
    from compgraph.ingest import plan

    def runs(**extra):
        return [s.run for s in plan(IngestConfig.of(str(tiny_dir), name="tiny", tasks=(fits,), **extra)).stages]

    assert runs(unfit_examples="refuse") == runs()  # the default spelled out is the same run
    assert runs(unfit_examples="drop") != runs()


def test_causes_edges_are_every_edge_of_the_graph(stored):
    store, _ = stored
    causes = store.edges(schema.CAUSES)
    # tiny: embed feeds all 19 destinations; each layer-0 head feeds layer 0's MLP, layer 1's
    # 4 q + 2x2 k/v + MLP and the logits (11); layer 0's MLP 10; each layer-1 head 2; layer 1's MLP 1
    assert causes.height == 19 + 4 * 11 + 10 + 4 * 2 + 1
    assert set(causes["input"]) == {"q", "k", "v", "mlp", "logits"}
    assert sorted(causes["rank"].to_list()) == list(range(causes.height))
    # grouped-query attention (4 query heads, 2 KV heads): k and v end at the KV head's :Site
    kv = causes.filter(pl.col("input") == "k")["dst"].unique().sort().to_list()
    assert kv == [schema.kv_head_uid("tiny", layer, g) for layer in (0, 1) for g in (0, 1)]
    sites = store.nodes(schema.SITE)
    assert {schema.site_uid("tiny", "embed"), schema.site_uid("tiny", "logits")} <= set(sites["uid"])


def test_head_to_logits_edge_equals_a_direct_recomputation(stored, loaded):
    """score(L1H2 -> logits) = Σ (corrupt − clean head output through W_O) · ∂M/∂x_final,
    x_final the final norm's input on the clean run, M the mean logit difference."""
    store, enc = stored
    model = loaded.model
    layer, head = 1, 2
    d_head = model.config.hidden_size // model.config.num_attention_heads
    w_o = model.get_submodule(f"model.layers.{layer}.self_attn.o_proj").weight[:, head * d_head:(head + 1) * d_head]
    outputs = [o_proj_input(model, enc, ids, layer)[..., head * d_head:(head + 1) * d_head] @ w_o.T
               for ids in (enc.clean.ids, enc.corrupt.ids)]
    got = {}

    def keep(module, args):
        args[0].retain_grad()
        got["x"] = args[0]

    with torch.enable_grad():
        run(model, enc, enc.clean.ids, [("model.norm", keep)]).mean().backward()
    want = float(((outputs[1] - outputs[0]).detach() * got["x"].grad).sum())
    model.zero_grad(set_to_none=True)
    row = store.edges(schema.CAUSES).filter(
        (pl.col("src") == schema.head_uid("tiny", layer, head)) & (pl.col("input") == "logits")).row(0, named=True)
    assert row["dst"] == schema.site_uid("tiny", "logits")
    assert (row["method"], row["task"]) == ("attribution", "mine")
    assert row["effect"] == pytest.approx(want, rel=1e-4, abs=1e-7)


def test_edge_circuit_and_curves_are_stored(stored):
    store, _ = stored
    circuits = {c["level"]: c for c in store.nodes(schema.CIRCUIT).iter_rows(named=True)}
    edge = circuits["edge"]
    assert (edge["method"], edge["task"], edge["n"], edge["ablation"]) == ("attribution", "mine", 10, "corrupt")
    assert 0 < edge["size"] <= 10  # the top 10 edges, pruned to embeddings -> logits paths
    full, empty, inside = edge["metric_full"], edge["metric_empty"], edge["metric_circuit"]
    assert edge["faithfulness"] == pytest.approx((inside - empty) / (full - empty))
    assert full == pytest.approx(circuits["node"]["metric_full"], rel=1e-5)  # both: the clean run
    causes = store.edges(schema.CAUSES)
    assert causes["in_circuit"].sum() == edge["size"]
    for circuit in circuits.values():
        assert circuit["curve_fractions"] == [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
        faith = circuit["curve_faithfulness"]
        assert faith[-1] == pytest.approx(1.0)
        xs = circuit["curve_fractions"]
        cpr = sum((xs[i + 1] - xs[i]) * (faith[i] + faith[i + 1]) / 2 for i in range(len(xs) - 1))
        cmd = sum((xs[i + 1] - xs[i]) * (abs(1 - faith[i]) + abs(1 - faith[i + 1])) / 2 for i in range(len(xs) - 1))
        assert (circuit["cpr"], circuit["cmd"]) == (pytest.approx(cpr), pytest.approx(cmd))
    # the edge circuit includes every component its edges touch, ranked by Σ|effect|
    members = store.edges(schema.INCLUDES).filter(pl.col("src") == edge["uid"])
    inside = causes.filter(pl.col("in_circuit"))
    touched = pl.concat([inside.select(uid="src", score=pl.col("effect").abs()),
                         inside.select(uid="dst", score=pl.col("effect").abs())]).group_by("uid").agg(pl.col("score").sum())
    got = members.select(uid="dst", got="score").join(touched, on="uid")
    assert got.height == members.height == touched.height
    assert got["got"].to_list() == pytest.approx(got["score"].to_list())


# ---- the default method (verified) beside --method activation ---------------------------------

@pytest.fixture(scope="module")
def verified(loaded, tiny_dir, tmp_path_factory):
    """The default method, then ``--method activation`` on the same task, into one store:
    (store, AFFECTS after the first run, the two runs' reports)."""
    task = write_task(tmp_path_factory.mktemp("task") / "mine.jsonl", EXAMPLES)
    store = MemoryStore()
    options = dict(name="tiny", tasks=(task,), extract=("effects",), device="cpu", circuit_n=3, effect_edges=False,
                   effect_components=("head", "mlp", "attn"), verify_margin=0.5)
    first = ingest(store, IngestConfig.of(str(tiny_dir), **options), loaded=loaded)
    after_first = store.edges(schema.AFFECTS)
    second = ingest(store, IngestConfig.of(str(tiny_dir), effect_method="activation", **options), loaded=loaded)
    return store, after_first, (first, second)


def _by_component(frame: pl.DataFrame) -> dict[str, float]:
    return dict(zip(frame["src"].to_list(), frame["effect"].to_list()))


def test_the_default_measures_the_top_n_and_what_attribution_may_have_underestimated(verified):
    store, first, _ = verified
    estimates = _by_component(first.filter(pl.col("method") == "attribution"))
    assert len(estimates) == 2 * 4 + 2 + 2  # every head and block is estimated
    exhaustive = _by_component(store.edges(schema.AFFECTS, where={"via": "activation"}))
    # the rule (compgraph.effects.verified), recomputed from the estimates and the exhaustive run
    rank = lambda values, among: sorted(among, key=lambda uid: -abs(values[uid]))  # noqa: E731
    circuit = [uid for uid in estimates if not uid.endswith("/attn")]
    want = list(dict.fromkeys(rank(estimates, estimates)[:3] + rank(estimates, circuit)[:3]))
    while True:  # rounds of 8, tau the 3rd largest measured |effect| so far
        tau = sorted((abs(exhaustive[uid]) for uid in want), reverse=True)[2]
        picks = [uid for uid in rank(estimates, estimates) if uid not in want and abs(estimates[uid]) >= 0.5 * tau]
        if not picks:
            break
        want += picks[:8]
    while missing := [uid for uid in rank({u: exhaustive[u] if u in want else estimates[u] for u in estimates},
                                          circuit)[:3] if uid not in want]:
        want += missing
    measured = _by_component(first.filter(pl.col("method") == "activation"))
    assert set(measured) == set(want)
    for uid, effect in measured.items():  # the same activation patching as the exhaustive run's
        assert effect == pytest.approx(exhaustive[uid], rel=1e-5, abs=1e-7)


def test_the_default_circuit_is_built_from_the_measured_effects(verified):
    """Members: the top 3 heads and MLP blocks by |effect|, measured where measured, else estimated."""
    store, first, _ = verified
    circuit = store.nodes(schema.CIRCUIT).filter(pl.col("method") == "verified").row(0, named=True)
    best = _by_component(first.filter(pl.col("method") == "attribution")) \
        | _by_component(first.filter(pl.col("method") == "activation"))
    universe = {uid: e for uid, e in best.items() if "/H" in uid or uid.endswith("/mlp")}
    want = sorted(universe, key=lambda uid: -abs(universe[uid]))[:3]
    members = store.edges(schema.INCLUDES).filter(pl.col("src") == circuit["uid"]).sort("rank")
    assert members["dst"].to_list() == want
    assert members["score"].to_list() == pytest.approx([universe[uid] for uid in want])


def test_another_method_keeps_the_defaults_run_and_effects(verified):
    store, first, (one, two) = verified
    assert [(s.stage, s.status) for s in one.stages] == [("effects/mine/verified", "complete")]
    assert [(s.stage, s.status) for s in two.stages] == [("effects/mine/activation", "complete")]
    runs = store.nodes(schema.RUN)
    assert sorted(runs["status"].to_list()) == ["complete", "complete"]
    assert sorted(store.nodes(schema.CIRCUIT)["method"].to_list()) == ["activation", "verified"]
    # every row of the default stays as it was; the exhaustive run's rows are edges of their own
    kept = store.edges(schema.AFFECTS, where={"via": "verified"})
    assert kept.sort("src", "method").equals(first.sort("src", "method"))
    assert set(store.edges(schema.AFFECTS, where={"via": "activation"})["method"]) == {"activation"}


def test_switching_method_leaves_the_gradient_run_complete(loaded, tiny_dir, tmp_path):
    """Neurons and edges are computed by attribution for verified, activation and attribution
    alike: one run, which the second method finds complete."""
    task = write_task(tmp_path / "mine.jsonl", EXAMPLES)
    store = MemoryStore()
    options = dict(name="tiny", tasks=(task,), extract=("effects",), device="cpu", circuit_n=2, circuit_edges=5,
                   effect_components=("head", "neuron"))
    first = ingest(store, IngestConfig.of(str(tiny_dir), effect_method="attribution", **options), loaded=loaded)
    assert [(s.stage, s.status) for s in first.stages] == [
        ("effects/mine/attribution", "complete"), ("effects/mine/gradients/attribution", "complete")]
    second = ingest(store, IngestConfig.of(str(tiny_dir), **options), loaded=loaded)
    assert [(s.stage, s.status) for s in second.stages] == [
        ("effects/mine/verified", "complete"), ("effects/mine/gradients/attribution", "already complete")]
    heads = store.edges(schema.AFFECTS, where={"method": "attribution"}).filter(pl.col("src").str.contains("/H"))
    assert heads.group_by("via").len().sort("via").rows() == [("attribution", 8), ("verified", 8)]
    neurons = store.edges(schema.AFFECTS).filter(pl.col("src").str.contains("/N"))
    assert set(neurons["via"]) == {"attribution"} and neurons.height == neurons["src"].n_unique()


def test_a_node_run_replaces_the_version_1_run_of_its_task():
    from compgraph.stages.effects import STAGE

    assert STAGE.replaces("ioi/verified") == ("ioi",) and STAGE.replaces("ioi/activation") == ("ioi",)
    assert STAGE.replaces("ioi/gradients/attribution") == () and STAGE.replaces("ioi/features/my-sae") == ()
