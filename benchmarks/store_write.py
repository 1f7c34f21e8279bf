"""Write throughput through the GraphStore interface vs. the engine's own best bulk path.

    python benchmarks/store_write.py [--nodes 200000] [--edges 1000000] [--backend embedded,bolt,neo4j]

Nodes carry a few scalars and a float list; edges two floats. Each backend measures
its baseline and the interface on fresh, empty databases in the same process:
- embedded: baseline = ArcadeDB's GraphBatch (create_vertices / new_edges) on a
  second database; interface = EmbeddedStore.merge_nodes / merge_edges (MERGE semantics).
- bolt: baseline = the bare neo4j driver sending compgraph's own CREATE statements
  (``compgraph.store.cypher``) in 10k-row write transactions, with none of compgraph's
  checks, on the same schema (without the uid constraint's index every MATCH is a scan
  and the rate collapses); interface = BoltStore.merge_nodes /
  merge_edges (endpoint checks, existence checks, MERGE semantics). Server: ArcadeDB's
  Bolt plugin.
- neo4j: the same two paths on the Neo4j at ``NEO4J_URI`` (``NEO4J_USER``,
  ``NEO4J_PASSWORD``; ``tests/helpers/neo4j_server.py`` starts one): the baseline is
  Neo4j's own online bulk path, batched ``UNWIND $rows CREATE`` in 10k-row transactions.
  Then its offline bulk path: what compgraph wrote is exported (``compgraph export
  --format neo4j-import``, timed apart) and loaded by ``neo4j-admin database import full``
  into a fresh database (the importer of the jars in ``--neo4j-home``, default ``.neo4j``
  as ``.ci/run`` assembles it); its own phase timings give nodes/s (node import) and
  edges/s (relationship import + linking), and the whole import's wall time is printed.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.helpers

from compgraph import schema  # noqa: E402
from compgraph.store import cypher  # noqa: E402
from tests.helpers.stores import wipe  # noqa: E402

BATCH = 10_000


def make_data(n_nodes: int, n_edges: int, seed: int = 0):
    rng = random.Random(seed)
    uids = [schema.neuron_uid("bench", i // 1000, i % 1000) for i in range(n_nodes)]
    nodes = pl.DataFrame({
        "uid": uids, "model": ["bench"] * n_nodes, "layer": [i // 1000 for i in range(n_nodes)],
        "index": [i % 1000 for i in range(n_nodes)], "act_mean": [rng.random() for _ in range(n_nodes)],
        "vec": [[rng.random() for _ in range(8)] for _ in range(n_nodes)],
    })
    src = [rng.randrange(n_nodes) for _ in range(n_edges)]
    dst = [rng.randrange(n_nodes) for _ in range(n_edges)]
    edges = pl.DataFrame({
        "src": [uids[i] for i in src], "dst": [uids[i] for i in dst], "kind": ["bench"] * n_edges,
        "weight": [rng.random() for _ in range(n_edges)], "score": [rng.random() for _ in range(n_edges)],
    }).unique(subset=["src", "dst", "kind"], keep="last")
    return nodes, edges


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interface(store, nodes, edges) -> tuple[float, float]:
    t_nodes = timed(lambda: store.merge_nodes(schema.NEURON, nodes))
    t_edges = timed(lambda: store.merge_edges(schema.CONNECTS, edges))
    got = store.query("MATCH (:Neuron)-[e:CONNECTS]->(:Neuron) RETURN count(e) AS c")["c"][0]
    assert got == edges.height, (got, edges.height)
    return t_nodes, t_edges


def embedded_baseline(root: Path, nodes, edges) -> tuple[float, float]:
    from compgraph.store.embedded import EmbeddedStore

    # The store sets up the JVM, types and constraints; the timed part is the engine alone.
    with EmbeddedStore(root) as store:
        db = store._db
        records = nodes.to_dicts()
        rids: list[str] = []

        def create_nodes():
            with db.graph_batch(batch_size=BATCH + 1) as batch:
                for start in range(0, len(records), BATCH):
                    rids.extend(batch.create_vertices("Component~Neuron", records[start:start + BATCH]))

        t_nodes = timed(create_nodes)
        rid_of = dict(zip(nodes["uid"].to_list(), rids))
        src = [rid_of[u] for u in edges["src"].to_list()]
        dst = [rid_of[u] for u in edges["dst"].to_list()]
        props = edges.select("kind", "weight", "score").to_dicts()

        def create_edges():
            with db.graph_batch(batch_size=BATCH + 1) as batch:
                for start in range(0, len(src), BATCH):
                    batch.new_edges(src[start:start + BATCH], "CONNECTS", dst[start:start + BATCH],
                                    props[start:start + BATCH])

        return t_nodes, timed(create_edges)


def bolt_baseline(uri: str, database: str, auth, nodes, edges) -> tuple[float, float]:
    import neo4j

    with neo4j.GraphDatabase.driver(uri, auth=auth) as driver, driver.session(database=database) as session:
        node_rows = nodes.to_dicts()
        node_rows = [{"uid": r.pop("uid"), "props": r} for r in node_rows]
        edge_rows = [{"src": r["src"], "dst": r["dst"], "props": {k: r[k] for k in ("kind", "weight", "score")}}
                     for r in edges.to_dicts()]

        def send(statement, rows):
            for start in range(0, len(rows), BATCH):
                session.execute_write(lambda tx, chunk=rows[start:start + BATCH]: tx.run(statement, rows=chunk).consume())

        t_nodes = timed(lambda: send(cypher.create_nodes(schema.NEURON), node_rows))
        t_edges = timed(lambda: send(cypher.create_edges(schema.CONNECTS), edge_rows))
    wipe(uri, database, auth)
    return t_nodes, t_edges


def offline_import(store, home: Path, tmp: Path, n_nodes: int, n_edges: int) -> None:
    """Export the store, load it with neo4j-admin's importer, print the rates (module docstring)."""
    import re

    from compgraph.store.export import write_neo4j_import
    from tests.helpers.neo4j_server import bulk_import

    t_export = timed(lambda: write_neo4j_import(store, tmp / "import"))
    start = time.perf_counter()
    log = bulk_import(home, tmp / "imported", tmp / "import", heap="2g")
    wall = time.perf_counter() - start

    def phase(name: str) -> float:
        match = re.search(rf"{name} COMPLETED in ((?:\d+ms ?|\d+[hms] ?)+)", log)
        if match is None:
            return 0.0
        units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
        return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|h|m|s)", match.group(1)))

    nodes_s = phase("Node import")
    edges_s = phase("Relationship import") + phase("Relationship linking")
    print(f"neo4j     export to CSV {t_export:.1f} s; neo4j-admin import {wall:.1f} s wall "
          f"(JVM start and post-processing included)", flush=True)
    print(f"neo4j     nodes {n_nodes:>9,d}  neo4j-admin import {n_nodes / nodes_s:>9,.0f}/s", flush=True)
    print(f"neo4j     edges {n_edges:>9,d}  neo4j-admin import {n_edges / edges_s:>9,.0f}/s", flush=True)


def report(name: str, n_nodes: int, n_edges: int, base, mine) -> None:
    rows = [("nodes", n_nodes, base[0], mine[0]), ("edges", n_edges, base[1], mine[1])]
    for what, n, b, m in rows:
        print(f"{name:9s} {what:5s} {n:>9,d}  engine bulk {n / b:>9,.0f}/s  compgraph {n / m:>9,.0f}/s  "
              f"ratio {b / m:5.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=200_000)
    parser.add_argument("--edges", type=int, default=1_000_000)
    parser.add_argument("--backend", default="embedded,bolt")
    parser.add_argument("--neo4j-home", type=Path, default=Path(__file__).resolve().parents[1] / ".neo4j",
                        help="The assembled Neo4j jars (tests/helpers/neo4j_server.py) whose importer runs.")
    args = parser.parse_args()
    nodes, edges = make_data(args.nodes, args.edges)
    print(f"{nodes.height:,} nodes, {edges.height:,} distinct edges; ratio = compgraph / engine bulk rate", flush=True)
    backends = args.backend.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "embedded" in backends:
            from compgraph.store.embedded import EmbeddedStore

            base = embedded_baseline(tmp / "baseline", nodes, edges)
            with EmbeddedStore(tmp / "compgraph") as store:
                mine = interface(store, nodes, edges)
            report("embedded", nodes.height, edges.height, base, mine)
        if "bolt" in backends:
            from tests.helpers.bolt_server import DATABASE, PASSWORD, arcade_bolt_server

            from compgraph.store.bolt import BoltStore

            with arcade_bolt_server(tmp / "server") as uri:
                # the schema (uid constraints and their indexes) first, as for the interface
                BoltStore(uri, database=DATABASE, user="root", password=PASSWORD).close()
                base = bolt_baseline(uri, DATABASE, ("root", PASSWORD), nodes, edges)
                with BoltStore(uri, database=DATABASE, user="root", password=PASSWORD) as store:
                    mine = interface(store, nodes, edges)
            report("bolt", nodes.height, edges.height, base, mine)
        if "neo4j" in backends:
            import os

            from compgraph.store.bolt import BoltStore

            uri, database = os.environ["NEO4J_URI"], os.environ.get("NEO4J_DATABASE")
            auth = (os.environ.get("NEO4J_USER", "neo4j"), os.environ["NEO4J_PASSWORD"])
            BoltStore(uri, database=database, user=auth[0], password=auth[1]).close()  # the schema first
            wipe(uri, database, auth)
            base = bolt_baseline(uri, database, auth, nodes, edges)
            with BoltStore(uri, database=database, user=auth[0], password=auth[1]) as store:
                mine = interface(store, nodes, edges)
                report("neo4j", nodes.height, edges.height, base, mine)
                offline_import(store, args.neo4j_home, tmp, nodes.height, edges.height)
            wipe(uri, database, auth)


if __name__ == "__main__":
    main()
