"""The C allocator set for tensor work: freed blocks kept for reuse, not handed back to the OS.

glibc's ``malloc`` serves a block above its mmap threshold (128 KiB at start, rising with
freed blocks up to 32 MiB) from a fresh mapping and unmaps it when it is freed. torch's
CPU tensors are such blocks, so every forward and backward pass takes its activations and
gradients from new pages, and each page faults and is zeroed on first touch. Edge
attribution on SmolLM2 (64 induction prompts, after one warm-up run) made 808 k minor page
faults and took 12.8 s; with this setting it made 14 k and took 10.6 s
(``benchmarks/allocator.py``); the induction effects of the main job took 185 s and 172 s.

:func:`keep_freed_memory` makes ``malloc`` serve every block from its heap
(``M_MMAP_MAX`` = 0) and keep the memory freed there for the next blocks
(``M_TRIM_THRESHOLD``, ``M_TOP_PAD``), as the ``MALLOC_MMAP_MAX_=0``,
``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_TOP_PAD_`` environment variables would at start-up.
Unlike those variables it is not inherited by child processes. The process's resident
memory then stays near its peak after the peak passes, instead of falling back, and the
peak itself may rise a little (reused blocks do not always fit: the main job's ingest 8.19 →
8.73 GB, the induction effects 7.05 → 7.42 GB). The ``compgraph`` commands that compute
(``ingest``, ``effects``, ``match``, ``train-dictionary``, ``analyse``) apply it when they
start, not the long-lived ``serve`` or the store's readers; ``COMPGRAPH_MALLOC=system``
leaves ``malloc`` as it is. Where the C library is not glibc (macOS, musl), it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
"""glibc's ``mallopt`` parameters (``<malloc.h>``)."""
SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1), (M_TOP_PAD, 256 * 2**20))
"""(parameter, value): no block from its own mapping; keep up to 2 GiB free at the heap's top
before trimming; grow the heap 256 MiB beyond each request."""
ENV = "COMPGRAPH_MALLOC"
"""``system``: leave ``malloc`` as the C library set it."""


def keep_freed_memory(environ=os.environ) -> bool:
    """Set glibc's ``malloc`` as the module doc says; whether it was set (False where the C
    library is not glibc, or ``COMPGRAPH_MALLOC=system``)."""
    if environ.get(ENV, "").strip().lower() == "system" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in SETTINGS)
