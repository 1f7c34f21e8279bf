"""The ``mlp_in`` site (the MLP's input after its norm) on every family, against the
norm module applied to the residual it reads, computed here without compgraph's hooks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_hooks import CASES, build, ids, sub  # noqa: E402

from compgraph.models import weights  # noqa: E402
from compgraph.models.hooks import capture, overwrite  # noqa: E402


@pytest.mark.parametrize("case", list(CASES))
def test_mlp_in_is_the_pre_mlp_norm_of_the_residual_it_reads(case):
    model, adapter = build(case)
    parallel = adapter.is_parallel(model.config)
    read = "resid_pre" if parallel else "resid_mid"
    with torch.no_grad(), capture(model, adapter, [(read, 1), ("mlp_in", 1)]) as got:
        model(ids())
    resid, mlp_in = got[(read, 1)][0], got[("mlp_in", 1)][0]
    assert mlp_in.shape == resid.shape
    if adapter.name == "bert":  # post-norm: the MLP reads resid_mid as it is (already normed)
        torch.testing.assert_close(mlp_in, resid, rtol=0, atol=0)
        return
    with torch.no_grad():
        want = sub(model, adapter, 1, adapter.mlp_norm)(resid)
    torch.testing.assert_close(mlp_in, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", ["llama", "gpt2"])
def test_overwriting_mlp_in_feeds_the_mlp_and_leaves_the_residual(case):
    model, adapter = build(case)
    mlp = weights.module(model, f"{adapter.layers}.1.mlp")
    x = torch.randn(2, 7, model.config.hidden_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), overwrite(model, adapter, ("mlp_in", 1), lambda v: x), \
            capture(model, adapter, [("mlp_out", 1), ("resid_mid", 1)]) as patched:
        model(ids())
    with torch.no_grad(), capture(model, adapter, [("resid_mid", 1)]) as clean:
        model(ids())
        want = mlp(x)
    torch.testing.assert_close(patched[("mlp_out", 1)][0], want, rtol=0, atol=1e-6)
    assert torch.equal(patched[("resid_mid", 1)][0], clean[("resid_mid", 1)][0])
