"""The self-contained circuit page."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess

import polars as pl
import pytest

from compgraph.analysis.html import circuit_html
from compgraph.errors import ConfigError

MEMBERS = pl.DataFrame({"component": ["m/L0/H1", "m/L1/N7", "m/mlp</script>", "m/L1/H0"],
                        "kind": ["head", "neuron", "site", "head"], "layer": [0, 1, None, 1],
                        "score": [0.5, -1.25, math.nan, 2.0]})
EDGES = pl.DataFrame({"src": ["m/L0/H1", "m/L0/H1", "m/L0/H1"], "dst": ["m/L1/N7", "m/L1/H0", "elsewhere"],
                      "weight": [0.3, -0.7, 1.0], "rel": ["CAUSES", "CONNECTS", "CAUSES"]})


def page_data(text: str) -> dict:
    raw = re.search(r'<script id="circuit-data" type="application/json">(.*?)</script>', text, re.S).group(1)
    return json.loads(raw)


def test_page_is_written_and_self_contained(tmp_path):
    out = circuit_html(MEMBERS, tmp_path / "c" / "ioi.html", edges=EDGES, title="ioi <node>")
    text = out.read_text(encoding="utf-8")
    assert out == tmp_path / "c" / "ioi.html"
    assert text.startswith("<!DOCTYPE html>")
    for uid in ["m/L0/H1", "m/L1/N7", "m/L1/H0"]:
        assert uid in text
    assert "m/mlp\\u003c/script\\u003e" in text  # a uid cannot end the script
    assert not re.search(r"<script[^>]*\bsrc\s*=", text)
    assert not re.search(r"<link[^>]*\bhref\s*=\s*[\"']?https?:", text)
    assert "ioi &lt;node&gt;" in text


def test_page_data(tmp_path):
    data = page_data(circuit_html(MEMBERS, tmp_path / "ioi.html", edges=EDGES).read_text(encoding="utf-8"))
    assert [n["id"] for n in data["nodes"]] == ["m/L0/H1", "m/L1/N7", "m/mlp</script>", "m/L1/H0"]
    assert data["nodes"][2] == {"id": "m/mlp</script>", "kind": "site", "layer": None, "score": None}
    # the edge to a non-member is left out
    assert data["edges"] == [{"src": "m/L0/H1", "dst": "m/L1/N7", "weight": 0.3, "rel": "CAUSES"},
                             {"src": "m/L0/H1", "dst": "m/L1/H0", "weight": -0.7, "rel": "CONNECTS"}]


def test_page_without_edges_and_bad_frame(tmp_path):
    data = page_data(circuit_html(MEMBERS, tmp_path / "x.html").read_text(encoding="utf-8"))
    assert data["edges"] == [] and len(data["nodes"]) == 4
    with pytest.raises(ConfigError, match="component"):
        circuit_html(pl.DataFrame({"uid": ["a"]}), tmp_path / "y.html")


DOM_STUB = """
const made = [];
function element(tag) {
  const e = { tag, attrs: {}, children: [], dataset: {}, style: {}, listeners: {}, textContent: "",
    classList: { toggle() {}, remove() {} },
    setAttribute(k, v) { this.attrs[k] = v; }, appendChild(c) { this.children.push(c); return c; },
    addEventListener(name, fn) { this.listeners[name] = fn; } };
  made.push(e);
  return e;
}
const byId = { "view": element("svg"), "tip": element("div"), "legend": element("div"),
               "circuit-data": { textContent: require("fs").readFileSync(process.argv[2], "utf8") } };
global.document = { getElementById: (id) => byId[id], createElementNS: (ns, tag) => element(tag),
                    createElement: (tag) => element(tag), createTextNode: (t) => ({ text: t }) };
require(process.argv[3]);
const svg = byId["view"];
const count = (tag) => svg.children.filter((c) => c.tag === tag).length;
const circles = svg.children.filter((c) => c.tag === "circle");
circles[0].listeners.mousemove({ clientX: 1, clientY: 2 });
console.log(JSON.stringify({ circles: count("circle"), lines: count("line"), width: svg.attrs.width,
  tip: byId["tip"].textContent, dashed: svg.children.filter((c) => c.attrs["stroke-dasharray"]).length,
  red: svg.children.filter((c) => c.attrs.stroke === "#b2182b").length }));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="no node to run the page's script")
def test_page_script_runs(tmp_path):
    """The inline script, run by node against a minimal DOM stand-in, draws every node and edge."""
    text = circuit_html(MEMBERS, tmp_path / "ioi.html", edges=EDGES).read_text(encoding="utf-8")
    (tmp_path / "data.json").write_text(json.dumps(page_data(text)), encoding="utf-8")
    (tmp_path / "page.js").write_text(re.search(r"<script>(.*?)</script>", text, re.S).group(1), encoding="utf-8")
    (tmp_path / "stub.js").write_text(DOM_STUB, encoding="utf-8")
    done = subprocess.run(["node", str(tmp_path / "stub.js"), str(tmp_path / "data.json"), str(tmp_path / "page.js")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["circles"] == 4 and got["lines"] == 2 and got["dashed"] == 1 and got["red"] == 1
    assert got["tip"].startswith("uid: m/L0/H1\nkind: head\nlayer: 0\nscore: 0.5")
