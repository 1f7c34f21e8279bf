"""A circuit as one self-contained HTML file: no network, no library, open it anywhere.

The page holds the circuit as JSON (every ``<``, ``>`` and ``&`` escaped, so no value can
end the script) and a short inline script that draws it as SVG: a layered layout
(x = layer, sites without a layer on the left; within a layer, members by decreasing
``|score|``), nodes coloured by kind with an area growing with ``|score|``, edges
coloured by the sign of their weight (blue positive, red negative) with a width growing
with ``|weight|`` (dashed: ``CONNECTS``, solid: anything else). Hovering a node shows
its uid, kind, layer and score and highlights its edges.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from string import Template
from typing import Any

import polars as pl

from compgraph.errors import ConfigError

KIND_COLOURS = {"head": "#1f77b4", "neuron": "#ff7f0e", "expert": "#2ca02c", "feature": "#9467bd",
                "site": "#8c564b"}
OTHER_COLOUR = "#7f7f7f"


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinities: they become null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _nodes(members: pl.DataFrame) -> list[dict[str, Any]]:
    cols = {"component", "kind", "layer", "score"}
    if "component" not in members.columns:
        raise ConfigError(f"a circuit frame needs a 'component' column, got {members.columns}")
    rows = members.select([c for c in members.columns if c in cols]).unique("component", keep="first",
                                                                            maintain_order=True).to_dicts()
    return [{"id": str(r["component"]), "kind": r.get("kind"), "layer": r.get("layer"),
             "score": _clean(r.get("score"))} for r in rows]


def _edges(edges: pl.DataFrame | None, ids: set[str]) -> list[dict[str, Any]]:
    if edges is None or edges.height == 0:
        return []
    rows = edges.to_dicts()
    return [{"src": str(r["src"]), "dst": str(r["dst"]), "weight": _clean(r.get("weight")), "rel": r.get("rel")}
            for r in rows if str(r["src"]) in ids and str(r["dst"]) in ids]


def _script_json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def circuit_html(members: pl.DataFrame, path: str | Path, *, edges: pl.DataFrame | None = None,
                 title: str = "circuit") -> Path:
    """Write the circuit (``members``: component, kind, layer, score; ``edges``: src, dst,
    weight and optionally rel, only those between members drawn) to ``path``."""
    nodes = _nodes(members)
    data = {"nodes": nodes, "edges": _edges(edges, {n["id"] for n in nodes}), "colours": KIND_COLOURS,
            "other": OTHER_COLOUR}
    page = _PAGE.substitute(title=html.escape(title), data=_script_json(data))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


_PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${title}</title>
<style>
  body { font: 13px sans-serif; margin: 12px; }
  #tip { position: fixed; pointer-events: none; background: #fff; border: 1px solid #999;
         padding: 4px 6px; display: none; white-space: pre; }
  #legend span { margin-right: 12px; }
  svg line.dim { opacity: 0.08; }
</style>
</head>
<body>
<h3>${title}</h3>
<div id="legend"></div>
<svg id="view" xmlns="http://www.w3.org/2000/svg"></svg>
<div id="tip"></div>
<script id="circuit-data" type="application/json">${data}</script>
<script>
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("circuit-data").textContent);
  var NS = "http://www.w3.org/2000/svg";
  var svg = document.getElementById("view"), tip = document.getElementById("tip");
  function colour(kind) { return data.colours[kind] || data.other; }
  function el(name, attrs) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    return e;
  }
  // layered layout: one column per layer, members by decreasing |score|
  var columns = {};
  data.nodes.forEach(function (n) {
    var key = (n.layer === null || n.layer === undefined) ? -1 : n.layer;
    (columns[key] = columns[key] || []).push(n);
  });
  var keys = Object.keys(columns).map(Number).sort(function (a, b) { return a - b; });
  var tallest = Math.max.apply(null, keys.map(function (k) { return columns[k].length; }).concat([1]));
  var W = Math.max(400, 110 * keys.length + 80), H = Math.max(200, 34 * tallest + 60);
  svg.setAttribute("width", W); svg.setAttribute("height", H);
  var maxScore = Math.max.apply(null, data.nodes.map(function (n) { return Math.abs(n.score || 0); }).concat([1e-12]));
  var pos = {};
  keys.forEach(function (k, i) {
    var col = columns[k].sort(function (a, b) { return Math.abs(b.score || 0) - Math.abs(a.score || 0); });
    col.forEach(function (n, j) {
      pos[n.id] = { x: 60 + i * 110, y: 40 + (j + 0.5) * (H - 60) / col.length };
    });
    var label = el("text", { x: 60 + i * 110, y: 18, "text-anchor": "middle" });
    label.textContent = k < 0 ? "-" : "L" + k;
    svg.appendChild(label);
  });
  var maxWeight = Math.max.apply(null, data.edges.map(function (e) { return Math.abs(e.weight || 0); })
                                                .concat([1e-12]));
  var lines = data.edges.map(function (e) {
    var w = e.weight || 0, a = pos[e.src], b = pos[e.dst];
    var line = el("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, stroke: w < 0 ? "#b2182b" : "#2166ac",
                            "stroke-width": 0.5 + 4.5 * Math.abs(w) / maxWeight, "stroke-opacity": 0.7 });
    if (e.rel === "CONNECTS") { line.setAttribute("stroke-dasharray", "4 3"); }
    line.dataset.src = e.src; line.dataset.dst = e.dst;
    svg.appendChild(line);
    return line;
  });
  data.nodes.forEach(function (n) {
    var p = pos[n.id], r = 4 + 10 * Math.sqrt(Math.abs(n.score || 0) / maxScore);
    var dot = el("circle", { cx: p.x, cy: p.y, r: r, fill: colour(n.kind), stroke: "#333", "stroke-width": 0.5 });
    var text = "uid: " + n.id + "\\nkind: " + n.kind + "\\nlayer: " + n.layer + "\\nscore: " + n.score;
    var t = el("title", {}); t.textContent = text; dot.appendChild(t);
    dot.addEventListener("mousemove", function (ev) {
      tip.textContent = text; tip.style.display = "block";
      tip.style.left = (ev.clientX + 12) + "px"; tip.style.top = (ev.clientY + 12) + "px";
      lines.forEach(function (l) {
        l.classList.toggle("dim", l.dataset.src !== n.id && l.dataset.dst !== n.id);
      });
    });
    dot.addEventListener("mouseleave", function () {
      tip.style.display = "none";
      lines.forEach(function (l) { l.classList.remove("dim"); });
    });
    svg.appendChild(dot);
  });
  var legend = document.getElementById("legend");
  Object.keys(data.colours).forEach(function (kind) {
    var s = document.createElement("span");
    s.innerHTML = "&#9679; "; s.style.color = data.colours[kind];
    s.appendChild(document.createTextNode(kind));
    legend.appendChild(s);
  });
  legend.appendChild(document.createTextNode("edges: blue +, red -, width |weight|, dashed CONNECTS"));
}());
</script>
</body>
</html>
""")
