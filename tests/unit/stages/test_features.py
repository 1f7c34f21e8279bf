"""The features stage through the runner on a tiny Llama: stored statistics, decodings and
top tokens equal a plain-torch recomputation (hidden states from ``output_hidden_states``,
the dictionary applied by hand); a dictionary that does not fit writes nothing."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch

from compgraph import schema
from compgraph.ingest import IngestConfig
from compgraph.data.corpus import resolve_corpus
from compgraph.dictionaries.base import Dictionary
from compgraph.dictionaries.catalog import dictionary_name
from compgraph.dictionaries.features import ACTIVATES_MIN_COUNT
from compgraph.dictionaries.saelens import save_saelens
from compgraph.errors import ConfigError
from compgraph.data.tokens import TokenStream
from compgraph.ingest import ingest, plan
from compgraph.models import loading
from compgraph.store.memory import MemoryStore

D, WIDTH, K, SEQ, MAX_TOKENS, TOP = 32, 12, 3, 32, 1024, 4


def random_sae(d_in=D, width=WIDTH, k=K, layer=0, seed=0, site="resid_post") -> Dictionary:
    g = torch.Generator().manual_seed(seed)
    return Dictionary(kind="sae", site=site, layer=layer, activation="topk", k=k,
                      W_enc=torch.randn(d_in, width, generator=g), b_enc=torch.rand(width, generator=g) * 0.1,
                      W_dec=torch.randn(width, d_in, generator=g), b_dec=torch.randn(d_in, generator=g) * 0.1,
                      subtract_b_dec=True, output_site=site, output_layer=layer)


def by_hand(d: Dictionary, x: torch.Tensor) -> torch.Tensor:
    pre = (x - d.b_dec) @ d.W_enc + d.b_enc
    top = torch.relu(pre).topk(d.k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, top.indices, top.values)


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    return loading.load(str(tiny_dir), device="cpu")


def config(tiny_dir, *paths, **extra) -> IngestConfig:
    return IngestConfig.of(str(tiny_dir), name="tiny", extract=("features",), dictionaries=tuple(map(str, paths)),
                        device="cpu", seq_len=SEQ, max_tokens=MAX_TOKENS, top_k=TOP, **extra)


@pytest.fixture(scope="module")
def stored(loaded, tiny_dir, tmp_path_factory):
    sae = random_sae()
    folder = save_saelens(sae, tmp_path_factory.mktemp("dicts") / "my-sae", model_name="tiny")
    store = MemoryStore()
    report = ingest(store, config(tiny_dir, folder), loaded=loaded)
    assert [(s.stage, s.status) for s in report.stages] == [("tokens", "complete"), ("features/my-sae", "complete")]
    return store, sae, folder


def test_dictionary_node_and_its_model(stored):
    store, sae, folder = stored
    uid = schema.dictionary_uid("tiny", "my-sae", "resid_post", 0)
    node = store.nodes(schema.DICTIONARY, uids=[uid]).row(0, named=True)
    assert {k: node[k] for k in ("kind", "site", "layer", "width", "activation", "k", "source", "model")} == {
        "kind": "sae", "site": "resid_post", "layer": 0, "width": WIDTH, "activation": "topk", "k": K,
        "source": str(folder), "model": "tiny"}
    has = store.edges(schema.HAS_DICTIONARY)
    assert has.select("src", "dst").rows() == [("tiny", uid)]


def corpus_activations(loaded, d: Dictionary) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids [n], f [n, width]) over the corpus rows the stage reads, specials left out."""
    tok = loaded.tokenizer
    stream = TokenStream(tok, resolve_corpus(None).documents(), seq_len=SEQ, max_tokens=MAX_TOKENS)
    rows = torch.cat(list(stream.batches(8)))
    stream.close()
    with torch.no_grad():
        hidden = loaded.model(rows, output_hidden_states=True).hidden_states[d.layer + 1]  # block 0's output
    ids = rows.reshape(-1)
    keep = ~torch.isin(ids, torch.tensor(tok.all_special_ids)) & (ids < len(tok))
    return ids[keep], by_hand(d, hidden.reshape(-1, D))[keep]


def test_feature_statistics_equal_a_recomputation(stored, loaded):
    store, sae, _ = stored
    ids, f = corpus_activations(loaded, sae)
    uid = schema.dictionary_uid("tiny", "my-sae", "resid_post", 0)
    nodes = store.nodes(schema.FEATURE, where={"dictionary": uid}).sort("index")
    assert nodes["uid"].to_list() == [schema.feature_uid(uid, j) for j in range(WIDTH)]
    assert nodes["layer"].to_list() == [0] * WIDTH
    torch.testing.assert_close(torch.tensor(nodes["act_mean"].to_list(), dtype=torch.float64), f.double().mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(nodes["act_max"].to_list(), dtype=torch.float64), f.double().max(0).values, rtol=1e-5, atol=1e-6)
    assert nodes["act_freq"].to_list() == pytest.approx((f != 0).double().mean(0).tolist(), abs=1e-12)


def test_activates_on_holds_the_top_mean_tokens(stored, loaded):
    store, sae, _ = stored
    ids, f = corpus_activations(loaded, sae)
    uid = schema.dictionary_uid("tiny", "my-sae", "resid_post", 0)
    edges = store.edges(schema.ACTIVATES_ON)
    tokenizer = store.nodes(schema.MODEL, uids=["tiny"])["tokenizer"][0]
    distinct, counts = ids.unique(return_counts=True)
    distinct = distinct[counts >= ACTIVATES_MIN_COUNT]  # rarer tokens are never ranked
    assert 0 < len(distinct) < len(counts)  # the corpus has both kinds
    means = torch.stack([f[ids == t].mean(0) for t in distinct])  # [tokens, width]
    for j in range(WIDTH):
        mine = edges.filter(pl.col("src") == schema.feature_uid(uid, j))
        assert mine.height == TOP
        best = means[:, j].double().topk(TOP).values
        assert sorted(mine["mean_act"].to_list(), reverse=True) == pytest.approx(best.tolist(), rel=1e-5, abs=1e-6)
        for dst, mean_act, count in mine.select("dst", "mean_act", "count").rows():
            token = int(dst.removeprefix(f"{tokenizer}:"))
            assert mean_act == pytest.approx(float(means[distinct == token, j]), rel=1e-5, abs=1e-6)
            assert count == int((ids == token).sum())


def test_decodes_to_is_the_decoder_row_through_the_final_norm_and_lm_head(stored, loaded):
    store, sae, _ = stored
    model, tok = loaded.model, loaded.tokenizer
    uid = schema.dictionary_uid("tiny", "my-sae", "resid_post", 0)
    with torch.no_grad():
        logits = (sae.W_dec * model.model.norm.weight) @ model.lm_head.weight[: len(tok)].T
    edges = store.edges(schema.DECODES_TO)
    for j in range(WIDTH):
        mine = edges.filter(pl.col("src") == schema.feature_uid(uid, j)).sort("rank", descending=True)
        top = mine.filter(pl.col("sign") == 1).sort("rank")
        assert top["logit"].to_list() == pytest.approx(logits[j].topk(TOP).values.tolist(), rel=1e-5, abs=1e-5)
        bottom = mine.filter(pl.col("sign") == -1).sort("rank", descending=True)
        assert bottom["logit"].to_list() == pytest.approx(logits[j].topk(TOP, largest=False).values.tolist(),
                                                          rel=1e-5, abs=1e-5)
        assert set(mine["via"].to_list()) == {"out"}


def test_rerun_is_complete_and_writes_nothing(stored, loaded, tiny_dir):
    store, _, folder = stored
    report = ingest(store, config(tiny_dir, folder), loaded=loaded)
    assert [s.status for s in report.stages] == ["already complete", "already complete"]


@pytest.mark.parametrize("problem, match", [
    ("width", "input width 16 does not match the model's resid_post width 32"),
    ("layer", "layer 7 is out of range"),
    ("field", "missing field 'd_sae'"),
    ("site", "input width 32 does not match the model's mlp_hidden width 48"),
])
def test_a_dictionary_that_does_not_fit_is_refused_before_anything_is_written(problem, match, loaded, tiny_dir,
                                                                               tmp_path):
    sae = {"width": random_sae(d_in=16), "layer": random_sae(layer=7)}.get(problem, random_sae())
    folder = save_saelens(sae, tmp_path / "bad")
    if problem == "field":
        cfg = json.loads((folder / "cfg.json").read_text())
        del cfg["d_sae"]
        (folder / "cfg.json").write_text(json.dumps(cfg))
    if problem == "site":
        cfg = json.loads((folder / "cfg.json").read_text())
        cfg["metadata"]["hook_name"] = "blocks.0.mlp.hook_post"
        (folder / "cfg.json").write_text(json.dumps(cfg))
    store = MemoryStore()
    with pytest.raises(ConfigError, match=match) as err:
        ingest(store, config(tiny_dir, folder), loaded=loaded)
    assert "\n" not in str(err.value)
    assert store.nodes(schema.RUN).height == 0 and store.nodes(schema.TOKEN).height == 0


def test_names_and_the_need_for_a_dictionary(tiny_dir):
    assert dictionary_name("/a/b/my-sae/") == "my-sae"
    assert dictionary_name("/a/b/set/config.yaml") == "set"
    assert dictionary_name("org/repo/layer 6@main") == "layer-6"
    with pytest.raises(ConfigError, match="needs --dictionary"):
        plan(IngestConfig.of(str(tiny_dir), extract=("features",)))


def test_the_ingest_command_refuses_a_mismatched_dictionary_in_one_line(tiny_dir, tmp_path):
    from click.testing import CliRunner

    from compgraph.cli.main import main

    folder = save_saelens(random_sae(d_in=16), tmp_path / "narrow")
    result = CliRunner().invoke(main, ["ingest", str(tiny_dir), "--extract", "features", "--dictionary", str(folder),
                                       "--store", str(tmp_path / "kb"), "--device", "cpu"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: {folder}: dictionary input width 16 does not match the model's resid_post width 32 at layer 0"]
    assert not (tmp_path / "kb").exists()


def test_feature_effects_run_in_the_effects_stage(stored, loaded, tiny_dir, tmp_path):
    """``--components feature --dictionary PATH``: one AFFECTS per feature (attribution),
    in a run of its own beside the task's head effects, which it neither recomputes nor
    replaces."""
    from compgraph.data.tasks import encode_task, load_task
    from compgraph.dictionaries.effects import feature_attribution
    from compgraph.dictionaries.readers import read_dictionary
    from compgraph.data.tasks import logit_diff

    _, sae, folder = stored
    task = tmp_path / "caps.jsonl"
    task.write_text("".join(json.dumps({"clean": c, "corrupt": x, "answer": a, "wrong": w}) + "\n" for c, x, a, w in [
        ("The capital of France is", "The capital of Spain is", " Paris", " Madrid"),
        ("The capital of Italy is", "The capital of Japan is", " Rome", " Tokyo")]))
    store = MemoryStore()
    heads = IngestConfig.of(str(tiny_dir), name="tiny", tasks=(str(task),), device="cpu", extract=("effects",),
                         effect_components=("head",), effect_edges=False)
    assert [(s.stage, s.status) for s in ingest(store, heads, loaded=loaded).stages] == [
        ("effects/caps/verified", "complete")]
    cfg = heads.with_options(effect_components=("head", "feature"), dictionaries=(str(folder),))
    report = ingest(store, cfg, loaded=loaded)  # the features are a run of their own: the heads' run stays
    assert [(s.stage, s.status) for s in report.stages] == [
        ("effects/caps/verified", "already complete"), ("effects/caps/features/my-sae", "complete")]
    only = ingest(store, cfg.with_options(effect_components=("feature",)), loaded=loaded)
    assert [(s.stage, s.status) for s in only.stages] == [("effects/caps/features/my-sae", "already complete")]
    affects = store.edges(schema.AFFECTS)
    feats = affects.filter(pl.col("src").str.contains("/F"))
    assert feats.height == WIDTH and set(feats["method"]) == {"attribution"}
    heads_rows = affects.filter(pl.col("src").str.contains("/H"))  # 8 heads, each estimated and measured (n=20)
    assert heads_rows.group_by("method").len().sort("method").rows() == [("activation", 8), ("attribution", 8)]
    enc = encode_task(load_task(str(task)), loaded.tokenizer)
    want = feature_attribution(loaded.model, loaded.adapter, read_dictionary(folder)[0], enc, logit_diff)
    got = dict(zip(feats["src"].str.extract(r"/F(\d+)$").cast(pl.Int64).to_list(), feats["effect"].to_list()))
    assert [got[i] for i in want["index"].to_list()] == pytest.approx(want["effect"].to_list(), rel=1e-6)
    with pytest.raises(ConfigError, match="needs --dictionary"):
        ingest(MemoryStore(), IngestConfig.of(str(tiny_dir), name="tiny", tasks=(str(task),), device="cpu",
                                           effect_components=("feature",)), loaded=loaded)
