"""What a running stage may use: execution settings, the tokenizer's ids, the corpus built once."""

from __future__ import annotations

import pytest

from compgraph.engine.context import Execution, StageContext
from compgraph.errors import ConfigError
from compgraph.models import loading
from compgraph.models.info import model_info
from tests.helpers.models import TINY


def test_execution_settings_are_checked():
    assert Execution().batch_size == 8
    for bad, flag in ((dict(device="tpu"), "--device"), (dict(dtype="foo"), "--dtype"),
                      (dict(batch_size=0), "--batch-size"), (dict(memory_gb=0), "--memory-gb")):
        with pytest.raises(ConfigError, match=flag):
            Execution(**bad)


def test_context_counts_real_token_ids_and_builds_the_corpus_once(tiny_dir):
    loaded = loading.load(str(tiny_dir), device="cpu")
    info = model_info("tiny", str(tiny_dir), loaded.model.config, loaded.adapter)
    ctx = StageContext(info, Execution(device="cpu"), loaded=loaded)
    assert info.vocab_size == len(loaded.tokenizer) + TINY["pad"]
    assert ctx.n_tokens == len(loaded.tokenizer)  # the padding rows are no tokens
    assert ctx.tokenizer_id.startswith("vocab-") and loaded.tokenizer.bos_token_id in ctx.special_ids()
    stream = ctx.tokens(seq_len=16, max_tokens=64)
    assert ctx.tokens(seq_len=16, max_tokens=64) is stream and ctx.tokens(seq_len=32, max_tokens=64) is not stream
    assert stream.n_tokens == 64
    ctx.close()
    assert ctx._streams == {}


@pytest.mark.parametrize("dtype,native,want", [("auto", True, "bfloat16"), ("auto", False, None),
                                              ("float32", True, None), ("bfloat16", True, None)])
def test_the_statistics_pass_runs_in_bfloat16_only_with_auto_on_a_native_cpu(dtype, native, want, monkeypatch):
    from compgraph.engine.context import Execution
    from compgraph.models import loading

    monkeypatch.setattr(loading, "native_bf16", lambda device: native)
    assert Execution(device="cpu", dtype=dtype).stats_dtype() == want
