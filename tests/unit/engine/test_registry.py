"""The stage registry, and the README's example stage run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from compgraph import schema
from compgraph.ingest import IngestConfig
from compgraph.engine import registry
from compgraph.engine.stage import Frames, Stage
from compgraph.errors import ConfigError
from compgraph.ingest import ingest
from compgraph.models import loading, params
from compgraph.store.memory import MemoryStore

README = Path(__file__).resolve().parents[3] / "README.md"


class _Named(Stage):
    version = 1

    def __init__(self, name, requires=()):
        self.name, self.requires = name, requires

    def shards(self, info, config, execution):
        return ["all"]

    def run(self, ctx, config, shard):
        return Frames()


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry, "_STAGES", dict(registry.stages()))
    return registry


def test_duplicates_and_unversioned_stages_are_refused(clean_registry):
    with pytest.raises(ValueError, match="already registered"):
        clean_registry.register(_Named("neurons"))
    bad = _Named("x")
    bad.version = "1"
    with pytest.raises(ValueError, match="integer version"):
        clean_registry.register(bad)


def test_plan_adds_requirements_in_registration_order_and_refuses_cycles(clean_registry):
    assert [s.name for s in clean_registry.plan(["heads", "neurons"])] == ["tokens", "neurons", "heads"]
    assert [s.name for s in clean_registry.plan(["experts"])] == ["tokens", "experts"]
    clean_registry.register(_Named("a", requires=("b",)))
    clean_registry.register(_Named("b", requires=("a",)))
    with pytest.raises(ConfigError, match="cycle"):
        clean_registry.plan(["a"])
    with pytest.raises(ConfigError, match="no stage 'zzz'; known: tokens, neurons"):
        clean_registry.plan(["zzz"])


def test_the_readme_example_stage_runs_as_written(clean_registry, tiny_dir):
    text = README.read_text()
    block = re.search(r"### Adding a stage.*?```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # registers "norms"
    loaded = loading.load(str(tiny_dir), device="cpu")
    store = MemoryStore()
    report = ingest(store, IngestConfig.of(str(tiny_dir), name="tiny", extract=("norms",), device="cpu"),
                    loaded=loaded)
    assert [(s.stage, s.status) for s in report.stages] == [("norms", "complete")]
    heads = store.nodes(schema.HEAD).sort("layer", "head")
    w_o = params.attention(loaded.model, loaded.adapter, 1).W_O.detach()
    got = heads.filter(heads["layer"] == 1)["w_o_norm"].to_list()
    assert got == pytest.approx([float(torch.linalg.norm(w_o[h])) for h in range(w_o.shape[0])], rel=1e-6)


def test_a_stage_option_named_like_a_job_setting_is_refused(monkeypatch):
    """A stage option called ``device`` (an execution setting) would be routed to the
    execution and never reach its stage: the job refuses to start."""
    from compgraph.errors import RegistryError

    real = registry.options()
    monkeypatch.setattr(registry, "options", lambda: {**real, "device": real["top_k"]})
    with pytest.raises(RegistryError, match="device take the name of a job or execution setting"):
        IngestConfig(model="m")
