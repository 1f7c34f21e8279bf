"""``compgraph atlas build`` on an embedded store: two tiny models ingested alike and matched
in one command, built again without recomputing anything; a bad recipe refused before the
store changes."""

from __future__ import annotations

import json

from tests.helpers.models import TINY
from tests.integration.test_ingest import cli, rows  # noqa: F401  (the fixture: the CLI on a store in tmp_path/kb)
from tests.unit.stages.test_match import _copy


def _recipe(tmp_path, tiny_dir, match_extra: str = "") -> str:
    copy = _copy(tiny_dir, tmp_path / "copy")
    path = tmp_path / "atlas.toml"
    path.write_text(f"""
[ingest]
extract = ["neurons", "heads"]
max_tokens = 2048

[match]
match_methods = ["activation", "decoding"]
match_positions = 256
{match_extra}
[[models]]
name = "zeta"
source = "{tiny_dir}"

[[models]]
name = "alpha"
source = "{copy}"
""")
    return str(path)


def test_an_atlas_builds_every_model_and_pair_and_a_second_build_recomputes_nothing(cli, tiny_dir, tmp_path):
    recipe = _recipe(tmp_path, tiny_dir)
    result = cli("atlas", "build", recipe, "--device", "cpu")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("atlas: ")]
    assert lines == ["atlas: ingest zeta", "atlas: ingest alpha", "atlas: match alpha zeta"]
    models = rows(cli, "MATCH (m:Model) RETURN m.name AS name ORDER BY name")
    assert [m["name"] for m in models] == ["alpha", "zeta"]
    units = TINY["layers"] * TINY["d_mlp"]
    heads = rows(cli, "MATCH (h:Head) RETURN count(h) AS c")
    assert heads == [{"c": 2 * TINY["layers"] * TINY["heads"]}]
    matched = rows(cli, "MATCH (a:Neuron {model: 'alpha'})-[m:MATCHES {rank: 0, mutual: true}]->(b:Neuron {model: 'zeta'}) "
                        "RETURN m.method AS method, count(*) AS c ORDER BY method")
    assert matched == [{"method": "activation", "c": units}, {"method": "decoding", "c": units}]
    again = cli("atlas", "build", recipe, "--device", "cpu")
    assert again.exit_code == 0, again.output
    statuses = [line for line in again.stdout.splitlines() if line.strip() and not line.startswith("atlas: ")]
    assert statuses and all("[already complete]" in line or "[skipped]" in line for line in statuses), again.stdout


def test_a_bad_option_in_a_later_job_is_refused_before_the_store_changes(cli, tiny_dir, tmp_path):
    recipe = _recipe(tmp_path, tiny_dir, match_extra="match_top_k = 0\n")  # the last job's option
    result = cli("atlas", "build", recipe, "--device", "cpu")
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert "atlas.toml: match alpha zeta: --match-top-k must be at least 1, not 0" in line
    assert not (tmp_path / "kb").exists() or json.loads(cli("info", "--format", "json").stdout)["nodes"] == {}
