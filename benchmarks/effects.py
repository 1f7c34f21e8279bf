"""The default effects method (verified) against exhaustive activation patching, on the real SmolLM2.

    python benchmarks/effects.py                                  # the four main-job tasks, CPU
    python benchmarks/effects.py --tasks ioi --examples 32        # one task, fewer prompts
    python benchmarks/effects.py --device cuda --json out.json    # on a GPU when one is lent

In one process, for each task, on its first ``--examples`` prompts (the main job's 64 by
default), over every head, MLP block and attention block (330 components on SmolLM2):

- **exhaustive**: :func:`~compgraph.effects.activation.activation_patching` of every one
  (the ``--method activation`` path), timed;
- **default**: :func:`~compgraph.effects.verified.verified_patching` as the effects stage
  calls it (n = 20, margin 1/4, circuit kinds heads and MLP blocks): attribution of every
  one, activation patching of the candidates, timed;
- ``speedup`` = exhaustive seconds ÷ default seconds;
- ``recall`` = |exhaustive top-20 ∩ default top-20| ÷ 20, where a top-20 is the 20
  components of largest |effect|: the exhaustive run's over all components, the default's
  over the components it measured;
- ``spearman_measured``: Spearman's rank correlation between the default's measured
  effects and the exhaustive ones of the same components (they are the same measurement,
  so this checks the plumbing: 1 up to float noise); ``spearman_all``: over every
  component, the default's best estimate (measured, else attribution) against exhaustive;
  ``spearman_attribution``: attribution alone against exhaustive;
- ``missed_factor``: τ* ÷ the largest unmeasured |estimate| (how many times attribution
  must have underestimated a component it left out for that component to belong in the
  top-20), and whether a true top-20 member was left unmeasured.

The machine load (``os.getloadavg``, 1 minute) is printed before and after: torch's timings
on shared cores vary with it; both methods run in the same process, one after the other.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import polars as pl
import torch

from compgraph.data.tasks import compute_metric, encode_task, load_task
from compgraph.effects.activation import activation_patching
from compgraph.effects.verified import best, missing_factor, verified_patching
from compgraph.models import loading

TASKS = ("induction", "ioi", "capitals", "colored_objects")
KINDS = ("head", "mlp", "attn")
CIRCUIT = ("head", "mlp")  # the circuit's kinds, as in the effects stage
TOP = 20


def spearman(a: list[float], b: list[float]) -> float:
    """Pearson correlation of the ranks (average ranks for ties); NaN with fewer than 2 values."""
    if len(a) < 2:
        return float("nan")
    ra, rb = (pl.Series(v).rank("average").cast(pl.Float64) for v in (a, b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / ((ra * ra).sum() ** 0.5 * (rb * rb).sum() ** 0.5))


def _keys(frame: pl.DataFrame) -> list[tuple]:
    return list(zip(frame["component"].to_list(), frame["layer"].to_list(), frame["index"].to_list()))


def top(frame: pl.DataFrame, k: int = TOP) -> set:
    """The k components of largest |effect| (ties: frame order)."""
    ranked = frame.with_row_index("_i").sort([pl.col("effect").abs(), "_i"], descending=[True, False]).head(k)
    return set(_keys(ranked))


def compare(exhaustive: pl.DataFrame, got) -> dict:
    """The figures of one task (module docstring) from the exhaustive frame and a Verified."""
    truth = dict(zip(_keys(exhaustive), exhaustive["effect"].to_list()))
    measured = dict(zip(_keys(got.measured), got.measured["effect"].to_list()))
    order = _keys(exhaustive)
    estimates = dict(zip(_keys(got.estimated), got.estimated["effect"].to_list()))
    every = dict(zip(_keys(best(got)), best(got)["effect"].to_list()))
    want = top(exhaustive)
    return {
        "components": len(order), "measured": len(measured),
        "recall": len(want & top(got.measured)) / len(want),
        "spearman_measured": spearman([measured[k] for k in measured], [truth[k] for k in measured]),
        "spearman_all": spearman([every[k] for k in order], [truth[k] for k in order]),
        "spearman_attribution": spearman([estimates[k] for k in order], [truth[k] for k in order]),
        "missed_factor": missing_factor(got),
        "top_left_unmeasured": sorted(str(k) for k in want - set(measured)),
    }


def run_task(loaded, name: str, examples: int, n: int, margin: float, dump: str | None = None) -> dict:
    task = load_task(name).head(examples)
    data = encode_task(task, loaded.tokenizer)

    def metric(logits, answer, wrong):
        return compute_metric(task.metric, logits, answer, wrong)

    model, adapter = loaded.model, loaded.adapter
    start = time.perf_counter()
    exhaustive = activation_patching(model, adapter, data, metric, kinds=KINDS)
    middle = time.perf_counter()
    got = verified_patching(model, adapter, data, metric, kinds=KINDS, n=n, margin=margin, circuit_kinds=CIRCUIT)
    end = time.perf_counter()
    seconds = {"exhaustive_s": middle - start, "default_s": end - middle}
    if dump:
        for part, frame in (("exhaustive", exhaustive), ("estimated", got.estimated), ("measured", got.measured)):
            frame.write_parquet(f"{dump}/{name}_{part}.parquet")
    return {"task": name, "examples": data.n, "width": data.width, **seconds,
            "speedup": seconds["exhaustive_s"] / seconds["default_s"], **compare(exhaustive, got)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--n", type=int, default=TOP, help="the default's circuit size (its top-n verified)")
    parser.add_argument("--margin", type=float, default=None, help="the default's margin [the stage's default]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--dump", help="also write each task's frames (exhaustive, estimated, measured) here")
    args = parser.parse_args()
    from compgraph.effects.verified import DEFAULT_MARGIN

    margin = DEFAULT_MARGIN if args.margin is None else args.margin
    print(f"load before: {os.getloadavg()[0]:.2f}; torch threads {torch.get_num_threads()}", flush=True)
    loaded = loading.load("packaged:smollm2", device=args.device)
    rows = []
    for name in args.tasks.split(","):
        rows.append(run_task(loaded, name, args.examples, args.n, margin, args.dump))
        print(json.dumps(rows[-1]), flush=True)
    table = pl.DataFrame(rows).select("task", "width", "exhaustive_s", "default_s", "speedup", "measured", "recall",
                                      "spearman_measured", "spearman_all", "spearman_attribution", "missed_factor")
    with pl.Config(tbl_rows=-1, tbl_cols=-1, float_precision=3):
        print(table)
    print(f"load after: {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
