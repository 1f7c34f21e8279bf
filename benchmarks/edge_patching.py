"""Edge-patched forward passes (edge circuits and their faithfulness curves) on the real SmolLM2:
today's shift computation against the previous one, in one process.

    python benchmarks/edge_patching.py [--tasks ioi,capitals] [--examples 64]

Each destination of an edge-patched pass receives Σ over the sources whose edge into it is
ablated of (ablated − current output), or the sum of every source it reads minus the kept
ones, whichever touches fewer sources. **Today**
(:class:`compgraph.effects.edges._EdgePatch`): every source's diff is written once into a
buffer of one row per source, and a layer's q, k and v destinations get their shifts as one
matrix product of their mask columns with the buffer rows (the MLP and the logits one each).
The **baseline** is the previous summation, rebuilt below: one einsum per source group
(embeddings, a layer's heads, a layer's MLP) and destination group, each group's diff kept
in a dict. Per task, on the edge scores of edge attribution: the edge circuit (top 200,
pruned; full, empty, circuit) and its faithfulness curve (ten sizes), timed on each path
with its own cache, and the largest difference of the faithfulness values between the two
(the same sums in another order: float noise). The machine load is printed before and after.
"""

from __future__ import annotations

import torch

from compgraph.effects import edges
from compgraph.effects.circuits import edge_circuit, faithfulness_curve
from smollm2_tasks import batches, print_load, start, timed


def circuit_and_curve(model, adapter, batch, metric, scores):
    cache: dict = {}
    circuit = edge_circuit(model, adapter, batch, metric, scores, cache=cache, n=200)
    curve = faithfulness_curve(model, adapter, batch, metric, scores, level="edge", cache=cache)
    return [circuit.faithfulness, *curve.faithfulness]


def _group_diff(patch, rows: slice, site, layer) -> torch.Tensor:
    """[k, n, T, d]: one source group's ablated − current output, once per pass."""
    diffs = patch.__dict__.setdefault("group_diffs", {})
    if site not in diffs:
        cur = patch.current[site]
        diff = (patch.target[site] - cur).expand(cur.shape)
        diffs[site] = (torch.einsum("nthe,hed->hntd", diff, patch.w_o[layer]) if site[0] == "attn_head_z"
                       else diff.unsqueeze(0))
    return diffs[site]


def _grouped(patch, w: torch.Tensor) -> torch.Tensor | None:
    total = None
    for rows, site, layer in patch.groups:
        if bool(w[rows].any()):
            diff = _group_diff(patch, rows, site, layer)
            part = torch.einsum("sj,sntd->jntd", w[rows].to(diff.dtype), diff)
            total = part if total is None else total + part
    return total


def _running_prefix(patch, stop: int) -> torch.Tensor:
    """Σ of every diff of the groups within the first ``stop`` sources, extended from the last call."""
    done, total = patch.__dict__.get("group_prefix", (0, None))
    if stop < done:
        done, total = 0, None
    for rows, site, layer in patch.groups:
        if done <= rows.start and rows.stop <= stop:
            part = _group_diff(patch, rows, site, layer).sum(0, keepdim=True)
            total = part if total is None else total + part
    patch.group_prefix = (stop, total)
    return total


def grouped_delta(patch, cols: slice) -> torch.Tensor | None:
    """The baseline: the direct or the complement sum, group by group."""
    w, kept, stops = patch.outside[:, cols], patch.kept[:, cols], patch.stops[cols]
    if not bool(w.any()):
        return None
    direct = sum(bool(w[rows].any()) for rows, _, _ in patch.groups)
    indirect = 1 + sum(bool(kept[rows].any()) for rows, _, _ in patch.groups)
    if bool((stops < 0).any()) or bool((stops != stops[0]).any()) or direct <= indirect:
        return _grouped(patch, w)
    total = _running_prefix(patch, int(stops[0]))
    minus = _grouped(patch, kept)
    return total if minus is None else total - minus


def main() -> None:
    args, loaded = start(__doc__, "ioi,capitals")
    model, adapter = loaded.model, loaded.adapter
    today = edges._EdgePatch.delta
    for name, batch, metric in batches(loaded, args.tasks, args.examples):
        scores = edges.edge_attribution(model, adapter, batch, metric)
        t_new, new = timed(lambda: circuit_and_curve(model, adapter, batch, metric, scores))
        edges._EdgePatch.delta = grouped_delta
        try:
            t_old, old = timed(lambda: circuit_and_curve(model, adapter, batch, metric, scores))
        finally:
            edges._EdgePatch.delta = today
        diff = max(abs(a - b) for a, b in zip(new, old))
        print(f"{name:16s} {scores.height:,} edges  baseline {t_old:6.1f} s  today {t_new:6.1f} s  "
              f"speed-up {t_old / t_new:4.2f}x  max |faithfulness difference| {diff:.1e}", flush=True)
    print_load("after")


if __name__ == "__main__":
    main()
