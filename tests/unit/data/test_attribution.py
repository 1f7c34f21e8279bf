"""Reading attribution graphs: every node-id variant, exact fields, and one-line refusals."""

from __future__ import annotations

import json

import pytest

from compgraph.data import attribution as fmt
from compgraph.errors import ConfigError
from tests.helpers.attribution import capital_graph, cantor, write


def test_cantor_pairing_round_trips_and_matches_the_formula():
    assert fmt.cantor_pair(3, 42) == (45 * 46) // 2 + 42 == 1077
    for x in range(30):
        for y in (0, 1, 7, 1000, 131071):
            assert fmt.cantor_pair(x, y) == cantor(x, y)
            assert fmt.cantor_unpair(cantor(x, y)) == (x, y)


@pytest.mark.parametrize("variant", ["current", "v051", "legacy", "neuronpedia"])
def test_every_variant_reads_to_the_same_nodes(variant):
    graph = fmt.parse_graph(capital_graph(variant=variant), "g.json")
    got = [(n.kind, n.layer, n.index, n.pos) for n in graph.nodes]
    assert got == [("embedding", None, 2, 0), ("embedding", None, 651, 1), ("embedding", None, 6037, 2),
                   ("embedding", None, 576, 3), ("feature", 1, 7, 2), ("feature", 3, 42, 3), ("feature", 3, 42, 2),
                   ("error", 2, None, 3), ("logit", None, 7127, 3), ("logit", None, 5134, 3)]
    paris = graph.nodes[8]
    assert (paris.token, paris.token_prob, paris.is_target_logit) == (" Paris", 0.812, True)
    assert graph.nodes[5].influence == 0.5 and graph.nodes[5].activation == 2.0
    assert graph.n_layers == 4 and graph.slug == "capital" and graph.scan == "gemma-2-2b"
    assert [(link.source, link.target, link.weight) for link in graph.links][:2] == [
        ("E_6037_2", "1_7_2", 2.0), ("1_7_2", "3_42_2", 1.5)]
    assert graph.generator == ("circuit-tracer 0.1.0" if variant == "neuronpedia" else None)


def test_a_feature_whose_id_does_not_say_its_index_is_read_from_its_cantor_id():
    doc = capital_graph()
    doc["nodes"][4]["node_id"] = "f-one"
    doc["links"] = [dict(link, source="f-one") if link["source"] == "1_7_2" else
                    dict(link, target="f-one") if link["target"] == "1_7_2" else link for link in doc["links"]]
    node = fmt.parse_graph(doc, "g.json").nodes[4]
    assert (node.kind, node.layer, node.index, node.feature) == ("feature", 1, 7, cantor(1, 7))


def test_compgraph_component_ids_round_trip():
    for kind, layer, index in (("head", 5, 3), ("neuron", 0, 1535), ("attn", 7, None), ("mlp", 0, None),
                               ("kv_head", 2, 1), ("expert", 1, 63)):
        feature = fmt.component_feature(kind, layer, index)
        ftype = next(t for t, k in fmt.COMPONENT_TYPES.items() if k == kind)
        node = {"node_id": "x", "feature": feature, "layer": str(layer), "ctx_idx": 0, "feature_type": ftype}
        doc = {"metadata": {"slug": "s", "prompt": ""}, "nodes": [node], "links": []}
        got = fmt.parse_graph(doc, "g.json").nodes[0]
        assert (got.kind, got.layer, got.index) == (kind, layer, index)
    # a head and a neuron of one layer and index never share the viewer's id
    assert fmt.component_feature("head", 3, 5) != fmt.component_feature("neuron", 3, 5)


def _broken(change):
    doc = capital_graph()
    change(doc)
    return doc


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("links"), "g.json: no 'links'"),
    (lambda d: d["metadata"].pop("slug"), "g.json: metadata.slug must be a non-empty string"),
    (lambda d: d["nodes"][5].pop("ctx_idx"), "g.json: node 5 (3_42_3): the node has no 'ctx_idx'"),
    (lambda d: d["nodes"][5].update(feature_type="lorsa"), "g.json: node 5 (3_42_3): unknown feature_type 'lorsa'"),
    (lambda d: d["nodes"][5].update(influence="high"), "g.json: node 5 (3_42_3): influence must be a finite number"),
    (lambda d: d["nodes"][6].update(node_id="3_42_3"), "g.json: node 6 (3_42_3): a second node with this node_id"),
    (lambda d: d["links"][0].update(target="9_9_9"), "g.json: link 0: the link's target '9_9_9' is no node of the file"),
    (lambda d: d["links"][1].pop("weight"), "g.json: link 1: the link has no 'weight'"),
    (lambda d: d["links"][1].update(input="x"), "g.json: link 1: input must be one of q, k, v, mlp, logits"),
])
def test_malformed_documents_are_refused_naming_the_problem(change, message):
    with pytest.raises(ConfigError) as err:
        fmt.parse_graph(_broken(change), "g.json")
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_link_inputs_are_the_edge_inputs_of_the_effects():
    from compgraph.effects.edges import INPUTS

    assert fmt.LINK_INPUTS == INPUTS


def test_files_of_a_folder_and_unreadable_files(tmp_path):
    write(tmp_path, capital_graph("b"), capital_graph("a"))
    (tmp_path / fmt.INDEX_FILE).write_text(json.dumps({"graphs": []}))
    assert [p.name for p in fmt.graph_files(tmp_path)] == ["a.json", "b.json"]
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad.json: not JSON"):
        fmt.read_graph(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="no such file or folder"):
        fmt.graph_files(tmp_path / "missing")
    with pytest.raises(ConfigError, match="no attribution-graph .json file"):
        fmt.graph_files(tmp_path / "sub" if (tmp_path / "sub").mkdir() is None else tmp_path)
