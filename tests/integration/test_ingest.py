"""`compgraph ingest` end to end on a tiny Llama that uses SmolLM2's real tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers as T
from click.testing import CliRunner

from compgraph import schema
from compgraph.cli import main
from compgraph.config import IngestConfig
from compgraph.ingest import ingest
from compgraph.models import loading
from compgraph.store.factory import open_store

LAYERS, D_MLP, HEADS = 2, 48, 4


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    source = loading.resolve("packaged:smollm2")
    tok = T.AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file)
    torch.manual_seed(0)
    config = T.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=D_MLP, num_hidden_layers=LAYERS,
                           num_attention_heads=HEADS, num_key_value_heads=2, bos_token_id=tok.bos_token_id,
                           eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    path = tmp_path_factory.mktemp("tiny-llama")
    T.LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPGRAPH_STORE", str(tmp_path / "kb"))
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args), catch_exceptions=False)


def counts(cli) -> dict:
    return json.loads(cli("info", "--format", "json").stdout)


def test_ingest_counts_and_rerun_changes_nothing(cli, tiny_dir):
    result = cli("ingest", str(tiny_dir), "--name", "tiny", "--top-k", "4")
    assert result.exit_code == 0, result.output
    first = counts(cli)
    assert first["labels"]["Neuron"] == LAYERS * D_MLP and first["labels"]["Head"] == LAYERS * HEADS
    assert first["labels"]["Token"] == 49152 and first["labels"]["Model"] == 1
    # every neuron decodes through every via, 4 top + 4 bottom tokens each
    per_via = json.loads(cli("query", "MATCH (n:Neuron {model: 'tiny'})-[d:DECODES_TO]->(:Token) "
                                      "RETURN d.via AS via, count(*) AS c ORDER BY via", "--format", "json").stdout)
    assert per_via == [{"via": v, "c": LAYERS * D_MLP * 8} for v in ("gate", "in", "out")]
    missing = json.loads(cli("query", "MATCH (h:Head {model: 'tiny'}) WHERE " + " OR ".join(
        f"h.{s} IS NULL" for s in schema.HEAD_SCORES) + " RETURN count(h) AS c", "--format", "json").stdout)
    assert missing == [{"c": 0}]
    stats = json.loads(cli("query", "MATCH (n:Neuron {model: 'tiny'}) WHERE n.act_freq >= 0 AND n.act_freq <= 1 "
                                    "AND n.act_max >= n.act_mean RETURN count(n) AS c", "--format", "json").stdout)
    assert stats == [{"c": LAYERS * D_MLP}]
    again = cli("ingest", str(tiny_dir), "--name", "tiny", "--top-k", "4")
    assert again.exit_code == 0 and "already complete" in again.output
    assert counts(cli) == first


def test_interrupted_job_resumes(tmp_path, tiny_dir):
    cfg = IngestConfig(model=str(tiny_dir), name="tiny", top_k=3)
    loaded = loading.load(str(tiny_dir), device="cpu")
    calls = {"n": 0}

    def explode_on_activations(stage, total):
        if stage == "neurons: activations":
            raise KeyboardInterrupt  # a kill after the decode shards were written
        return lambda: None

    with open_store(tmp_path / "kb") as store:
        with pytest.raises(KeyboardInterrupt):
            ingest(store, cfg, progress=explode_on_activations, loaded=loaded)
        partial = store.query("MATCH (r:Run) RETURN r.status AS s, r.done AS done").row(0, named=True)
        assert partial["s"] == "running" and "neurons.decode.L1" in partial["done"]
        report = ingest(store, cfg, loaded=loaded, progress=lambda s, t: (lambda: calls.__setitem__("n", calls["n"] + 1)))
        assert report.status == "complete"
        assert "neurons.decode.L0" not in report.shards_written and "heads" in report.shards_written
        n_neurons = store.query("MATCH (n:Neuron) WHERE n.act_mean IS NOT NULL RETURN count(n) AS c")["c"][0]
        assert n_neurons == LAYERS * D_MLP


def one_line_error(result):
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


def test_bad_models_fail_cleanly_and_leave_store_unchanged(cli, tmp_path, tiny_dir):
    assert "hub" in one_line_error(cli("ingest", "not/a-model"))
    source = loading.resolve("packaged:smollm2")
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes((Path(source.location) / source.gguf_file).read_bytes()[:5_000_000])
    assert "truncated" in one_line_error(cli("ingest", str(truncated)))
    t5 = tmp_path / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 8}))
    assert "supported: " in one_line_error(cli("ingest", str(t5)))
    assert "--extract" in one_line_error(cli("ingest", str(tiny_dir), "--extract", "neurons,bogus"))
    assert not (tmp_path / "kb").exists()  # the store was never opened
