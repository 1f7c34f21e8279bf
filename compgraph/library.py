"""The named Cypher library (``queries/*.cypher``) and the shipped data (``ingest/``).

Each query file starts with comment lines::

    // name: top_heads
    // params: score (string, a head score property), limit (int)
    // returns: model, layer, head, score
    // <free text describing it>

In a checkout the folders are read from the repository root; an installed wheel
carries them in ``compgraph/_data``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from compgraph.errors import ConfigError

_PACKAGE = Path(__file__).resolve().parent
_HEADER = re.compile(r"^//\s*(\w+):\s*(.*)$")


def data_dir(name: str) -> Path:
    """``queries`` or ``ingest``: from the checkout, else from the installed package."""
    for candidate in (_PACKAGE.parent / name, _PACKAGE / "_data" / name):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"compgraph's {name}/ folder is missing from this installation")


@dataclass(frozen=True)
class NamedQuery:
    name: str
    text: str
    params: str
    returns: str
    description: str


def _parse(path: Path) -> NamedQuery:
    text = path.read_text()
    fields: dict[str, str] = {}
    description: list[str] = []
    for line in text.splitlines():
        if not line.startswith("//"):
            break
        match = _HEADER.match(line)
        if match and match.group(1) in ("name", "params", "returns"):
            fields[match.group(1)] = match.group(2).strip()
        else:
            description.append(line[2:].strip())
    return NamedQuery(
        name=fields.get("name", path.stem), text=text, params=fields.get("params", ""),
        returns=fields.get("returns", ""), description=" ".join(d for d in description if d),
    )


def named_queries() -> dict[str, NamedQuery]:
    queries = [_parse(p) for p in sorted(data_dir("queries").glob("*.cypher"))]
    out: dict[str, NamedQuery] = {}
    for query in queries:
        if query.name in out:
            raise ConfigError(f"two queries are named {query.name!r}")
        out[query.name] = query
    return out


def named_query(name: str) -> NamedQuery:
    queries = named_queries()
    if name not in queries:
        raise ConfigError(f"no named query {name!r}; known: {', '.join(sorted(queries))}")
    return queries[name]
