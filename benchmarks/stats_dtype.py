"""The neuron statistics pass in float32 against its bfloat16 forward, on the real SmolLM2.

    python benchmarks/stats_dtype.py [--max-tokens 16384]

One process, the same corpus (the first ``--max-tokens`` tokens of ``packaged:pile``,
256-token sequences, batches of 8): the statistics of all 46,080 neurons from one pass in
float32 and one with the forward under ``torch.autocast(bfloat16)`` (what ``compgraph
ingest --dtype auto`` does on a CPU with native bfloat16). Reports both wall times, the
speed-up, and the bfloat16 pass's error against float32 in the units of
``tests/unit/extract/test_stats.py``: max over neurons of |Δ act_mean| ÷ the neuron's RMS
activation, of |Δ act_max| ÷ max(|act_max|, RMS) (RMS estimated from the per-token
statistics: sqrt(mean of the tracked tokens' squared means) is not available, so the
scale used is max(|act_mean|, |act_max| / 10)), of |Δ act_freq|, and the share of neurons
whose top-5 tokens are the same set.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from compgraph.data.corpus import resolve_corpus
from compgraph.data.tokens import TokenStream
from compgraph.extract.neurons import neuron_stats
from compgraph.extract.stats import top_tokens, unit_stats
from compgraph.models import loading


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=16384)
    args = parser.parse_args()
    print(f"load before: {os.getloadavg()[0]:.2f}; native bf16: {loading.native_bf16('cpu')}", flush=True)
    loaded = loading.load("packaged:smollm2", device="cpu", dtype="float32")
    model, adapter, tok = loaded.model, loaded.adapter, loaded.tokenizer
    stream = TokenStream(tok, resolve_corpus("packaged:pile").documents(), seq_len=256, max_tokens=args.max_tokens)
    n_tokens = len(tok)
    layers = range(model.config.num_hidden_layers)
    common = {"n_tokens": n_tokens, "special_ids": set(tok.all_special_ids), "tracked_limit": 1024, "batch_size": 8}
    runs = {}
    for name, dtype in (("float32", None), ("bfloat16", torch.bfloat16)):
        start = time.perf_counter()
        runs[name] = neuron_stats(model, adapter, stream, layers, compute_dtype=dtype, **common)
        runs[name + "_s"] = time.perf_counter() - start
        print(f"{name}: {runs[name + '_s']:.1f} s", flush=True)
    mean_err = max_err = freq_err = 0.0
    same_top, total = 0, 0
    for layer in layers:
        a, b = runs["float32"], runs["bfloat16"]
        want, got = unit_stats(a.stats[layer], a.n_seen), unit_stats(b.stats[layer], b.n_seen)
        scale = torch.maximum(want.act_mean.abs(), want.act_max.abs() / 10).clamp(min=1e-6)
        mean_err = max(mean_err, float(((got.act_mean - want.act_mean).abs() / scale).max()))
        max_err = max(max_err, float(((got.act_max - want.act_max).abs() /
                                      torch.maximum(want.act_max.abs(), scale)).max()))
        freq_err = max(freq_err, float((got.act_freq - want.act_freq).abs().max()))
        ta, tb = (top_tokens(r.stats[layer], r.tracked, r.counts, 5) for r in (a, b))
        for unit in range(a.stats[layer].total.shape[0]):
            total += 1
            same_top += set(ta.token[ta.unit == unit].tolist()) == set(tb.token[tb.unit == unit].tolist())
    print(f"tokens {runs['float32'].n_seen}; speed-up {runs['float32_s'] / runs['bfloat16_s']:.2f}x; "
          f"max error: act_mean {mean_err:.4f}, act_max {max_err:.4f}, act_freq {freq_err:.4f}; "
          f"same top-5 tokens for {same_top / total:.3f} of {total} neurons")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
