"""The named Cypher library (``queries/*.cypher``).

Each query file starts with comment lines::

    // name: top_heads
    // params: score (string, a head score property), limit (int)
    // returns: model, layer, head, score
    // <free text describing it>

The folder is found by :func:`compgraph.data.shipped.data_dir` (the checkout's
``queries/``, or the installed wheel's copy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from compgraph.data.shipped import data_dir
from compgraph.errors import ConfigError

_HEADER = re.compile(r"^//\s*(\w+):\s*(.*)$")


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
