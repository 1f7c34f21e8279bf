"""Edge-patched forward passes (edge circuits and their faithfulness curves) on the real SmolLM2:
today's shift computation against the direct sum, in one process.

    python benchmarks/edge_patching.py [--tasks ioi,capitals] [--examples 64]

Each destination of an edge-patched pass receives Σ over the sources whose edge into it is
ablated of (ablated − current output). The **direct** path sums the ablated sources, every
source group below the destination for a small circuit; the default also keeps the
**complement**: the sum of every source the destination reads (one running prefix per pass)
minus the kept ones, whichever touches fewer source groups
(:class:`compgraph.effects.edges._EdgePatch`). Per task, on the
edge scores of edge attribution: the edge circuit (top 200, pruned; full, empty, circuit) and
its faithfulness curve (ten sizes), timed on each path with its own cache, and the largest
difference of the faithfulness values between the two (they are the same quantity summed in
another order: float noise). The machine load is printed before and after.
"""

from __future__ import annotations

import functools

from compgraph.effects import edges
from compgraph.effects.circuits import edge_circuit, faithfulness_curve
from smollm2_tasks import batches, print_load, start, timed


def circuit_and_curve(model, adapter, batch, metric, scores):
    cache: dict = {}
    circuit = edge_circuit(model, adapter, batch, metric, scores, cache=cache, n=200)
    curve = faithfulness_curve(model, adapter, batch, metric, scores, level="edge", cache=cache)
    return [circuit.faithfulness, *curve.faithfulness]


def main() -> None:
    args, loaded = start(__doc__, "ioi,capitals")
    model, adapter = loaded.model, loaded.adapter
    init = edges._EdgePatch.__init__
    for name, batch, metric in batches(loaded, args.tasks, args.examples):
        scores = edges.edge_attribution(model, adapter, batch, metric)
        t_new, new = timed(lambda: circuit_and_curve(model, adapter, batch, metric, scores))
        edges._EdgePatch.__init__ = functools.partialmethod(init, complement=False)
        try:
            t_old, old = timed(lambda: circuit_and_curve(model, adapter, batch, metric, scores))
        finally:
            edges._EdgePatch.__init__ = init
        diff = max(abs(a - b) for a, b in zip(new, old))
        print(f"{name:16s} {scores.height:,} edges  direct {t_old:6.1f} s  default {t_new:6.1f} s  "
              f"speed-up {t_old / t_new:4.2f}x  max |faithfulness difference| {diff:.1e}", flush=True)
    print_load("after")


if __name__ == "__main__":
    main()
