"""``train-dictionary`` on a tiny model: sites, the forward dtype, an exact round trip through
read_dictionary, and the command."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from compgraph.cli.main import main
from compgraph.dictionaries.job import TrainJob, forward_dtype, resolve_sites, train_dictionary
from compgraph.dictionaries.readers import read_dictionary
from compgraph.dictionaries.training import TrainConfig
from compgraph.errors import ConfigError
from tests.helpers.effects import one_thread  # noqa: F401 (autouse)




def test_sites_of_each_kind():
    with pytest.raises(ConfigError, match="reads mlp_in and predicts mlp_out"):
        resolve_sites("transcoder", "resid", 3)
    assert resolve_sites("topk-sae", "resid", 3) == (("resid_post", 3), ("resid_post", 3))
    assert resolve_sites("transcoder", None, 2) == (("mlp_in", 2), ("mlp_out", 2))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from compgraph.data.corpus import resolve_corpus

    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("\n".join(resolve_corpus(None).documents()))
    return str(path)


@pytest.mark.parametrize("kind", ["topk-sae", "transcoder"])
def test_a_trained_dictionary_reads_back_exactly(tiny_dir, corpus, tmp_path, kind):
    job = TrainJob(model=str(tiny_dir), layer=1, out=str(tmp_path / "out"), corpus=corpus, tokens=800,
                   eval_tokens=200, seq_len=32, batch_size=4, chunk_tokens=512, device="cpu",
                   train=TrainConfig(kind=kind, width=24, k=4, batch_tokens=128))
    folder, result = train_dictionary(job)
    (d,) = read_dictionary(folder)
    coder = result.coder
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(d, name), getattr(coder, name).detach()), name
    want = ("sae", "resid_post", "resid_post") if kind == "topk-sae" else ("transcoder", "mlp_in", "mlp_out")
    assert (d.kind, d.site, d.output_site, d.layer, d.activation, d.k) == (*want, 1, "topk", 4)
    assert d.subtract_b_dec == (kind == "topk-sae")
    x = torch.randn(10, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(d.forward(x), coder(x).detach(), rtol=1e-5, atol=1e-5)
    assert result.tokens == 800 and result.eval_tokens == 200 and math.isfinite(result.fve)
    recorded = json.loads((folder / "cfg.json").read_text())["compgraph"]["activation_dtype"]
    assert recorded == forward_dtype("auto", "cpu")


def test_the_forward_pass_runs_in_bfloat16_only_where_the_hardware_has_it(monkeypatch):
    from compgraph.models import loading

    assert forward_dtype("float16", "cpu") == "float16" and forward_dtype("float32", "cpu") == "float32"
    assert loading.native_bf16("cuda")
    for native, want in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(loading, "native_bf16", lambda device, native=native: native)
        assert forward_dtype("auto", "cpu") == want


def test_the_command_trains_and_reports(tiny_dir, corpus, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(main, ["train-dictionary", str(tiny_dir), "--layer", "0", "--site", "resid",
                                       "--width", "16", "--k", "2", "--tokens", "600", "--eval-tokens", "100",
                                       "--seq-len", "32", "--batch-tokens", "100", "--corpus", corpus,
                                       "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "held-out FVE" in result.output and "dead features" in result.output
    (d,) = read_dictionary(out)
    assert (d.site, d.layer, d.width, d.k) == ("resid_post", 0, 16, 2)
    bad = CliRunner().invoke(main, ["train-dictionary", str(tiny_dir), "--layer", "5", "--corpus", corpus])
    assert bad.exit_code == 1 and "out of range" in bad.output
