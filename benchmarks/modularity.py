"""The modularity null models, on one store, in one process: 0.1.0's, independent samples and
today's chained default.

    python benchmarks/modularity.py --store ./compgraph-kb --model smollm2-135m [--null-samples 10] [--with-0.1.0]

For the weights-based (CONNECTS) and the causal (CAUSES) graph of the model, read once as
frames (:meth:`compgraph.kb.KB.component_tables`):

- **then** (0.1.0, with ``--with-0.1.0``: 13 minutes on SmolLM2): Leiden through the
  ``leidenalg`` package (``pip install leidenalg``), null graphs rewired with 10 swap trials
  per edge, one process;
- **independent**: igraph's C Leiden, every null graph 2 swap trials per edge from the
  observed graph (``step=None``: the default before chains), one process per core;
- **now** (the default of :func:`compgraph.analysis.modularity.null_model_z`): the same
  Leiden, the null graphs drawn in one chain per core, at least 2 (2 trials per edge to a
  chain's first sample, 1 more per edge to each next).

Each reports Q, the null mean and std, z and its wall seconds. z's own sampling noise: the
std of ``n`` null samples has a relative standard error of about ``1/sqrt(2(n-1))`` (24 %
at n = 10), so two z-scores agree within their noise when their ratio lies within about
``1 ± 2·sqrt(2)/sqrt(2(n-1))``; ``agree`` reports that check against the baseline
(independent samples), and ``mean_shift_std`` the difference of the null means in units
of the baseline's std (how far a cheaper null's mean moved: about ±0.9 is the noise of
two means of 10 samples each, 2·sqrt(2/10)).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time

import numpy as np

from compgraph import kb as kb_module
from compgraph.analysis import modularity as M


def _leidenalg_membership(g, *, seed: int) -> list[int]:
    import leidenalg

    return list(leidenalg.find_partition(g, leidenalg.ModularityVertexPartition, weights="weight",
                                         n_iterations=M.LEIDEN_ITERATIONS, seed=seed).membership)


def then(view: M.Undirected, n: int, seed: int) -> dict:
    """0.1.0's null model: leidenalg, 10 swap trials per edge, sequential."""
    rng = random.Random(seed)
    g = view.graph
    q = M._igraph_q(g, _leidenalg_membership(g, seed=seed), 1.0)
    samples = []
    for _ in range(n):
        r = M._rewired(g, rng.randrange(2**31), trials=10)
        samples.append(M._igraph_q(r, _leidenalg_membership(r, seed=rng.randrange(2**31)), 1.0))
    mean, std, z = M._z(q, samples)
    return {"q": q, "mean": mean, "std": std, "z": z}


def independent(view: M.Undirected, n: int, seed: int) -> dict:
    """Every sample 2 trials per edge from the observed graph."""
    got = M.null_model_z(view, n=n, seed=seed, step=None, workers=os.cpu_count() or 1)
    return {k: got[k] for k in ("q", "mean", "std", "z")}


def now(view: M.Undirected, n: int, seed: int) -> dict:
    got = M.null_model_z(view, n=n, seed=seed, workers=os.cpu_count() or 1)
    return {k: got[k] for k in ("q", "mean", "std", "z")}


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return {**out, "seconds": round(time.perf_counter() - start, 1)}


def agree(z_a: float, z_b: float, n: int) -> bool:
    """Whether two z-scores differ by less than twice the relative noise of a null std."""
    noise = 2 * math.sqrt(2) / math.sqrt(2 * (n - 1))
    return abs(z_a / z_b - 1) <= noise if z_b else z_a == z_b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--null-samples", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--with-0.1.0", dest="then", action="store_true",
                        help="also run 0.1.0's null model (leidenalg, 10 trials per edge: minutes)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    with kb_module.open(args.store) as kb:
        for rel in ("CONNECTS", "CAUSES"):
            start = time.perf_counter()
            nodes, edges = kb.component_tables(args.model, edges=(rel,), isolates=False)
            view = M.from_frames(nodes["uid"].to_list(), edges)
            read = time.perf_counter() - start
            n = args.null_samples
            base = timed(lambda: independent(view, n, args.seed))
            row = {"graph": rel, "pairs": view.graph.ecount(), "read_s": round(read, 1), "independent": base}
            if args.then:
                old = timed(lambda: then(view, n, args.seed))
                row |= {"then": old, "independent_agrees_with_then": agree(base["z"], old["z"], n)}
            new = timed(lambda: now(view, n, args.seed))
            row |= {"now": new, "agree": agree(new["z"], base["z"], n),
                    "mean_shift_std": round((new["mean"] - base["mean"]) / base["std"], 2) if base["std"] else None,
                    "speedup": round(base["seconds"] / new["seconds"], 1)}
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
    print(f"load after: {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
