"""Edge-patched forward passes (edge circuits and their faithfulness curves) on the real SmolLM2:
today's shift computation against the previous one, in one process.

    python benchmarks/edge_patching.py [--tasks ioi,capitals] [--examples 64]

Each destination of an edge-patched pass receives Σ over the sources whose edge into it is
ablated of (ablated − current output), or the sum of every source it reads minus the kept
ones, whichever touches fewer sources, as matrix products of mask columns with a buffer of
one row per source (:class:`compgraph.effects.edges._EdgePatch`). The products are bound by
reading the buffer. **Today**: a layer's q, k, v and MLP destinations take one product over
the sources before the layer's heads, and the MLP adds the layer's own heads in a second,
small one. The **baseline** (``merge=False``, the previous path): q, k and v take one
product and the MLP another over every source it reads, so the buffer rows before each
layer are read twice. Per task, on the edge scores of edge attribution: the edge circuit
(top 200, pruned; full, empty, circuit) and its faithfulness curve (ten sizes), timed on
each path with its own cache, and the largest difference of the faithfulness values between
the two (the same sums in another order: float noise). The machine load is printed before
and after.
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
    today = edges._EdgePatch.__init__
    for name, batch, metric in batches(loaded, args.tasks, args.examples):
        scores = edges.edge_attribution(model, adapter, batch, metric)
        t_new, new = timed(lambda: circuit_and_curve(model, adapter, batch, metric, scores))
        edges._EdgePatch.__init__ = functools.partialmethod(today, merge=False)
        try:
            t_old, old = timed(lambda: circuit_and_curve(model, adapter, batch, metric, scores))
        finally:
            edges._EdgePatch.__init__ = today
        diff = max(abs(a - b) for a, b in zip(new, old))
        print(f"{name:16s} {scores.height:,} edges  baseline {t_old:6.1f} s  today {t_new:6.1f} s  "
              f"speed-up {t_old / t_new:4.2f}x  max |faithfulness difference| {diff:.1e}", flush=True)
    print_load("after")


if __name__ == "__main__":
    main()
