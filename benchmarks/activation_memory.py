"""Peak memory of the neuron activation statistics on SmolLM2, for two corpus sizes.

    python benchmarks/activation_memory.py [--tokens 10000 100000] [--memory-gb 2]

Each size runs in a fresh subprocess: load the model, tokenize ``packaged:pile`` up to
N tokens into the on-disk token stream, then run every statistics shard the neurons
stage plans (all 30 layers). Reported: the resident-memory high-water mark during the
statistics (sampled every 20 ms) minus the resident memory just before them, and the
wall time. The bound does not depend on the corpus: accumulators are
2 * tracked_tokens * d_mlp floats per layer, token ids live in a memory-mapped file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time


def measure(n_tokens: int, memory_gb: float) -> dict:
    import psutil
    import torch

    from compgraph.engine.context import Execution, StageContext
    from compgraph.models import loading
    from compgraph.models.info import model_info
    from compgraph.stages.neurons import NeuronsConfig, NeuronsStage

    torch.set_num_threads(2)
    loaded = loading.load("packaged:smollm2", device="cpu")
    info = model_info("smollm2-135m", "packaged:smollm2", loaded.model.config, loaded.adapter)
    ctx = StageContext(info, Execution(device="cpu", batch_size=8, memory_gb=memory_gb), corpus_spec="packaged:pile",
                       loaded=loaded)
    config = NeuronsConfig(top_k=10, corpus="packaged:pile", seq_len=128, max_tokens=n_tokens, tracked_tokens=4096)
    stage = NeuronsStage()
    shards = [s for s in stage.shards(info, config, ctx.execution) if s.startswith("stats/")]
    ctx.tokens(seq_len=128, max_tokens=n_tokens)  # tokenize first: the stream is on disk
    process = psutil.Process()
    base = process.memory_info().rss
    peak = [base]
    running = [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    rows = sum(stage.run(ctx, config, shard).rows for shard in shards)
    seconds = time.perf_counter() - start
    running[0] = False
    sampler.join()
    stream = ctx.tokens(seq_len=128, max_tokens=n_tokens)
    return {"tokens": stream.n_tokens, "shards": shards, "rows": rows, "seconds": round(seconds, 1),
            "rss_before_mb": round(base / 2**20), "peak_extra_mb": round((peak[0] - base) / 2**20)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--memory-gb", type=float, default=2.0)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.memory_gb)))
        return
    results = []
    for n in args.tokens:
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--memory-gb", str(args.memory_gb)],
                             capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'corpus tokens':>14} {'shards':>22} {'seconds':>8} {'RSS before':>11} {'peak extra':>11}")
    for r in results:
        print(f"{r['tokens']:>14,} {','.join(r['shards']):>22} {r['seconds']:>8} {r['rss_before_mb']:>9} MB"
              f" {r['peak_extra_mb']:>8} MB")
    growth = results[-1]["peak_extra_mb"] - results[0]["peak_extra_mb"]
    print(f"growth of the peak from {results[0]['tokens']:,} to {results[-1]['tokens']:,} tokens: {growth} MB")


if __name__ == "__main__":
    main()
