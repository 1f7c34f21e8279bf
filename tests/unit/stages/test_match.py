"""The match stage through the runner, on the in-memory store: a model and a copy of it
with every layer's neurons permuted (the answer is the permutation), the copy with noise,
an independently initialised model (no excess), and a re-run that replaces both directions."""

from __future__ import annotations

import polars as pl
import pytest
import torch
import transformers as T

from compgraph import schema
from compgraph.ingest import IngestConfig, ingest
from compgraph.models.loading import native_bf16
from compgraph.store.memory import MemoryStore

from tests.helpers.models import SMALL_D_MLP, TINY, build_tiny_llama

P = schema.Prop
K, N = 3, 768
PERMS = [torch.randperm(TINY["d_mlp"], generator=torch.Generator().manual_seed(10 + l)) for l in range(TINY["layers"])]


def _copy(source, path, noise: float = 0.0):
    """``source`` with each layer's neurons permuted: the copy's neuron j is the source's PERMS[l][j]."""
    model = T.AutoModelForCausalLM.from_pretrained(source)
    generator = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for layer, perm in zip(model.model.layers, PERMS):
            mlp = layer.mlp
            mlp.gate_proj.weight.copy_(mlp.gate_proj.weight[perm])
            mlp.up_proj.weight.copy_(mlp.up_proj.weight[perm])
            mlp.down_proj.weight.copy_(mlp.down_proj.weight[:, perm])
            if noise:
                for p in (mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight):
                    p.add_(noise * p.std() * torch.randn(p.shape, generator=generator))
    model.save_pretrained(path)
    T.AutoTokenizer.from_pretrained(source).save_pretrained(path)
    return path


def _match(store, a_dir, b_dir, **options):
    options = {"match_top_k": K, "match_positions": N, **options}
    return ingest(store, IngestConfig.of(str(a_dir), name="a", extract=("match",), device="cpu",
                                         match_with="b", match_source=str(b_dir), **options))


def _edges(store, unit: str = "N") -> pl.DataFrame:
    """MATCHES with each end's model, layer and index (``unit``: N for neurons, H for heads)."""
    return store.edges(schema.MATCHES).with_columns(
        pl.col("src").str.extract(r"^(\w+)/").alias("from"),
        pl.col("src").str.extract(r"/L(\d+)/").cast(pl.Int64).alias("src_layer"),
        pl.col("src").str.extract(rf"/{unit}(\d+)$").cast(pl.Int64).alias("src_index"),
        pl.col("dst").str.extract(r"/L(\d+)/").cast(pl.Int64).alias("dst_layer"),
        pl.col("dst").str.extract(rf"/{unit}(\d+)$").cast(pl.Int64).alias("dst_index"))


@pytest.fixture(scope="module")
def permuted(tiny_dir, tmp_path_factory):
    store = MemoryStore()
    report = _match(store, tiny_dir, _copy(tiny_dir, tmp_path_factory.mktemp("permuted")))
    return store, report


def test_shards_cover_both_directions_layer_by_layer(permuted):
    _, report = permuted
    assert report.stage("match/b").shards_written == ["nodes", "a:L0", "a:L1", "b:L0", "b:L1"]


def test_a_permuted_copy_is_recovered_exactly_in_both_directions(permuted):
    store, _ = permuted
    best = _edges(store).filter(pl.col(P.RANK) == 0)
    units = TINY["layers"] * TINY["d_mlp"]
    assert best.height == 2 * units
    assert (best["src_layer"] == best["dst_layer"]).all()
    for layer, perm in enumerate(PERMS):
        inverse = torch.argsort(perm)
        forward = best.filter((pl.col("from") == "a") & (pl.col("src_layer") == layer)).sort("src_index")
        backward = best.filter((pl.col("from") == "b") & (pl.col("src_layer") == layer)).sort("src_index")
        assert forward["dst_index"].to_list() == inverse.tolist()  # A's i is B's inverse[i]
        assert backward["dst_index"].to_list() == perm.tolist()  # B's j is A's perm[j]
    assert best[P.SCORE].min() > 1 - 2 ** -6  # the same activations, rounded to bfloat16 (aligned.match_neurons)
    assert best[P.MUTUAL].all()
    assert (best[P.EXCESS] > 0.2).all()  # the rotated baseline of a 48-unit layer is far from 1


def test_every_unit_keeps_k_ranked_matches_and_only_rank_0_can_be_mutual(permuted):
    edges = _edges(permuted[0])
    per_unit = edges.group_by("src").agg(pl.col(P.RANK).sort(), pl.col(P.SCORE).sort_by(P.RANK))
    assert per_unit.height == 2 * TINY["layers"] * TINY["d_mlp"]
    assert all(r == list(range(K)) for r in per_unit[P.RANK].to_list())
    assert all(s == sorted(s, reverse=True) for s in per_unit[P.SCORE].to_list())
    assert not edges.filter(pl.col(P.RANK) > 0)[P.MUTUAL].any()
    assert set(edges[P.METHOD]) == {"activation"}


def test_a_noisy_copy_is_still_matched(tiny_dir, tmp_path):
    store = MemoryStore()
    _match(store, tiny_dir, _copy(tiny_dir, tmp_path / "noisy", noise=0.05))
    best = _edges(store).filter((pl.col(P.RANK) == 0) & (pl.col("from") == "a"))
    right = sum(int(torch.argsort(PERMS[l])[i]) == j and l == lb for l, i, lb, j in
                best.select("src_layer", "src_index", "dst_layer", "dst_index").iter_rows())
    assert right / best.height >= 0.95


def test_independent_models_have_no_excess(tiny_dir, tmp_path):
    store = MemoryStore()
    _match(store, tiny_dir, build_tiny_llama(tmp_path / "other", seed=1))
    best = _edges(store).filter(pl.col(P.RANK) == 0)
    # a match of two unrelated models is no better than one with a rotated layer
    assert abs(best[P.EXCESS].mean()) < 0.05 and best[P.EXCESS].max() < 0.3


def test_a_rerun_replaces_the_edges_of_both_directions(tiny_dir, tmp_path):
    store = MemoryStore()
    copy = _copy(tiny_dir, tmp_path / "copy")
    _match(store, tiny_dir, copy)
    assert _match(store, tiny_dir, copy).stage("match/b").status == "already complete"
    ingest(store, IngestConfig.of(str(tiny_dir), name="a", extract=("match",), device="cpu", match_with="b",
                                  match_source=str(copy), match_top_k=1, match_positions=N))
    edges = _edges(store)
    assert edges.height == 2 * TINY["layers"] * TINY["d_mlp"]  # k = 1 now, from A and from B
    assert edges[P.RANK].max() == 0 and edges["run"].n_unique() == 1


def test_scores_equal_numpys_correlation_of_activations_read_with_plain_hooks(tiny_dir, tmp_path):
    """Independent models: each unit's best score and partner against a recomputation from
    ``down_proj`` inputs read with torch hooks over the same positions (every non-special
    token of the shipped corpus, 128-token sequences, the first N)."""
    import numpy as np

    from compgraph.data.corpus import resolve_corpus

    other = build_tiny_llama(tmp_path / "other", seed=1)
    store = MemoryStore()
    _match(store, tiny_dir, other)
    tok = T.AutoTokenizer.from_pretrained(tiny_dir)
    acts = {}
    for name, path in (("a", tiny_dir), ("b", other)):
        model = T.AutoModelForCausalLM.from_pretrained(path).eval()
        got = [[] for _ in model.model.layers]
        hooks = [layer.mlp.down_proj.register_forward_pre_hook(lambda m, args, l=l: got[l].append(args[0][0]))
                 for l, layer in enumerate(model.model.layers)]
        left = N
        for text in resolve_corpus(None).documents():
            ids = tok(text, add_special_tokens=True)["input_ids"][:128]
            keep = [t for t, i in enumerate(ids) if i not in set(tok.all_special_ids)][:left]
            if not keep:
                continue
            before = len(got[0])
            with torch.no_grad():
                model(torch.tensor([ids]))
            for l in range(len(got)):
                got[l][before] = got[l][before][keep]
            left -= len(keep)
            if not left:
                break
        for h in hooks:
            h.remove()
        acts[name] = np.concatenate([torch.cat(g).double().numpy() for g in got], axis=1)  # [N, layers * d_mlp]
    d = TINY["d_mlp"]
    r = np.corrcoef(acts["a"].T, acts["b"].T)[: acts["a"].shape[1], acts["a"].shape[1]:]
    best = _edges(store).filter((pl.col(P.RANK) == 0) & (pl.col("from") == "a")).sort("src_layer", "src_index")
    want = r.max(axis=1)
    bound = 2 ** -7 + (2 ** -8 if native_bf16("cpu") else 0)  # aligned.match_neurons' rounding bound
    np.testing.assert_allclose(best[P.SCORE].to_numpy(), want, atol=bound)
    ordered = np.sort(r, axis=1)
    clear = ordered[:, -1] - ordered[:, -2] > 2 ** -6  # partners unambiguous beyond rounding
    got_flat = (best["dst_layer"] * d + best["dst_index"]).to_numpy()
    assert clear.sum() > 0.5 * len(clear)
    assert (got_flat[clear] == r.argmax(axis=1)[clear]).all()


def test_the_run_belongs_to_the_name_sorting_first(tiny_dir, tmp_path):
    from compgraph.errors import ConfigError

    with pytest.raises(ConfigError, match="belongs to a \\(the name that sorts first\\): use `compgraph match`"):
        ingest(MemoryStore(), IngestConfig.of(str(tiny_dir), name="b", extract=("match",), device="cpu",
                                              match_with="a", match_source=str(tiny_dir)))


def test_a_corpus_too_short_is_refused_before_anything_is_written(tiny_dir, tmp_path):
    from compgraph.errors import ConfigError

    store = MemoryStore()
    copy = _copy(tiny_dir, tmp_path / "copy")
    _match(store, tiny_dir, copy)
    before = (store.nodes(schema.RUN).sort("uid"), _edges(store).sort("src", "dst"))
    with pytest.raises(ConfigError, match="fewer than --match-positions 100000000"):
        ingest(store, IngestConfig.of(str(tiny_dir), name="a", extract=("match",), device="cpu", match_with="b",
                                      match_source=str(copy), match_positions=100_000_000))
    assert store.nodes(schema.RUN).sort("uid").equals(before[0]) and _edges(store).sort("src", "dst").equals(before[1])


# ---- the decoding method ------------------------------------------------------------------------

def _decoding(store, a_dir, b_dir, **options):
    return _match(store, a_dir, b_dir, match_methods=("decoding",), **options)


def _plain_tops(path, k: int = 10):
    """Every neuron's top-k tokens by its down-projection column times the final norm's gain
    through the LM head, in plain torch (ids below the tokenizer's length): [layers * d_mlp, k]."""
    model = T.AutoModelForCausalLM.from_pretrained(path)
    n = len(T.AutoTokenizer.from_pretrained(path))
    w_u = model.lm_head.weight[:n].detach()
    gain = model.model.norm.weight.detach()
    return torch.cat([((layer.mlp.down_proj.weight.detach().T * gain) @ w_u.T).topk(k, dim=1).indices
                      for layer in model.model.layers])


def test_decoding_recovers_a_permuted_copy_exactly_with_the_same_top_tokens(tiny_dir, tmp_path):
    store = MemoryStore()
    report = _decoding(store, tiny_dir, _copy(tiny_dir, tmp_path / "permuted"))
    assert report.stage("match/b/decoding").shards_written == ["nodes", "a:L0", "a:L1", "b:L0", "b:L1"]
    best = _edges(store).filter(pl.col(P.RANK) == 0)
    assert best.height == 2 * TINY["layers"] * TINY["d_mlp"] and set(best[P.METHOD]) == {"decoding"}
    for layer, perm in enumerate(PERMS):
        forward = best.filter((pl.col("from") == "a") & (pl.col("src_layer") == layer)).sort("src_index")
        backward = best.filter((pl.col("from") == "b") & (pl.col("src_layer") == layer)).sort("src_index")
        assert (forward["dst_layer"] == layer).all() and forward["dst_index"].to_list() == torch.argsort(perm).tolist()
        assert backward["dst_index"].to_list() == perm.tolist()
    assert (best[P.SCORE] == 1.0).all() and best[P.SAME_TOP].all() and best[P.MUTUAL].all()


def test_decoding_scores_equal_set_overlaps_of_plain_torch_top_tokens(tiny_dir, tmp_path):
    """A noisy copy: each of A's units' best score and its same_top against the best overlap
    of top-10 sets recomputed here, and at least 95 % of units matched to their own copy."""
    copy = _copy(tiny_dir, tmp_path / "noisy", noise=0.05)
    store = MemoryStore()
    _decoding(store, tiny_dir, copy)
    top_a, top_b = _plain_tops(tiny_dir), _plain_tops(copy)
    sets_b = [set(row) for row in top_b.tolist()]
    best = _edges(store).filter((pl.col(P.RANK) == 0) & (pl.col("from") == "a")).sort("src_layer", "src_index")
    d = TINY["d_mlp"]
    from compgraph.extract.matching import vocabulary_permutation

    relabel = vocabulary_permutation(len(T.AutoTokenizer.from_pretrained(tiny_dir)), 0).tolist()  # --match-seed 0
    relabelled_b = [{relabel[t] for t in s} for s in sets_b]
    for row, (score, same, excess, lb, j) in zip(
            top_a.tolist(), best.select(P.SCORE, P.SAME_TOP, P.EXCESS, "dst_layer", "dst_index").iter_rows()):
        overlaps = [len(set(row) & s) / 10 for s in sets_b]
        assert score == pytest.approx(max(overlaps)) and overlaps[lb * d + j] == pytest.approx(score)
        assert same == (row[0] == top_b[lb * d + j, 0].item())
        baseline = max(len(set(row) & s) for s in relabelled_b) / 10
        assert excess == pytest.approx(score - baseline)
    right = sum(int(torch.argsort(PERMS[l])[i]) == j and l == lb for l, i, lb, j in
                best.select("src_layer", "src_index", "dst_layer", "dst_index").iter_rows())
    assert best.height == TINY["layers"] * d and right / best.height >= 0.95


def test_decoding_independent_models_share_almost_no_tokens(tiny_dir, tmp_path):
    store = MemoryStore()
    _decoding(store, tiny_dir, build_tiny_llama(tmp_path / "other", seed=1))
    best = _edges(store).filter(pl.col(P.RANK) == 0)
    # random top-10s out of 49,165 tokens: few units share any token, none more than one or two
    assert best.height < 0.25 * 2 * TINY["layers"] * TINY["d_mlp"] and best[P.SCORE].max() <= 0.2
    assert (best[P.EXCESS] <= best[P.SCORE]).all()


def test_decoding_across_tokenizers_compares_token_strings(tiny_dir, small_model):
    """SmolLM2's tokenizer against a 320-token BPE one: overlaps of decoded strings, recomputed
    here from plain-torch top tokens and ``tokenizer.decode``."""
    store = MemoryStore()
    _decoding(store, tiny_dir, small_model)
    tok_a, tok_b = T.AutoTokenizer.from_pretrained(tiny_dir), T.AutoTokenizer.from_pretrained(small_model)

    def strings(tok, tops):
        def one(t):
            text = tok.decode([t]).strip()
            return None if not text or "\ufffd" in text else text
        return [{one(t) for t in row} - {None} for row in tops.tolist()]

    sets_a, sets_b = strings(tok_a, _plain_tops(tiny_dir)), strings(tok_b, _plain_tops(small_model))
    best = _edges(store).filter((pl.col(P.RANK) == 0) & (pl.col("from") == "b")).sort("src_layer", "src_index")
    assert best.height > 0
    width_a = TINY["d_mlp"]
    keyed = {(l, i): (s, lb, j) for l, i, s, lb, j in
             best.select("src_layer", "src_index", P.SCORE, "dst_layer", "dst_index").iter_rows()}
    d_b = SMALL_D_MLP
    for unit, mine in enumerate(sets_b):
        overlaps = [len(mine & s) / 10 for s in sets_a]
        got = keyed.get((unit // d_b, unit % d_b))
        if max(overlaps) == 0:
            assert got is None
        else:
            score, lb, j = got
            assert score == pytest.approx(max(overlaps)) and overlaps[lb * width_a + j] == pytest.approx(score)


def test_each_method_keeps_its_matches_until_it_is_recomputed(tiny_dir, tmp_path):
    store = MemoryStore()
    copy = _copy(tiny_dir, tmp_path / "copy")
    _match(store, tiny_dir, copy, match_methods=("activation", "decoding"))
    runs = dict(_edges(store).group_by(P.METHOD).agg(pl.col("run").unique()).iter_rows())
    assert sorted(runs) == ["activation", "decoding"] and all(len(r) == 1 for r in runs.values())
    decoded = _edges(store).filter(pl.col(P.METHOD) == "decoding").sort("src", "dst")
    _match(store, tiny_dir, copy, match_top_k=1)  # activation only, recomputed: decoding untouched
    assert _edges(store).filter(pl.col(P.METHOD) == "decoding").sort("src", "dst").equals(decoded)
    activation = _edges(store).filter(pl.col(P.METHOD) == "activation")
    assert activation[P.RANK].max() == 0 and activation.height == 2 * TINY["layers"] * TINY["d_mlp"]
    _decoding(store, tiny_dir, copy, top_k=5)  # decoding over top-5 tokens, recomputed: activation untouched
    assert _edges(store).filter(pl.col(P.METHOD) == "activation").sort("src", "dst").equals(activation.sort("src", "dst"))
    redone = _edges(store).filter(pl.col(P.METHOD) == "decoding")
    assert redone["run"].n_unique() == 1 and redone["run"][0] != runs["decoding"][0]
    assert ((redone[P.SCORE] * 5).round(9) % 1 == 0).all() and redone[P.RANK].max() == K - 1  # overlaps j / 5


# ---- heads ---------------------------------------------------------------------------------------

HEAD_PERMS = [torch.tensor([1, 0, 3, 2]), torch.tensor([3, 2, 0, 1])]  # layer 1 swaps the two KV groups too


def _sharpened(source, path, scale: float = 20.0):
    """``source`` with its query and key weights scaled: a freshly initialised model attends
    almost uniformly, so all its heads look alike; these attend sharply and differently."""
    model = T.AutoModelForCausalLM.from_pretrained(source)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(scale)
            layer.self_attn.k_proj.weight.mul_(scale)
    model.save_pretrained(path)
    T.AutoTokenizer.from_pretrained(source).save_pretrained(path)
    return path


def _head_copy(source, path):
    """``source`` with each layer's query heads permuted (the copy's head h is the source's
    HEAD_PERMS[l][h]), KV heads moved with their group."""
    model = T.AutoModelForCausalLM.from_pretrained(source)
    d_head = model.config.hidden_size // model.config.num_attention_heads
    group = model.config.num_attention_heads // model.config.num_key_value_heads
    with torch.no_grad():
        for layer, perm in zip(model.model.layers, HEAD_PERMS):
            attn = layer.self_attn
            rows = torch.cat([torch.arange(h * d_head, (h + 1) * d_head) for h in perm.tolist()])
            attn.q_proj.weight.copy_(attn.q_proj.weight[rows])
            attn.o_proj.weight.copy_(attn.o_proj.weight[:, rows])
            kv = perm[::group] // group  # each new group's old KV head
            kv_rows = torch.cat([torch.arange(g * d_head, (g + 1) * d_head) for g in kv.tolist()])
            attn.k_proj.weight.copy_(attn.k_proj.weight[kv_rows])
            attn.v_proj.weight.copy_(attn.v_proj.weight[kv_rows])
    model.save_pretrained(path)
    T.AutoTokenizer.from_pretrained(source).save_pretrained(path)
    return path


def _head_edges(store) -> pl.DataFrame:
    return _edges(store, "H")


def test_heads_of_a_permuted_copy_are_recovered_by_their_attention(tiny_dir, tmp_path):
    store = MemoryStore()
    sharp = _sharpened(tiny_dir, tmp_path / "sharp")
    report = _match(store, sharp, _head_copy(sharp, tmp_path / "heads"), match_components=("head",),
                    match_positions=256)
    assert report.stage("match/b/heads").shards_written == ["nodes", "a:L0", "a:L1", "b:L0", "b:L1"]
    assert store.nodes(schema.HEAD).height == 2 * TINY["layers"] * TINY["heads"]
    best = _head_edges(store).filter(pl.col(P.RANK) == 0)
    assert best.height == 2 * TINY["layers"] * TINY["heads"] and (best["src_layer"] == best["dst_layer"]).all()
    for layer, perm in enumerate(HEAD_PERMS):
        forward = best.filter((pl.col("from") == "a") & (pl.col("src_layer") == layer)).sort("src_index")
        assert forward["dst_index"].to_list() == torch.argsort(perm).tolist()
    assert best[P.SCORE].min() > 1 - 2 ** -6 and best[P.MUTUAL].all() and set(best[P.METHOD]) == {"activation"}


def test_head_scores_equal_numpys_correlation_of_plain_attention_weights(tiny_dir, tmp_path):
    """Independent models: each head's best score against np.corrcoef over attention weights
    returned by transformers, at every pair of non-special positions j <= i of the same
    sequences (one tokenizer: each segment is one token)."""
    import numpy as np

    from compgraph.data.corpus import resolve_corpus

    mine = _sharpened(tiny_dir, tmp_path / "mine")
    other = _sharpened(build_tiny_llama(tmp_path / "other", seed=1), tmp_path / "other-sharp")
    store = MemoryStore()
    n = 128
    _match(store, mine, other, match_components=("head",), match_positions=n)
    tok = T.AutoTokenizer.from_pretrained(tiny_dir)
    special = set(tok.all_special_ids)
    entries = {}
    for name, path in (("a", mine), ("b", other)):
        model = T.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
        cols, left = [], n
        for text in resolve_corpus(None).documents():
            ids = tok(text, add_special_tokens=True)["input_ids"][:128]
            keep = [t for t, i in enumerate(ids) if i not in special][:left]
            if not keep:
                continue
            with torch.no_grad():
                att = model(torch.tensor([ids]), output_attentions=True).attentions
            pairs = [(q, k) for a, q in enumerate(keep) for k in keep[:a + 1]]  # the first segment: all up to it
            cols.append(np.stack([np.array([float(a[0, h, q, k]) if k != keep[0] else float(a[0, h, q, :k + 1].sum())
                                            for q, k in pairs]) for a in att for h in range(a.shape[1])], axis=1))
            left -= len(keep)
            if not left:
                break
        entries[name] = np.concatenate(cols)
    units = entries["a"].shape[1]
    r = np.corrcoef(entries["a"].T, entries["b"].T)[:units, units:]
    best = _head_edges(store).filter((pl.col(P.RANK) == 0) & (pl.col("from") == "a")).sort("src_layer", "src_index")
    bound = 2 ** -7 + (2 ** -8 if native_bf16("cpu") else 0)
    np.testing.assert_allclose(best[P.SCORE].to_numpy(), r.max(axis=1), atol=bound)
    assert r.max(axis=1).min() < 0.9  # sharp heads of two models are not all alike


def test_a_neuron_activation_run_keeps_the_identity_it_had_before_methods_and_heads(tiny_dir, tmp_path):
    """The run uid of ``match`` by activation is the hash of the config it had before the
    decoding method and heads were added (the options added since are empty in it)."""
    import dataclasses

    from compgraph.data.corpus import resolve_corpus
    from compgraph.data.digests import files_digest
    from compgraph.engine.identity import identity_hash
    from compgraph.ingest import plan
    from compgraph.models import loading

    @dataclasses.dataclass(frozen=True)
    class Before:  # MatchConfig's fields at 20ee30f
        corpus: str | None = None
        seq_len: int = 128
        max_tokens: int | None = None
        match_with: str | None = None
        match_source: str | None = None
        match_top_k: int = 5
        match_positions: int = 4096
        match_seed: int = 0

    copy = _copy(tiny_dir, tmp_path / "copy")
    job = plan(IngestConfig.of(str(tiny_dir), name="a", extract=("match",), match_with="b", match_source=str(copy),
                               match_components=("neuron", "head"), match_methods=("activation", "decoding")))
    runs = {s.label: s for s in job.stages}
    assert sorted(runs) == ["match/b", "match/b/decoding", "match/b/heads"]
    weights = files_digest(loading.model_files(loading.resolve(str(tiny_dir))))
    inputs = {"weights": weights, "corpus": resolve_corpus(None).digest(),
              "other_weights": files_digest(loading.model_files(loading.resolve(str(copy))))}
    before = identity_hash(model="a", stage="match", version=1, inputs=inputs,
                           config=Before(match_with="b", match_source=str(copy)))
    assert runs["match/b"].run == schema.run_uid("a", "match/b", before)
    assert "corpus" not in runs["match/b/decoding"].inputs  # decoding reads no text


def test_neuron_and_head_runs_keep_each_others_matches(tiny_dir, tmp_path):
    store = MemoryStore()
    sharp = _sharpened(tiny_dir, tmp_path / "sharp")
    copy = _head_copy(sharp, tmp_path / "heads")
    _match(store, sharp, copy, match_components=("neuron", "head"), match_positions=256)
    heads = _head_edges(store).filter(pl.col("src").str.contains("/H")).sort("src", "dst")
    assert heads.height > 0
    _match(store, sharp, copy, match_positions=256, match_top_k=1)  # neurons again, fewer matches
    assert _head_edges(store).filter(pl.col("src").str.contains("/H")).sort("src", "dst").equals(heads)
    neurons = _edges(store).filter(pl.col("src").str.contains("/N"))
    assert neurons[P.RANK].max() == 0 and neurons.height == 2 * TINY["layers"] * TINY["d_mlp"]


def test_a_decoding_top_k_beyond_the_vocabulary_is_refused_before_anything_is_written(tiny_dir, tmp_path):
    from compgraph.errors import ConfigError

    store = MemoryStore()
    with pytest.raises(ConfigError, match="--top-k 1000000 exceeds the vocabulary"):
        _decoding(store, tiny_dir, _copy(tiny_dir, tmp_path / "copy"), top_k=1_000_000)
    assert store.nodes(schema.RUN).height == 0 and store.nodes(schema.MODEL).height == 0
