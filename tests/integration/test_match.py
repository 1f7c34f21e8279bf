"""``compgraph match`` on an embedded store: two models ingested, their neurons matched in
one command, the answer queried in one Cypher line; bad input refused with the store unchanged."""

from __future__ import annotations

import json

import pytest

from tests.helpers.models import TINY
from tests.integration.test_ingest import cli  # noqa: F401  (the fixture: the CLI on a store in tmp_path/kb)
from tests.unit.stages.test_match import _copy

UNITS = TINY["layers"] * TINY["d_mlp"]


def _rows(cli, cypher: str) -> list[dict]:
    result = cli("query", cypher, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def two_models(cli, tiny_dir, tmp_path):
    copy = _copy(tiny_dir, tmp_path / "copy")
    for path, name in ((tiny_dir, "zeta"), (copy, "alpha")):
        result = cli("ingest", str(path), "--name", name, "--extract", "tokens", "--device", "cpu")
        assert result.exit_code == 0, result.output
    return copy


def test_match_writes_both_directions_and_answers_in_one_cypher_line(cli, two_models):
    result = cli("match", "zeta", "alpha", "--match-positions", "512", "--match-top-k", "2", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "alpha: match/zeta [complete]" in result.output  # the run belongs to the name sorting first
    mutual = _rows(cli, "MATCH (a:Neuron {model: 'zeta'})-[m:MATCHES {rank: 0, mutual: true}]->"
                        "(b:Neuron {model: 'alpha'}) RETURN count(*) AS c")
    assert mutual == [{"c": UNITS}]
    assert _rows(cli, "MATCH ()-[m:MATCHES]->() RETURN count(*) AS c") == [{"c": 2 * UNITS * 2}]
    again = cli("match", "alpha", "zeta", "--match-positions", "512", "--match-top-k", "2", "--device", "cpu")
    assert "[already complete]" in again.output


def test_a_model_not_in_the_store_is_one_line_and_writes_nothing(cli, two_models):
    before = _rows(cli, "MATCH (n) RETURN count(n) AS c")
    result = cli("match", "zeta", "nope")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: no model 'nope' in the store at " + result.output.split(" at ", 1)[1].split(";")[0]
        + "; it holds: alpha, zeta"]
    assert _rows(cli, "MATCH (n) RETURN count(n) AS c") == before


def test_a_moved_model_is_found_with_source(cli, two_models, tmp_path):
    moved = tmp_path / "moved"
    two_models.rename(moved)
    lost = cli("match", "zeta", "alpha", "--match-positions", "256", "--device", "cpu")
    assert lost.exit_code == 1 and len(lost.output.strip().splitlines()) == 1
    found = cli("match", "zeta", "alpha", "--source", f"alpha={moved}", "--match-positions", "256",
                "--device", "cpu")
    assert found.exit_code == 0, found.output
    assert cli("match", "zeta", "alpha", "--source", "alpha").exit_code == 2  # not NAME=SPEC


def test_convergence_of_a_permuted_copy(cli, two_models, tmp_path):
    assert cli("match", "zeta", "alpha", "--match-positions", "512", "--device", "cpu").exit_code == 0
    result = cli("analyse", "convergence", "--models", "zeta,alpha", "--format", "json", "--out",
                 str(tmp_path / "fig"))
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert got["summary"]["units"] == UNITS and got["summary"]["mutual"] == 1.0
    assert got["summary"]["mean_score"] == pytest.approx(1.0, abs=2 ** -6)
    assert [row["match_depth"] for row in got["by_layer"]] == [0.0, 1.0]  # every unit's match is in its own layer
    assert (tmp_path / "fig" / "convergence_zeta_alpha.png").stat().st_size > 0
    none = cli("analyse", "convergence", "--models", "zeta,alpha", "--method", "decoding")
    assert none.exit_code == 1 and "no MATCHES by decoding from zeta's neurons to alpha; run `compgraph match zeta alpha --match-methods decoding` first" in none.output
    assert cli("match", "zeta", "alpha", "--match-methods", "decoding", "--device", "cpu").exit_code == 0
    decoded = cli("analyse", "convergence", "--models", "zeta,alpha", "--method", "decoding", "--format", "json")
    assert decoded.exit_code == 0, decoded.output
    summary = json.loads(decoded.stdout)["summary"]
    assert summary["units"] == UNITS and summary["same_top"] == 1.0 and summary["mean_score"] == 1.0


def test_kb_matches_describe_both_ends(two_models, cli, tmp_path):
    import compgraph

    assert cli("match", "zeta", "alpha", "--match-positions", "512", "--match-top-k", "2",
               "--device", "cpu").exit_code == 0
    with compgraph.open(str(tmp_path / "kb")) as kb:
        frame = kb.matches("alpha", "zeta")
    assert frame.height == UNITS * 2
    assert frame.columns == ["component", "kind", "layer", "index", "match", "dst_kind", "dst_layer", "dst_index",
                             "method", "score", "excess", "rank", "mutual", "same_top"]
    assert frame["same_top"].null_count() == frame.height  # the activation method has none
    best = frame.filter(frame["rank"] == 0)
    assert (best["layer"] == best["dst_layer"]).all() and set(best["dst_kind"]) == {"neuron"}
    assert best["component"].str.starts_with("alpha/").all() and best["match"].str.starts_with("zeta/").all()


def test_cross_reuse_of_a_head_permuted_copy_finds_every_matched_member_in_the_other_circuit(cli, tiny_dir, tmp_path):
    """Two models that compute the same function with their heads in another order: their
    circuits for a task hold corresponding heads, so every head of A's circuit has its best
    match in B's circuit; blocks have no matches and are not counted."""
    from tests.unit.stages.test_match import _head_copy, _sharpened

    sharp = _sharpened(tiny_dir, tmp_path / "sharp")
    copy = _head_copy(sharp, tmp_path / "heads")
    for path, name in ((sharp, "zeta"), (copy, "alpha")):
        result = cli("ingest", str(path), "--name", name, "--tasks", "induction", "--top-n", "3",
                     "--no-edges", "--device", "cpu")
        assert result.exit_code == 0, result.output
    assert cli("match", "zeta", "alpha", "--match-components", "head", "--match-positions", "256",
               "--device", "cpu").exit_code == 0
    result = cli("analyse", "cross-reuse", "--models", "zeta,alpha", "--tasks", "induction", "--trials", "200",
                 "--format", "json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["tasks"]
    members = _rows(cli, "MATCH (c:Circuit {model: 'zeta', task: 'induction', level: 'node'})-[:INCLUDES]->(h:Head) "
                         "RETURN count(h) AS c")[0]["c"]
    assert row["members"] == 3 and row["matched"] == members and members >= 1
    assert row["reused"] == members and row["share"] == 1.0
    def layers(model):
        return [r["layer"] for r in _rows(cli, f"MATCH (c:Circuit {{model: '{model}', task: 'induction', level: 'node'}})"
                                               "-[:INCLUDES]->(h:Head) RETURN h.layer AS layer")]

    in_b = layers("alpha")  # the null keeps B's circuit heads per layer; each match is in its own layer
    want = sum(in_b.count(layer) / TINY["heads"] for layer in layers("zeta")) / members
    assert row["expected"] == pytest.approx(want)
    none = cli("analyse", "cross-reuse", "--models", "zeta,alpha")  # random models pass no task
    assert none.exit_code == 1 and "no task has a node circuit in both zeta and alpha" in none.output
