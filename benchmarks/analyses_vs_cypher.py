"""Check `compgraph analyse` on a real store against a recomputation from raw Cypher.

    python benchmarks/analyses_vs_cypher.py --store ./compgraph-kb --model smollm2-135m \
        --tasks ioi,colored_objects [--modularity] [--null-samples 10]

The analyses run as users run them (the CLI, ``--format json``, in a subprocess); the
recomputation reads the store with plain Cypher and computes each figure with a few lines
of Python here, sharing no code with :mod:`compgraph.analysis`:

- overlap of two tasks' node circuits (method ``activation``): the two member sets from
  ``(:Circuit)-[:INCLUDES]->(component)``, then n_a, n_b, n_shared, Jaccard and the
  overlap coefficient, over all members and per component kind;
- reuse: per component, the number of tasks whose node circuit includes it; the Jaccard
  matrix over every pair of tasks;
- modularity (``--modularity``; runs ``analyse modularity --write-back``): Q of the
  written-back communities on the graph read by Cypher — per ordered pair of components
  the largest |weight| (``CONNECTS.weight``, ``CAUSES.effect``), both directions of a pair
  summed, self-loops dropped — by ``networkx.community.modularity``.

Prints every compared figure side by side and exits 1 on any disagreement (1e-9).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

NODE_CIRCUIT = "MATCH (c:Circuit {model: $model, level: 'node', method: 'activation'})-[:INCLUDES]->(x) "
KIND = ("CASE WHEN x:Neuron THEN 'neuron' WHEN x:Head THEN 'head' WHEN x:Expert THEN 'expert' "
        "WHEN x:Feature THEN 'feature' ELSE 'site' END")


def cli(*args: str) -> tuple[object, float]:
    start = time.perf_counter()
    done = subprocess.run(["compgraph", "analyse", *args, "--format", "json"], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"compgraph analyse {' '.join(args)} failed: {done.stderr.strip()}")
    return json.loads(done.stdout), time.perf_counter() - start


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return (a is not None and b is not None and math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9
    return a == b


class Checker:
    def __init__(self):
        self.bad = 0

    def row(self, label: str, ours, theirs) -> None:
        ok = same(ours, theirs)
        self.bad += not ok
        print(f"  {label:<48} analyse {ours!s:<22} cypher {theirs!s:<22} {'ok' if ok else 'DIFFERENT'}")


def circuit_sets(kb, model: str) -> dict[str, dict[str, str]]:
    """task -> {component uid: kind}, from raw Cypher."""
    rows = kb.query(NODE_CIRCUIT + f"RETURN c.task AS task, x.uid AS uid, {KIND} AS kind", model=model)
    out: dict[str, dict[str, str]] = {}
    for task, uid, kind in rows.iter_rows():
        out.setdefault(task, {})[uid] = kind
    return out


def check_overlap(kb, model: str, a: str, b: str, store: str, check: Checker) -> None:
    got, seconds = cli("overlap", "--model", model, "--tasks", f"{a},{b}", "--store", store)
    print(f"overlap {a} / {b} ({seconds:.1f} s)")
    sets = circuit_sets(kb, model)
    A, B = sets[a], sets[b]
    groups = {("all", "all"): (set(A), set(B))}
    for kind in sorted(set(A.values()) | set(B.values())):
        groups[("kind", kind)] = ({u for u, k in A.items() if k == kind}, {u for u, k in B.items() if k == kind})
    rows = {(r["group_by"], r["group"]): r for r in got}
    for (by, group), (sa, sb) in groups.items():
        r = rows[(by, group)]
        shared, union = len(sa & sb), len(sa | sb)
        for name, want in (("n_a", len(sa)), ("n_b", len(sb)), ("n_shared", shared),
                           ("jaccard", ratio(shared, union)), ("overlap_coef", ratio(shared, min(len(sa), len(sb))))):
            check.row(f"{by}={group} {name}", r[name], want)


def check_reuse(kb, model: str, store: str, check: Checker) -> None:
    got, seconds = cli("reuse", "--model", model, "--store", store)
    print(f"reuse ({seconds:.1f} s); permutation test: {got['test']}")
    sets = circuit_sets(kb, model)
    counts: dict[str, int] = {}
    for members in sets.values():
        for uid in members:
            counts[uid] = counts.get(uid, 0) + 1
    theirs = {r["component"]: r["n_tasks"] for r in got["reuse"]}
    check.row("components in any circuit", len(theirs), len(counts))
    check.row("components in 2+ circuits", sum(n > 1 for n in theirs.values()), sum(n > 1 for n in counts.values()))
    check.row("n_tasks per component all equal", theirs == counts, True)
    for row in got["matrix"]:
        for other in sets:
            sa, sb = set(sets[row["task"]]), set(sets[other])
            check.row(f"jaccard {row['task']} / {other}", row[other], ratio(len(sa & sb), len(sa | sb)))


def raw_q(kb, model: str, rel: str, weight: str, prop: str) -> tuple[float, int]:
    import networkx as nx

    rows = kb.query(f"MATCH (a {{model: $model}})-[e:{rel}]->(b {{model: $model}}) "
                    f"WHERE a.{prop} IS NOT NULL AND b.{prop} IS NOT NULL "
                    f"RETURN a.uid AS a, b.uid AS b, e.{weight} AS w, a.{prop} AS ca, b.{prop} AS cb", model=model)
    strongest: dict[tuple[str, str], float] = {}
    label: dict[str, int] = {}
    for a, b, w, ca, cb in rows.iter_rows():
        label[a], label[b] = ca, cb
        if a != b:
            strongest[(a, b)] = max(strongest.get((a, b), 0.0), abs(w if w is not None else 1.0))
    H = nx.Graph()
    for (a, b), w in strongest.items():
        H.add_edge(a, b, weight=H[a][b]["weight"] + w if H.has_edge(a, b) else w)
    groups: dict[int, set] = {}
    for node in H:
        groups.setdefault(label[node], set()).add(node)
    return nx.community.modularity(H, groups.values(), weight="weight"), len(strongest)


def check_modularity(kb, model: str, store: str, null_samples: int, check: Checker) -> None:
    got, seconds = cli("modularity", "--model", model, "--store", store, "--write-back",
                       "--null-samples", str(null_samples))
    print(f"modularity ({seconds:.1f} s)")
    for row in got:
        rel = row["graph"]
        weight = "weight" if rel == "CONNECTS" else "effect"
        q, edges = raw_q(kb, model, rel, weight, f"community_{rel.lower()}")
        print(f"  {rel}: {row['nodes']} nodes, {row['edges']} edges, {row['communities']} communities, "
              f"Q {row['q']:.4f}, null {row['null_mean']:.4f} ± {row['null_std']:.4f}, z {row['z']:.1f}")
        check.row(f"{rel} component pairs with an edge", row["edges"], edges)
        check.row(f"{rel} Q of the written-back communities", round(row["q"], 9), round(q, 9))


class Store:
    """Raw Cypher on the store, opened per query: the CLI subprocesses need it closed
    (an embedded store admits one process at a time)."""

    def __init__(self, location: str):
        self.location = location

    def query(self, cypher: str, **params):
        import compgraph

        with compgraph.open(self.location) as kb:
            return kb.query(cypher, **params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="./compgraph-kb")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tasks", default="ioi,colored_objects")
    parser.add_argument("--modularity", action="store_true")
    parser.add_argument("--null-samples", type=int, default=10)
    args = parser.parse_args()
    check, kb = Checker(), Store(args.store)
    a, b = args.tasks.split(",")
    check_overlap(kb, args.model, a, b, args.store, check)
    check_reuse(kb, args.model, args.store, check)
    if args.modularity:
        check_modularity(kb, args.model, args.store, args.null_samples, check)
    print("all figures agree" if not check.bad else f"{check.bad} figure(s) differ")
    sys.exit(1 if check.bad else 0)


if __name__ == "__main__":
    main()
