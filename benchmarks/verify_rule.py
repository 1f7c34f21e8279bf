"""The verified method's rule replayed on the frames ``benchmarks/effects.py --dump DIR`` keeps.

    python benchmarks/effects.py --dump DIR                   # first: the exhaustive and estimated frames
    python benchmarks/verify_rule.py DIR                      # the rule at margins 1/4, 1/3, 1/2
    python benchmarks/verify_rule.py DIR --with-ig            # also EAP-IG (5 steps) as the estimate, and
                                                              # the larger of the two (loads SmolLM2)

No patching runs: the rule (:mod:`compgraph.effects.verified`, steps 2–4, its own pure
functions) is replayed with every "measurement" read from the exhaustive frame (the same
activation-patching effect the method would measure). Per task and variant:

- ``measured``: how many components the rule measures;
- ``recall``: |exhaustive top-20 ∩ top-20 of the measured| ÷ 20;
- ``cost``: Σ over the measured of (L − layer) ÷ the same sum over every component: the
  share of the exhaustive run's layer passes (a patched pass starts at its component's
  layer), the attribution and base runs left out.

What changes the trade is read off here before a full benchmark run costs its half hour.
"""

from __future__ import annotations

import argparse
import os

import polars as pl

from compgraph.effects.verified import select, top

TASKS = ("induction", "ioi", "capitals", "colored_objects")
TOP = 20


def replay(estimates: list[float], truth: list[float], kinds: list[str], layers: list[int], n_layers: int,
           n: int = TOP, margin: float = 0.25, chunk: int = 8, circuit=("head", "mlp")) -> dict:
    """Steps 2–4 of the verified rule with ``truth`` as every measurement (module doc)."""
    among = [i for i, k in enumerate(kinds) if k in circuit]
    measured = select(estimates, lambda picks: [truth[i] for i in picks], n=n, margin=margin, among=among,
                      chunk=chunk)
    want = set(top(truth, n))
    got = set(sorted(measured, key=lambda i: (-abs(measured[i]), i))[:n])
    passes = [n_layers - layer for layer in layers]
    return {"measured": len(measured), "recall": len(want & got) / n,
            "cost": sum(passes[i] for i in measured) / sum(passes)}


def _ig(directory: str, tasks, examples: int) -> None:
    from compgraph.data.tasks import compute_metric, encode_task, load_task
    from compgraph.effects.attribution import attribution_patching
    from compgraph.models import loading

    loaded = loading.load("packaged:smollm2", device="cpu")
    for name in tasks:
        task = load_task(name).head(examples)
        data = encode_task(task, loaded.tokenizer)

        def metric(logits, answer, wrong, task=task):
            return compute_metric(task.metric, logits, answer, wrong)

        attribution_patching(loaded.model, loaded.adapter, data, metric, kinds=("head", "mlp", "attn"),
                             method="eap-ig", steps=5).write_parquet(f"{directory}/{name}_ig.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--margins", default="0.25,0.3333,0.5")
    parser.add_argument("--with-ig", action="store_true", help="compute EAP-IG estimates where none are kept")
    parser.add_argument("--examples", type=int, default=64, help="the prompts per task the dump was made on")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    if args.with_ig:
        _ig(args.directory, [t for t in tasks if not os.path.exists(f"{args.directory}/{t}_ig.parquet")], args.examples)
    rows = []
    for name in tasks:
        exhaustive = pl.read_parquet(f"{args.directory}/{name}_exhaustive.parquet")
        keys = exhaustive.select("component", "layer", "index")
        truth, kinds, layers = exhaustive["effect"].to_list(), exhaustive["component"].to_list(), \
            exhaustive["layer"].to_list()
        n_layers = max(layers) + 1
        variants = {}
        estimated = pl.read_parquet(f"{args.directory}/{name}_estimated.parquet")
        if not estimated.select("component", "layer", "index").equals(keys):
            raise SystemExit(f"{name}: the estimated frame's components differ from the exhaustive one's")
        for margin in (float(m) for m in args.margins.split(",")):
            variants[f"attribution ρ={margin:.2f}"] = (estimated["effect"].to_list(), margin)
        ig_path = f"{args.directory}/{name}_ig.parquet"
        if os.path.exists(ig_path):
            ig = pl.read_parquet(ig_path)
            if not ig.select("component", "layer", "index").equals(keys):
                raise SystemExit(f"{name}: the EAP-IG frame's components differ from the exhaustive one's")
            attribution, integrated = estimated["effect"].to_list(), ig["effect"].to_list()
            variants["eap-ig ρ=0.25"] = (integrated, 0.25)
            variants["max(attribution, eap-ig) ρ=0.25"] = (
                [a if abs(a) >= abs(b) else b for a, b in zip(attribution, integrated)], 0.25)
        for variant, (estimates, margin) in variants.items():
            rows.append({"task": name, "variant": variant,
                         **replay(estimates, truth, kinds, layers, n_layers, margin=margin)})
    with pl.Config(tbl_rows=-1, tbl_cols=-1, float_precision=3, fmt_str_lengths=40):
        print(pl.DataFrame(rows))


if __name__ == "__main__":
    main()
