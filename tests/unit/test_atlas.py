"""Atlas recipes: what a recipe becomes (each model's job, each pair's match) and every way a
recipe is refused, one line naming the file and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from compgraph import atlas
from compgraph.errors import ConfigError

RECIPE = """
[ingest]
extract = ["neurons"]
tasks = ["induction"]
max_tokens = 4096

[match]
match_components = ["neuron", "head"]
match_positions = 256

[[models]]
name = "zeta"
source = "/models/z"

[[models]]
name = "alpha"
source = "/models/a"
ingest = { max_tokens = 2048, batch_size = 2 }

[[models]]
name = "mid"
source = "/models/m"
"""


def _recipe(tmp_path, text=RECIPE):
    path = tmp_path / "atlas.toml"
    path.write_text(text)
    return atlas.load_recipe(path)


def test_jobs_are_each_models_ingest_then_each_pair_owned_by_the_name_sorting_first(tmp_path):
    got = atlas.jobs(_recipe(tmp_path), device="cpu")
    assert [label for label, _ in got] == ["ingest zeta", "ingest alpha", "ingest mid", "match alpha mid",
                                           "match alpha zeta", "match mid zeta"]
    zeta, alpha = got[0][1], got[1][1]
    assert (zeta.model, zeta.name, zeta.extract) == ("/models/z", "zeta", ("neurons",))
    assert zeta.options == {"tasks": ("induction",), "max_tokens": 4096}
    assert alpha.options["max_tokens"] == 2048 and alpha.execution.batch_size == 2  # the model's own options win
    assert zeta.execution.device == "cpu" and zeta.execution.batch_size == 8
    pair = got[4][1]
    assert (pair.model, pair.name, pair.extract) == ("/models/a", "alpha", ("match",))
    assert pair.options == {"match_components": ("neuron", "head"), "match_positions": 256,
                            "match_with": "zeta", "match_source": "/models/z"}


def test_without_a_match_table_no_pair_is_matched(tmp_path):
    text = RECIPE.replace("[match]\nmatch_components = [\"neuron\", \"head\"]\nmatch_positions = 256\n", "")
    assert [label for label, _ in atlas.jobs(_recipe(tmp_path, text))] == ["ingest zeta", "ingest alpha", "ingest mid"]


@pytest.mark.parametrize("text, problem", [
    ("[[models]]\nname = 'a'\n", "model 1 needs a source (a non-empty string)"),
    ("[ingest]\nextract = ['neurons']\n", "no [[models]]; the atlas needs at least one model"),
    ("[modles]\n[[models]]\nname = 'a'\nsource = 'x'\n", "unknown table(s) modles"),
    ("[[models]]\nname = 'a'\nsource = 'x'\nsorce = 'y'\n", "model 1 has unknown key(s) sorce"),
    ("[[models]]\nname = 'a'\nsource = 'x'\n[[models]]\nname = 'a'\nsource = 'y'\n", "model name(s) given twice: a"),
    ("[match]\nmatch_with = 'b'\n[[models]]\nname = 'a'\nsource = 'x'\n", "[match] sets match_with"),
    ("ingest = 3\n[[models]]\nname = 'a'\nsource = 'x'\n", "[ingest] must be a table of options"),
    ("[ingest]\nname = 'b'\n[[models]]\nname = 'a'\nsource = 'x'\n", "[ingest] sets name, which the atlas sets"),
    ("[[models]]\nname = 'a'\nsource = 'x'\ningest = { match_with = 'c' }\n", "model a sets match_with"),
    ("[[models]\n", "not TOML"),
])
def test_a_bad_recipe_is_one_line_naming_the_file(tmp_path, text, problem):
    with pytest.raises(ConfigError) as error:
        _recipe(tmp_path, text)
    message = str(error.value)
    assert message.startswith(str(tmp_path / "atlas.toml") + ": ") and problem in message and "\n" not in message


def test_an_unknown_option_names_the_job(tmp_path):
    recipe = _recipe(tmp_path, RECIPE.replace("max_tokens = 4096", "max_tokenz = 4096"))
    with pytest.raises(ConfigError, match=r"atlas.toml: model zeta: unknown option\(s\) max_tokenz"):
        atlas.jobs(recipe)


def test_a_missing_recipe_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="nope.toml: no such recipe file"):
        atlas.load_recipe(tmp_path / "nope.toml")


def test_the_shipped_recipe_names_the_packaged_models():
    shipped = atlas.load_recipe(Path(__file__).parents[2] / "ingest" / "atlas.toml")
    assert [m.source for m in shipped.models] == ["packaged:smollm2", "packaged:qwen2.5-coder-0.5b",
                                                  "packaged:qwen2.5-coder-1.5b"]
    assert len(atlas.jobs(shipped)) == 6
