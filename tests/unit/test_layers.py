"""The package's layers: every import points down, none goes round in a circle.

Imports are read from the source (``ast``: module level, inside functions and under
``TYPE_CHECKING`` alike), so a lazy import counts as much as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import compgraph

ROOT = Path(compgraph.__file__).parent

LAYERS: list[set[str]] = [
    {"errors"},                                           # the ground floor: the error tree,
    {"schema", "render", "options", "cache", "allocator"},  # the vocabulary, output, options, the cache folder, malloc
    {"data", "models", "store"},                          # data, models, stores
    {"library", "extract", "weights"},                    # named queries; algorithms
    {"effects"},                                          # algorithms: causal effects
    {"dictionaries"},                                     # algorithms (use extract, weights, effects)
    {"engine"},                                           # the job engine
    {"stages"},                                           # one module per stage
    {"kb", "analysis", "ingest"},                         # the Python API and pure analyses
    {"atlas", "attribution"},                             # recipes of several jobs; graphs in, circuits out
    {"cli"},                                              # click commands
    {"__init__"},                                         # the package's own lazy entry points
]
ALGORITHMS = ("extract", "effects", "weights", "dictionaries")


def _name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    name = ".".join(parts)
    return name.removesuffix(".__init__")


MODULES = {_name(p): p for p in ROOT.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """The compgraph modules ``path`` imports (resolved to modules that exist)."""
    me = _name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rsplit(".", 1)[0] if "." in name else ""
            if name.startswith("compgraph") and name not in (me, "compgraph"):
                found.add(name)
    return found


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def unit(module: str) -> str:
    """The top-level part of compgraph a module belongs to (``compgraph.stages.rows`` -> ``stages``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def rank(module: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit(module) in layer)


def test_every_part_of_the_package_has_a_layer():
    assert {unit(m) for m in MODULES} <= set().union(*LAYERS)


def test_imports_point_down_the_layers():
    upward = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() for d in deps
                    if unit(d) != unit(m) and rank(d) >= rank(m))
    assert not upward, upward


def test_algorithm_packages_import_neither_the_engine_nor_the_stages():
    wrong = sorted(f"{m} -> {d}" for m, deps in GRAPH.items() if unit(m) in ALGORITHMS
                   for d in deps if unit(d) in ("engine", "stages", "cli", "kb", "analysis", "ingest"))
    assert not wrong, wrong


def test_no_import_circles():
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(GRAPH.get(node, ())):
            if state.get(dep) == 1:
                circles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not circles, circles


def test_the_graph_is_read_from_the_source():
    """The reader itself: a known import of each kind is found."""
    assert "compgraph.engine.stage" in GRAPH["compgraph.stages.neurons"]
    assert "compgraph.models.params" in GRAPH["compgraph.extract.heads"]  # ``from compgraph.models import params``
    assert "compgraph.schema" in GRAPH["compgraph.stages.rows"]
