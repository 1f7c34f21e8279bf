"""LM-head decoding of every neuron: compgraph's decoder vs. a naive loop vs. the matmul rate.

    python benchmarks/decode.py                 # SmolLM2 (packaged), CPU
    python benchmarks/decode.py --llama8b       # Llama-3.1-8B-shaped random weights, needs CUDA

Measured in one process:
- peak: the machine's rate for the decoder's own matmul shape (chunk x d_model @
  d_model x vocab), best of a few runs;
- decoder: ``decode_topk`` over all neurons (top-k and bottom-k), its rate as a
  fraction of that peak (the top-k selection is the part to beat);
- naive: one neuron at a time with two full ``topk`` calls, timed on a sample and
  scaled per neuron.
"""

from __future__ import annotations

import argparse
import time

import torch

from compgraph.extract.decode import Decoded, decode_topk


@torch.no_grad()
def decode_naive(directions: torch.Tensor, unembed: torch.Tensor, k: int, *,
                 gain: torch.Tensor | None = None) -> Decoded:
    """The baseline: one direction at a time with two full ``topk`` calls."""
    out = [[], [], [], []]
    for row in directions:
        logits = (row * gain if gain is not None else row) @ unembed
        top, bottom = logits.topk(k), logits.topk(k, largest=False)
        for i, t in enumerate((top.indices, top.values, bottom.indices, bottom.values)):
            out[i].append(t)
    return Decoded(*(torch.stack(o) for o in out))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def matmul_peak(d: int, vocab: int, chunk: int, dtype, device: str, repeats: int = 3) -> float:
    a = torch.randn(chunk, d, dtype=dtype, device=device)
    b = torch.randn(d, vocab, dtype=dtype, device=device)
    a @ b  # warm-up
    best = min(timed(lambda: a @ b, device) for _ in range(repeats))
    return 2 * chunk * d * vocab / best


def run(directions: torch.Tensor, unembed: torch.Tensor, gain, k: int, chunk: int, device: str,
        naive_sample: int) -> None:
    n, d = directions.shape
    vocab = unembed.shape[1]
    peak = matmul_peak(d, vocab, chunk, directions.dtype, device)
    decode_topk(directions[:chunk], unembed, k, gain=gain, chunk=chunk)  # warm-up
    t_fast = timed(lambda: decode_topk(directions, unembed, k, gain=gain, chunk=chunk), device)
    sample = directions[:naive_sample]
    t_naive = timed(lambda: decode_naive(sample, unembed, k, gain=gain), device) * n / naive_sample
    fast = decode_topk(sample, unembed, k, gain=gain, chunk=chunk)
    slow = decode_naive(sample, unembed, k, gain=gain)
    same = torch.equal(fast.top_ids, slow.top_ids) and torch.equal(fast.bottom_ids, slow.bottom_ids)
    flops = 2 * n * d * vocab
    print(f"{n:,} neurons x {vocab:,} tokens (d_model {d}, k {k}, {directions.dtype}, {device})")
    print(f"  matmul peak      {peak / 1e9:8.1f} GFLOP/s")
    print(f"  compgraph        {t_fast:8.2f} s  {n / t_fast:10,.0f} neurons/s  "
          f"{flops / t_fast / 1e9:7.1f} GFLOP/s = {flops / t_fast / peak:5.1%} of peak")
    print(f"  naive loop       {t_naive:8.2f} s  {n / t_naive:10,.0f} neurons/s  (timed on {naive_sample}, scaled)")
    print(f"  speed-up vs naive {t_naive / t_fast:6.1f}x; same tokens on the sample: {same}")


def smollm2(k: int, chunk: int, naive_sample: int) -> None:
    from compgraph.models import loading, params

    loaded = loading.load("packaged:smollm2", device="cpu")
    model, adapter = loaded.model, loaded.adapter
    with torch.no_grad():
        directions = torch.cat([params.mlp_out(model, adapter, layer)
                                for layer in range(params.n_layers(model, adapter))]).contiguous()
        unembed = params.unembed(model, adapter).contiguous()
        gain = params.final_gain(model, adapter)
        run(directions, unembed, gain, k, chunk, "cpu", naive_sample)


def llama8b(k: int, chunk: int, naive_sample: int) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("--llama8b needs a CUDA device")
    torch.manual_seed(0)
    device, dtype = "cuda", torch.bfloat16
    directions = torch.randn(32 * 14_336, 4096, device=device, dtype=dtype)
    unembed = torch.randn(4096, 128_256, device=device, dtype=dtype)
    gain = torch.rand(4096, device=device, dtype=dtype) + 0.5
    with torch.no_grad():
        run(directions, unembed, gain, k, chunk, device, naive_sample)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama8b", action="store_true")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=None)
    parser.add_argument("--naive-sample", type=int, default=256)
    args = parser.parse_args()
    if args.llama8b:
        llama8b(args.k, args.chunk or 8192, args.naive_sample)
    else:
        smollm2(args.k, args.chunk or 2048, args.naive_sample)


if __name__ == "__main__":
    main()
