"""Weights-based connections on the real SmolLM2-135M: time, peak memory, rows per second.

    python benchmarks/connections.py            # all four kinds of connections, k = 10
    python benchmarks/connections.py --k 10 --only virtual,heads --model DIR

Measured in one process (CPU, float32), each against the machine's matmul rate for the
shape that dominates it (best of a few runs):
- ``virtual``: virtual weights of every neuron pair across layers (46,080 neurons; up and
  gate reads), top-k per source neuron;
- ``heads``: q/k/v composition scores of every ordered pair of heads in different layers,
  with a naive full-matrix computation (d_model x d_model products, as TransformerLens'
  dense path would) timed on a sample of pairs and scaled, for the speed-up;
- ``ov_to_mlp``: head OV output -> neuron reads, top-k per head;
- ``mlp_to_head``: neuron writes -> head q/k/v reads, top-k per neuron.
Peak memory: the process's resident set, sampled every 5 ms by a thread, above its
level when the phase starts (the model itself is already resident; freed heap pages are
returned to the OS with ``malloc_trim`` before each phase, and blocks above 64 KiB are
mmapped so that RSS follows live memory rather than heap fragmentation). Each frame is
counted and dropped, as the runner does after writing a shard; ``frames`` is their total
size (polars ``estimated_size``), what keeping them all would add.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import threading
import time
from typing import Callable

import torch

PAGE = os.sysconf("SC_PAGE_SIZE")


def map_large_allocations() -> None:
    """Serve every allocation above 64 KiB by mmap (glibc), so a freed block leaves the
    resident set at once and RSS tracks live memory instead of heap fragmentation."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        pass


def release_freed_memory() -> None:
    """Return freed heap pages to the OS so each phase starts from a true baseline."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE


class PeakRSS:
    """Peak resident set above the level at entry, sampled by a background thread."""

    def __enter__(self) -> "PeakRSS":
        self.start = rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())

    @property
    def above(self) -> int:
        return self.peak - self.start


def matmul_rate(m: int, k: int, n: int, repeats: int = 5) -> float:
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b
    best = min(_timed(lambda: a @ b)[0] for _ in range(repeats))
    return 2 * m * k * n / best


def _timed(fn: Callable):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--only", default="virtual,heads,ov_to_mlp,mlp_to_head")
    parser.add_argument("--naive-pairs", type=int, default=60)
    parser.add_argument("--model", default="packaged:smollm2",
                        help="any MODEL that `compgraph ingest` takes (a saved directory loads faster)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    map_large_allocations()
    only = set(args.only.split(","))

    from compgraph.models import loading, params
    from compgraph.weights import composition, factors
    from compgraph.weights.virtual import virtual_topk

    print(f"load average before loading: {os.getloadavg()}; torch threads {torch.get_num_threads()}")
    t_load, loaded = _timed(lambda: loading.load(args.model, device="cpu"))
    model, adapter = loaded.model, loaded.adapter
    n_layers = params.n_layers(model, adapter)
    n_heads, n_kv, d_head = params.head_dims(model.config)
    d_model = model.config.hidden_size
    d_mlp = params.mlp_in(model, adapter, 0).shape[0]
    n_reads = 2 if adapter.gated else 1
    pairs = n_layers * (n_layers - 1) // 2
    print(f"{args.model} loaded in {t_load:.1f} s: {n_layers} layers, {n_heads}/{n_kv} heads x {d_head}, "
          f"d_model {d_model}, d_mlp {d_mlp} ({n_layers * d_mlp:,} neurons, {n_layers * n_heads} heads)")

    hr = n_heads * d_head
    jobs = {
        "virtual": (lambda: virtual_topk(model, adapter, args.k),
                    2 * d_mlp * d_model * d_mlp * n_reads * pairs, (d_mlp, d_model, d_mlp)),
        "heads": (lambda: composition.head_composition(model, adapter),
                  2 * hr * d_model * 3 * hr * pairs, (hr, d_model, 3 * hr)),
        "ov_to_mlp": (lambda: composition.ov_to_mlp_topk(model, adapter, args.k),
                      2 * hr * d_model * d_mlp * n_reads * (pairs + n_layers), (hr, d_model, d_mlp)),
        "mlp_to_head": (lambda: composition.mlp_to_head_topk(model, adapter, args.k),
                        2 * d_mlp * d_model * 3 * hr * pairs, (d_mlp, d_model, 3 * hr)),
    }
    results = []
    for name, (make, flops, shape) in jobs.items():
        if name not in only:
            continue
        peak_rate = matmul_rate(*shape)
        composition.random_baseline.cache_clear()
        release_freed_memory()
        with PeakRSS() as mem:
            seconds, summary = _timed(lambda: [(f.height, f.estimated_size(), set(f["kind"].unique()))
                                               for _, f in make()])  # frames dropped, as a runner would
        rows = sum(n for n, _, _ in summary)
        frame_mb = sum(b for _, b, _ in summary) / 2**20
        kinds = sorted(set().union(*(k for _, _, k in summary)))
        results.append((name, seconds, rows, mem.above, flops, peak_rate, kinds, frame_mb))
        print(f"  {name:12s} {seconds:7.2f} s  {rows:>10,} rows  load {os.getloadavg()[0]:.2f}", flush=True)

    print()
    print(f"{'connections':12s} {'wall s':>8s} {'rows':>10s} {'rows/s':>10s} {'peak RSS':>9s} {'frames':>8s} "
          f"{'GFLOP/s':>8s} {'of peak':>8s}  kinds")
    for name, seconds, rows, mem, flops, peak_rate, kinds, frame_mb in results:
        rate = flops / seconds
        print(f"{name:12s} {seconds:8.2f} {rows:>10,} {rows / seconds:>10,.0f} {mem / 2**20:>6.0f} MB "
              f"{frame_mb:>5.0f} MB {rate / 1e9:>8.1f} {rate / peak_rate:>8.0%}  {','.join(kinds)}")

    if "heads" in only:  # the naive dense path on a sample of head pairs, scaled to all of them
        with torch.no_grad():
            attn = [factors.folded_attention(model, adapter, layer) for layer in (0, 1)]
            kv = attn[0].kv_index
            ov1 = [attn[0].W_V[kv[h]] @ attn[0].W_O[h] for h in range(n_heads)]
            kv2 = attn[1].kv_index
            qk2 = [attn[1].W_Q[h] @ attn[1].W_K[kv2[h]].T for h in range(n_heads)]
            ov2 = [attn[1].W_V[kv2[h]] @ attn[1].W_O[h] for h in range(n_heads)]
            score = lambda a, b: (a @ b).norm() / (a.norm() * b.norm())  # noqa: E731
            sample = [(i % n_heads, (i // n_heads) % n_heads) for i in range(args.naive_pairs)]
            t_naive, _ = _timed(lambda: [(score(ov1[a], qk2[b]), score(ov1[a], qk2[b].T), score(ov1[a], ov2[b]))
                                         for a, b in sample])
        all_pairs = n_heads * n_heads * pairs
        naive_total = t_naive / len(sample) * all_pairs
        fast = next(r[1] for r in results if r[0] == "heads")
        print(f"\nnaive dense composition (d_model x d_model products): {naive_total:.1f} s for {all_pairs:,} "
              f"head pairs (timed on {len(sample)}, scaled) = {naive_total / fast:.1f}x the factored path")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
