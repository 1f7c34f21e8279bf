"""Throughput of the TopK SAE trainer, without the model: optimiser steps on random data of
SmolLM2's residual width, the sparse decoder (``embedding_bag``, what the trainer uses)
against a dense ``f @ W_dec`` step.

    python benchmarks/train_dictionary.py [--d 576] [--width 4096] [--k 32] [--batch 1024] [--steps 50]

Reported per variant: seconds per step, training tokens per second, and the ratio dense ÷
sparse. The full command (``compgraph train-dictionary``) adds the model's forward passes
up to the layer, which on 2 CPU cores cost about as much again per token.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from compgraph.dictionaries.coder import TopKCoder
from compgraph.dictionaries.training import DeadTracker, TrainConfig, loss_terms


def step_time(coder: TopKCoder, x: torch.Tensor, steps: int, dense: bool) -> float:
    optimizer = torch.optim.Adam(coder.parameters(), lr=TrainConfig(width=coder.width).learning_rate, fused=True)
    tracker = DeadTracker(coder.width, 10**9)
    start = None
    for step in range(steps + 5):  # 5 warm-up steps
        if step == 5:
            start = time.perf_counter()
        if dense:
            values, indices = coder.select(coder.pre(x))
            f = torch.zeros(x.shape[0], coder.width).scatter(1, indices, values)
            y_hat = f @ coder.W_dec + coder.b_dec
            loss = (x - y_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
        else:
            loss, _, _, active = loss_terms(coder, x, x, None)
            tracker.update(torch.zeros(coder.width, dtype=torch.bool).index_fill_(0, active, True), x.shape[0])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        coder.project_decoder_grad()
        optimizer.step()
        coder.normalize_decoder()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=576)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    x = torch.randn(args.batch, args.d, generator=torch.Generator().manual_seed(0))
    out = {"threads": torch.get_num_threads(), **vars(args)}
    for name, dense in (("sparse", False), ("dense", True)):
        coder = TopKCoder(args.d, args.d, args.width, args.k, subtract_b_dec=True,
                          generator=torch.Generator().manual_seed(0))
        seconds = step_time(coder, x, args.steps, dense)
        out[name] = {"seconds_per_step": round(seconds, 5), "tokens_per_s": round(args.batch / seconds)}
    out["dense_over_sparse"] = round(out["dense"]["seconds_per_step"] / out["sparse"]["seconds_per_step"], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
