"""Activation patching against attribution patching on the real SmolLM2, one task.

    python benchmarks/effects.py                       # 32 IOI prompts, CPU
    python benchmarks/effects.py --device cuda         # on a GPU when one is lent
    python benchmarks/effects.py --neuron-sample 0     # skip the neuron activation-patching sample
    python benchmarks/effects.py --edges               # also edge attribution and two measured circuits

Measured in one process, on the first ``--examples`` prompts of ``ingest/tasks/ioi.jsonl``
(left-padded, logit difference at the last position):

- heads: all 270 heads by batched activation patching (noising, corrupt values) and by
  attribution patching (one forward + backward); wall time, heads per second, the
  speed-up, Spearman's rank correlation and the overlap of the top-20 by |effect|;
- neurons: all 46,080 neurons by attribution patching, and a random sample of
  ``--neuron-sample`` neurons by activation patching, timed and extrapolated to all
  (the whole set would take hours on 2 CPU cores); Spearman on the sample;
- the machine load (``os.getloadavg``, 1-minute) before, after each activation-patching
  run and at the end: other people share these cores, so each attribution pass is run
  ``--repeats`` times and the fastest run is reported (with the median).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from compgraph.data import tasks
from compgraph.effects.components import list_components
from compgraph.effects.activation import activation_patching
from compgraph.effects.attribution import attribution_patching
from compgraph.models import loading


def spearman(a: list[float], b: list[float]) -> float:
    """Pearson correlation of the ranks (average ranks for ties)."""
    def ranks(values):
        t = torch.tensor(values, dtype=torch.float64)
        order = t.argsort()
        r = torch.empty_like(t)
        r[order] = torch.arange(len(values), dtype=torch.float64)
        for v in t.unique():  # ties: average rank
            same = t == v
            if same.sum() > 1:
                r[same] = r[same].mean()
        return r
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def top_overlap(a: list[float], b: list[float], k: int = 20) -> int:
    k = min(k, len(a))
    top = lambda v: set(torch.tensor(v).abs().topk(k).indices.tolist())  # noqa: E731
    return len(top(a) & top(b))


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def timed_best(fn, repeats: int):
    """(result, fastest, median) over ``repeats`` runs: the cores are shared, so the fastest
    run is the closest to the method's own cost, and the median shows the spread."""
    times = []
    for _ in range(repeats):
        out, seconds = timed(fn)
        times.append(seconds)
    return out, min(times), sorted(times)[len(times) // 2]


def edges_and_circuits(model, adapter, data, act_heads) -> dict:
    """Edge attribution (EAP) over every edge; the faithfulness of the top-20-heads node
    circuit and of the top-1 % edge circuit, both measured by running the model."""
    from compgraph.effects.circuits import edge_circuit, node_circuit
    from compgraph.effects.edges import edge_attribution

    scores, t_edges = timed(lambda: edge_attribution(model, adapter, data, tasks.logit_diff))
    nodes, t_nodes = timed(lambda: node_circuit(model, adapter, data, tasks.logit_diff, act_heads,
                                                n=20))
    n_edges = scores.height // 100
    circuit, t_circuit = timed(lambda: edge_circuit(model, adapter, data, tasks.logit_diff, scores,
                                                    n=n_edges))
    return {"edges": scores.height, "edge_attribution_s": t_edges,
            "node_circuit_top20_heads": {"faithfulness": nodes.faithfulness, "metric_full": nodes.metric_full,
                                         "metric_empty": nodes.metric_empty, "seconds": t_nodes},
            "edge_circuit_top1pct": {"asked": n_edges, "size_after_pruning": circuit.size,
                                     "faithfulness": circuit.faithfulness, "metric_empty": circuit.metric_empty,
                                     "seconds": t_circuit}}


def thread_probe(model, data) -> dict:
    """Seconds of one clean forward pass on the task with 1 and with 2 torch threads."""
    from compgraph.effects.runs import forward_logits

    inputs = data.clean
    out = {}
    with torch.no_grad():
        for threads in (1, 2):
            torch.set_num_threads(threads)
            forward_logits(model, inputs)
            out[threads] = min(timed(lambda: forward_logits(model, inputs))[1] for _ in range(2))
    print(f"one forward pass: {out[1]:.2f} s with 1 thread, {out[2]:.2f} s with 2 threads")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--neuron-sample", type=int, default=256)
    parser.add_argument("--batch-tokens", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on cores shared with other jobs, OpenMP barriers of 2 "
                             "threads stall whenever the other core is taken; see the probe printed first)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each attribution pass (fastest reported)")
    parser.add_argument("--edges", action="store_true",
                        help="also time edge attribution over the whole graph and measure two circuits")
    parser.add_argument("--layers", type=int, help="only components of the first LAYERS layers (a dry run)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    torch.manual_seed(0)
    load_before = os.getloadavg()
    loaded, t_load = timed(lambda: loading.load("packaged:smollm2", device=args.device))
    model, adapter = loaded.model, loaded.adapter
    for p in model.parameters():
        p.requires_grad_(False)
    enc = tasks.encode_task("ioi", loaded.tokenizer)
    n = args.examples
    data = enc.rows(torch.arange(min(n, len(enc))))
    width = data.width
    common = dict(batch_tokens=args.batch_tokens)
    probe = thread_probe(model, data) if args.device == "cpu" else {}
    torch.set_num_threads(args.threads)
    print(f"SmolLM2 loaded in {t_load:.1f} s on {args.device}; {n} IOI prompts of {width} tokens (left-padded); "
          f"torch threads {torch.get_num_threads()}; load average {load_before[0]:.2f}")

    layers = None if args.layers is None else range(args.layers)
    heads = list_components(model, adapter, ("head",), layers)
    act_heads, t_act_heads = timed(lambda: activation_patching(model, adapter, data, tasks.logit_diff, components=heads, **common))
    load_heads = os.getloadavg()[0]
    att_heads, t_att_heads, t_att_heads_median = timed_best(
        lambda: attribution_patching(model, adapter, data, tasks.logit_diff, components=heads, **common), args.repeats)
    a, b = act_heads["effect"].to_list(), att_heads["effect"].to_list()
    strongest = act_heads.sort(act_heads["effect"].abs(), descending=True).head(5)
    result = {
        "device": args.device, "examples": n, "tokens": width, "threads": torch.get_num_threads(),
        "load_before": load_before[0], "forward_s_by_threads": probe,
        "heads": {
            "n": len(heads), "activation_s": t_act_heads, "load_during_activation": load_heads,
            "attribution_s": t_att_heads, "attribution_median_s": t_att_heads_median,
            "activation_per_s": len(heads) / t_act_heads, "attribution_per_s": len(heads) / t_att_heads,
            "speedup": t_act_heads / t_att_heads, "spearman": spearman(a, b), "top20_overlap": top_overlap(a, b),
            "top5_activation": [f"L{r['layer']}H{r['index']}: {r['effect']:+.3f}"
                                for r in strongest.iter_rows(named=True)],
        },
    }
    print(json.dumps(result["heads"], indent=1))

    neurons = list_components(model, adapter, ("neuron",), layers)
    att_neurons, t_att_neurons, t_att_neurons_median = timed_best(
        lambda: attribution_patching(model, adapter, data, tasks.logit_diff, components=neurons, **common), args.repeats)
    result["neurons"] = {"n": len(neurons), "attribution_s": t_att_neurons,
                         "attribution_median_s": t_att_neurons_median,
                         "attribution_per_s": len(neurons) / t_att_neurons}
    if args.neuron_sample:
        pick = torch.randperm(len(neurons))[:args.neuron_sample].sort().values.tolist()
        sample = [neurons[i] for i in pick]
        act_sample, t_sample = timed(lambda: activation_patching(model, adapter, data, tasks.logit_diff, components=sample,
                                                                 **common))
        per = t_sample / len(sample)
        result["neurons"]["load_during_activation"] = os.getloadavg()[0]
        att_all = att_neurons["effect"].to_list()
        att_sample = [att_all[i] for i in pick]
        result["neurons"].update({
            "activation_sample": len(sample), "activation_sample_s": t_sample, "activation_per_s": 1 / per,
            "activation_all_s_extrapolated": per * len(neurons),
            "speedup_extrapolated": per * len(neurons) / t_att_neurons,
            "spearman_sample": spearman(act_sample["effect"].to_list(), att_sample),
        })
    print(json.dumps(result["neurons"], indent=1))
    if args.edges:
        result["edges"] = edges_and_circuits(model, adapter, data, act_heads)
        print(json.dumps(result["edges"], indent=1))
    result["load_after"] = os.getloadavg()[0]
    print(f"load average after: {result['load_after']:.2f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
