"""The job engine on the in-memory store (no JVM): run identity, resume, replacement,
provenance, padded vocabularies. The model is a tiny Llama with SmolLM2's tokenizer."""

from __future__ import annotations

import dataclasses
import json

import polars as pl
import pytest

from compgraph import schema
from compgraph.ingest import IngestConfig
from compgraph.engine import identity, registry
from compgraph.engine.registry import register
from compgraph.engine.stage import Frames, Stage
from compgraph.errors import ConfigError
from compgraph.ingest import ingest, plan
from compgraph.models import loading
from compgraph.stages import neurons as neurons_mod
from compgraph.stages.shared import TopKConfig
from compgraph.store.memory import MemoryStore

from tests.helpers.jobs import kill_at
from tests.helpers.models import TINY, build_tiny_llama

N_NEURONS = TINY["layers"] * TINY["d_mlp"]


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    return loading.load(str(tiny_dir), device="cpu")


def cfg(tiny_dir, **kw) -> IngestConfig:
    return IngestConfig.of(str(tiny_dir), **{"name": "tiny", "device": "cpu", "top_k": 3, **kw})


def graph(store: MemoryStore) -> dict:
    """Every node and edge, run bookkeeping aside, in a canonical order."""
    nodes = {}
    for kind in schema.NODE_KINDS:
        if kind in (schema.RUN, schema.META, schema.COMPONENT):
            continue
        for row in store.nodes(kind).to_dicts():
            nodes[row["uid"]] = {k: v for k, v in row.items() if v is not None}
    edges = {}
    for rel in schema.REL_KINDS:
        for row in store.edges(rel).to_dicts():
            key = (rel.type, row["src"], row["dst"], *(row.get(k) for k in rel.key))
            edges[key] = {k: v for k, v in row.items() if v is not None}
    return {"nodes": nodes, "edges": edges}


def test_ingest_writes_every_stage_and_a_rerun_writes_nothing(tiny_dir, loaded):
    store = MemoryStore()
    report = ingest(store, cfg(tiny_dir), loaded=loaded)
    assert [(s.stage, s.status) for s in report.stages] == [
        ("tokens", "complete"), ("neurons", "complete"), ("heads", "complete"), ("experts", "skipped")]
    assert report.stage("neurons").shards_written == ["decode/L0", "decode/L1", "stats/L0-L1"]
    assert store.nodes(schema.NEURON).height == N_NEURONS
    assert store.nodes(schema.HEAD).height == TINY["layers"] * TINY["heads"]
    decodes = store.edges(schema.DECODES_TO)
    assert decodes.height == N_NEURONS * 3 * 2 * 3  # vias x signs x k
    runs = store.nodes(schema.RUN).to_dicts()
    assert {r["stage"]: r["status"] for r in runs} == {"tokens": "complete", "neurons": "complete", "heads": "complete"}
    assert all(r["seconds"] >= 0 and r["rows_written"] > 0 for r in runs)
    before = graph(store)
    again = ingest(store, cfg(tiny_dir), loaded=loaded)
    assert [s.status for s in again.stages] == ["already complete"] * 3 + ["skipped"]
    assert graph(store) == before


def test_padded_vocabulary_tokens_and_decodings_agree(tiny_dir, loaded):
    """The embedding has 13 padding rows that would win every decoding; none is a token."""
    store = MemoryStore()
    ingest(store, cfg(tiny_dir, extract=("neurons",)), loaded=loaded)
    n_ids = len(loaded.tokenizer)
    assert loaded.model.config.vocab_size == n_ids + TINY["pad"]
    tokens = store.nodes(schema.TOKEN)
    assert tokens.height == n_ids and tokens["id"].max() == n_ids - 1
    targets = store.edges(schema.DECODES_TO)["dst"].str.split(":").list.last().cast(pl.Int64)
    assert targets.max() < n_ids
    model = store.nodes(schema.MODEL).row(0, named=True)
    assert (model["n_tokens"], model["vocab_size"]) == (n_ids, n_ids + TINY["pad"])


def test_smaller_top_k_replaces_the_earlier_run(tiny_dir, loaded):
    store = MemoryStore()
    ingest(store, cfg(tiny_dir, top_k=4), loaded=loaded)
    report = ingest(store, cfg(tiny_dir, top_k=2), loaded=loaded)
    assert {s.stage: s.status for s in report.stages}["heads"] == "already complete"  # top_k is not a head option
    decodes = store.edges(schema.DECODES_TO)
    ranks = decodes.group_by("src", "via").agg(pl.col("rank").sort())
    assert ranks.height == N_NEURONS * 3
    assert all(r == [-2, -1, 0, 1] for r in ranks["rank"].to_list())
    activates = store.edges(schema.ACTIVATES_ON).group_by("src").len()
    assert set(activates["len"].to_list()) == {2}
    runs = {r["uid"]: r for r in store.nodes(schema.RUN, where={"stage": "neurons"}).to_dicts()}
    new = next(u for u, r in runs.items() if r["status"] == "complete")
    old = next(u for u, r in runs.items() if r["status"] == "superseded")
    assert runs[old]["superseded_by"] == new
    assert set(decodes["run"].to_list()) == {new}
    assert set(store.nodes(schema.NEURON)[schema.run_marker("neurons")].to_list()) == {new}
    # and it equals a clean top-k 2 ingest
    clean = MemoryStore()
    ingest(clean, cfg(tiny_dir, top_k=2), loaded=loaded)
    assert graph(store) == graph(clean)


def test_going_back_to_an_earlier_config_recomputes_it(tiny_dir, loaded):
    store = MemoryStore()
    ingest(store, cfg(tiny_dir, top_k=4, extract=("neurons",)), loaded=loaded)
    ingest(store, cfg(tiny_dir, top_k=2, extract=("neurons",)), loaded=loaded)
    back = ingest(store, cfg(tiny_dir, top_k=4, extract=("neurons",)), loaded=loaded)
    assert back.stage("neurons").status == "complete"  # not "already complete": its edges were replaced
    clean = MemoryStore()
    ingest(clean, cfg(tiny_dir, top_k=4, extract=("neurons",)), loaded=loaded)
    assert graph(store) == graph(clean)
    statuses = sorted(r["status"] for r in store.nodes(schema.RUN, where={"stage": "neurons"}).to_dicts())
    assert statuses == ["complete", "superseded"]


def test_a_version_bump_recomputes_that_stage_only(tiny_dir, loaded, monkeypatch):
    store = MemoryStore()
    ingest(store, cfg(tiny_dir), loaded=loaded)
    monkeypatch.setattr(neurons_mod.NeuronsStage, "version", neurons_mod.NeuronsStage.version + 1)
    report = ingest(store, cfg(tiny_dir), loaded=loaded)
    assert {s.stage: s.status for s in report.stages} == {
        "tokens": "already complete", "neurons": "complete", "heads": "already complete", "experts": "skipped"}
    assert report.stage("neurons").run != ingest(store, cfg(tiny_dir), loaded=loaded).stage("heads").run
    versions = {r["stage_version"] for r in store.nodes(schema.RUN, where={"stage": "neurons"}).to_dicts()}
    assert len(versions) == 2


def test_force_recomputes_a_complete_stage(tiny_dir, loaded):
    store = MemoryStore()
    ingest(store, cfg(tiny_dir), loaded=loaded)
    report = ingest(store, cfg(tiny_dir, force=("heads",)), loaded=loaded)
    assert {s.stage: s.status for s in report.stages}["heads"] == "complete"
    assert report.stage("neurons").status == "already complete"
    with pytest.raises(ConfigError, match="--force"):
        plan(cfg(tiny_dir, extract=("heads",), force=("neurons",)), loaded=loaded)


def test_interrupted_job_resumes_where_it_stopped(tiny_dir, loaded, monkeypatch):
    decoded = []
    real = neurons_mod.neuron_decodings
    monkeypatch.setattr(neurons_mod, "neuron_decodings", lambda *a, **k: decoded.append(a[2]) or real(*a, **k))

    store = MemoryStore()
    with pytest.raises(KeyboardInterrupt):
        ingest(store, cfg(tiny_dir), loaded=loaded, progress=kill_at("neurons: activations"))
    state = store.nodes(schema.RUN, where={"stage": "neurons"}).row(0, named=True)
    assert state["status"] == "running" and state["done"] == ["decode/L0", "decode/L1"]
    report = ingest(store, cfg(tiny_dir), loaded=loaded)
    assert decoded == [0, 1]  # not decoded again
    assert report.stage("neurons").shards_written == ["stats/L0-L1"]
    assert report.stage("tokens").status == "already complete"
    clean = MemoryStore()
    ingest(clean, cfg(tiny_dir), loaded=loaded)
    assert graph(store) == graph(clean)


def test_identity_ignores_option_order_and_execution_settings(tiny_dir, loaded):
    a = plan(cfg(tiny_dir, extract=("heads", "neurons")), loaded=loaded)
    b = plan(cfg(tiny_dir, extract=("neurons", "heads"), batch_size=3, memory_gb=0.5), loaded=loaded)
    assert [s.stage.name for s in a.stages] == ["tokens", "neurons", "heads"]
    assert [s.run for s in a.stages] == [s.run for s in b.stages]
    c = plan(cfg(tiny_dir, extract=("neurons", "heads"), corpus=None, seed=1), loaded=loaded)
    assert [s.run for s in c.stages][:2] == [s.run for s in a.stages][:2] and c.stages[2].run != a.stages[2].run


def test_an_optional_field_added_at_its_empty_default_keeps_the_identity():
    @dataclasses.dataclass(frozen=True)
    class Before:
        top_k: int = 10

    @dataclasses.dataclass(frozen=True)
    class After:
        top_k: int = 10
        dictionaries: tuple = ()
        threshold: float | None = None

    def key(config):
        return identity.identity_hash(model="m", stage="s", version=1, config=config, inputs={"weights": "w"})

    assert key(Before()) == key(After())
    assert key(After(dictionaries=("sae",))) != key(Before())
    assert key(After(threshold=0.0)) != key(Before())  # 0 is a value, not "unused"
    assert key(After(top_k=5)) != key(Before())


def test_replacing_the_weights_behind_the_same_path_is_a_new_run(tmp_path):
    path = build_tiny_llama(tmp_path / "m", seed=0)
    store = MemoryStore()
    options = IngestConfig.of(str(path), name="tiny", device="cpu", extract=("heads",))
    first = ingest(store, options)
    assert ingest(store, options).stage("heads").status == "already complete"
    build_tiny_llama(path, seed=1)  # other weights, same path and name
    again = ingest(store, options)
    assert again.stage("heads").status == "complete" and again.stage("heads").run != first.stage("heads").run


class _Probe(Stage):
    """A stage written in a test: per layer, one property per version on the layer's heads."""

    name, version = "probe", 1

    def shards(self, info, config, execution):
        return [f"L{layer}" for layer in range(info.n_layers)]

    def run(self, ctx, config, shard):
        layer = int(shard[1:])
        frame = pl.DataFrame({"uid": [schema.head_uid(ctx.info.name, layer, h) for h in range(ctx.info.n_heads)],
                              "model": ctx.info.name, "layer": layer, f"probe_v{self.version}": 1.0, "probe": 2.0})
        return Frames.of(nodes=[(schema.HEAD, frame)])


def test_a_new_stage_registers_once_and_its_stale_properties_are_swept(tiny_dir, loaded, monkeypatch):
    stage = register(_Probe())
    monkeypatch.setitem(registry._STAGES, "probe", stage)
    with pytest.raises(ValueError, match="already registered"):
        register(_Probe())
    store = MemoryStore()
    ingest(store, cfg(tiny_dir, extract=("probe",)), loaded=loaded)
    heads = store.nodes(schema.HEAD)
    assert heads.height == TINY["layers"] * TINY["heads"] and set(heads["probe_v1"].to_list()) == {1.0}
    monkeypatch.setattr(_Probe, "version", 2)
    ingest(store, cfg(tiny_dir, extract=("probe",)), loaded=loaded)
    rows = store.nodes(schema.HEAD).to_dicts()
    assert all(r.get("probe_v1") is None and r["probe_v2"] == 1.0 and r["probe"] == 2.0 for r in rows)
    runs = store.nodes(schema.RUN, where={"stage": "probe"}).to_dicts()
    assert sorted(r["status"] for r in runs) == ["complete", "superseded"]
    wrote = json.loads(next(r for r in runs if r["status"] == "complete")["wrote"])
    assert wrote == {"Head": ["probe", "probe_v2"]}


def test_bad_options_fail_in_planning(tiny_dir, loaded):
    with pytest.raises(ConfigError, match="top-k"):
        plan(cfg(tiny_dir, top_k=10**6), loaded=loaded)
    with pytest.raises(ConfigError, match="no stage"):
        plan(cfg(tiny_dir, extract=("bogus",)), loaded=loaded)
    for bad in (dict(device="tpu"), dict(dtype="foo"), dict(top_k=0), dict(name="a/b")):
        with pytest.raises(ConfigError):
            cfg(tiny_dir, **bad)
    with pytest.raises(ConfigError, match="holds no text"):
        plan(cfg(tiny_dir, corpus=str(_empty_corpus(tiny_dir))), loaded=loaded)


def _empty_corpus(tiny_dir):
    path = tiny_dir.parent / "empty.jsonl"
    path.write_text('{"text": ""}\n')
    return path


def test_every_stage_config_field_is_a_declared_job_option():
    table = registry.options()
    for stage in registry.stages().values():
        names = {f.name for f in dataclasses.fields(stage.Config)}
        assert names <= set(table), stage.name
        for name in names:  # the declaration the job uses is the stage's own (or a shared one)
            field = next(f for f in dataclasses.fields(stage.Config) if f.name == name)
            assert table[name].default == field.default and table[name].option == field.metadata["compgraph.option"]


def test_an_option_of_the_job_is_checked_against_its_declaration():
    with pytest.raises(ConfigError, match="--top-k must be at least 1, not 0"):
        IngestConfig.of("m", top_k=0)
    with pytest.raises(ConfigError, match="--method must be one of verified, activation, attribution, eap-ig, not 'x'"):
        IngestConfig.of("m", effect_method="x")
    with pytest.raises(ConfigError, match="unknown option"):
        IngestConfig.of("m", no_such_option=1)
    job = IngestConfig.of("m", tasks=["ioi"], top_k=3, batch_size=4)
    assert job.option("tasks") == ("ioi",) and job.option("top_k") == 3 and job.execution.batch_size == 4
    assert job.option("seq_len") == 128  # not given: the declared default


class _PerSubject(Stage):
    """A scoped stage: one run per subject, each replacing only its own earlier runs."""

    name, version = "persubject", 1

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(TopKConfig):
        """``top_k`` names the subject."""

    def instances(self, config):
        return [(f"s{config.top_k}", config), ("fixed", config)]

    def shards(self, info, config, execution):
        return ["all"]

    def run(self, ctx, config, shard):
        frame = pl.DataFrame({"uid": [schema.task_uid(f"t{config.top_k}")], "name": [f"t{config.top_k}"],
                              "k": [config.top_k]})
        return Frames.of(nodes=[(schema.TASK, frame)])


def test_scoped_runs_replace_only_their_own_scope(tiny_dir, loaded, monkeypatch):
    monkeypatch.setitem(registry._STAGES, "persubject", _PerSubject())
    store = MemoryStore()
    first = ingest(store, cfg(tiny_dir, extract=("persubject",), top_k=1), loaded=loaded)
    assert [s.stage for s in first.stages] == ["persubject/s1", "persubject/fixed"]
    ingest(store, cfg(tiny_dir, extract=("persubject",), top_k=2), loaded=loaded)
    runs = {(r["scope"], r["status"]) for r in store.nodes(schema.RUN, where={"stage": "persubject"}).to_dicts()}
    assert runs == {("s1", "complete"), ("s2", "complete"), ("fixed", "complete"), ("fixed", "superseded")}
    assert sorted(store.nodes(schema.TASK)["name"].to_list()) == ["t1", "t2"]


def test_a_run_replaces_the_runs_of_the_scopes_it_names(tiny_dir, loaded, monkeypatch):
    """A stage that renamed its scopes (``replaces``): the new scope's run supersedes the old
    scope's run and sweeps what it wrote, as if it were its own earlier run."""
    stage = _PerSubject()
    monkeypatch.setitem(registry._STAGES, "persubject", stage)
    store = MemoryStore()
    monkeypatch.setattr(stage, "instances", lambda config: [("old", config)])
    ingest(store, cfg(tiny_dir, extract=("persubject",), top_k=1), loaded=loaded)
    monkeypatch.setattr(stage, "instances", lambda config: [("old/new", config)])
    monkeypatch.setattr(stage, "replaces", lambda scope: ("old",) if scope == "old/new" else ())
    ingest(store, cfg(tiny_dir, extract=("persubject",), top_k=2), loaded=loaded)
    runs = {(r["scope"], r["status"]) for r in store.nodes(schema.RUN, where={"stage": "persubject"}).to_dicts()}
    assert runs == {("old", "superseded"), ("old/new", "complete")}
    tasks = {r["name"]: r.get("k") for r in store.nodes(schema.TASK).to_dicts()}
    assert tasks == {"t1": None, "t2": 2}  # t1's property written by the old run is swept
