"""Row chunks for CPU passes over (N, C) tensors: their size, and how they run.

Passes over (N, C) inputs walk them in row chunks small enough that a chunk's temporaries
stay in cache between the ops over it. Two ways to use T > 1 CPU threads:

- Worker chunks (`row_step`, `for_each_chunk`; the value checks and the sparse top-K
  backend): T Python workers take whole chunks while each op runs single-threaded, so a
  chunk's small ops need no thread barrier each, which on a loaded machine costs more than
  the op itself.
- One chunk at a time, each op on torch's own OpenMP threads (`op_row_step`; the eager body
  of the dense SLaM loss, which on CPU runs only when slam_bench.cpu_fused cannot be built). libgomp's worker threads keep spinning for a few ms after every parallel region
  (OMP_WAIT_POLICY unset), and any op torch runs in parallel before the loss (the model's
  forward, or even a log over N = 8192 values) leaves them spinning: Python workers then
  share the cores with them. Measured at N = 8192, C = 1000, 2 threads, right after an
  OpenMP op: the workers' distillation step took 12 ms, the same step on torch's threads
  7.8 ms (and 8-10 ms either way on a quiet start). The larger chunks keep the barriers few.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch

# Row chunks of about this many elements: a chunk's fp32 temporaries (1 MiB each) stay in
# cache between the passes over it, and the per-op Python overhead stays small next to the
# work (about 32 chunks at N x C = 8192 x 1000).
CHUNK_ELEMENTS = 1 << 18
# Chunks of one-chunk-at-a-time passes (2 MiB per fp32 buffer): at N = 8192, C = 1000 on 2
# threads, 2^19 measured 14.1 ms for slam_loss, 2^18 15.1 ms (more ops) and 2^20 14.7 ms.
OP_CHUNK_ELEMENTS = 1 << 19
# Below this many elements one thread does the whole pass (torch's own intra-op grain size);
# above it, small inputs are still split so that every worker thread gets a chunk.
MIN_PARALLEL_ELEMENTS = 1 << 15

_PARALLEL_LOCK = threading.Lock()
_POOLS: dict = {}


def row_step(n: int, c: int, device: torch.device) -> int:
    """Rows per chunk for an (n, c) pass on `device` (>= 1)."""
    step = max(1, CHUNK_ELEMENTS // max(c, 1))
    threads = torch.get_num_threads() if device.type == "cpu" else 1
    if threads > 1 and n * c >= MIN_PARALLEL_ELEMENTS:
        step = min(step, -(-n // threads))  # at least one chunk per worker
    return step


def op_row_step(n: int, c: int) -> int:
    """Rows per chunk for an (n, c) pass that runs one chunk at a time (>= 1)."""
    return max(1, OP_CHUNK_ELEMENTS // max(c, 1))


# torch.compile cannot trace a thread pool (Dynamo failed inside it with an internal error,
# even without fullgraph): it runs eagerly, a graph break where a compiled function reaches it.
@torch.compiler.disable
def for_each_chunk(run: Callable[[int], None], starts: range, device: torch.device) -> None:
    """Call run(start) for every chunk start, on CPU worker threads when that pays (see the
    module note). The lock keeps concurrent callers from interleaving the thread-count change;
    a caller that finds it taken runs its chunks serially. Workers run without grad mode."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads < 2 or len(starts) < 2 \
            or not _PARALLEL_LOCK.acquire(blocking=False):
        for i in starts:
            run(i)
        return
    try:
        # Keyed by process id too: a forked child inherits the pool object but not its threads.
        key = (os.getpid(), threads)
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = ThreadPoolExecutor(threads, thread_name_prefix="slam-chunk")

        def run_no_grad(i):  # grad mode is per thread; the workers must not record a graph
            with torch.no_grad():
                run(i)
        torch.set_num_threads(1)
        try:
            for f in [pool.submit(run_no_grad, i) for i in starts]:
                f.result()
        finally:
            torch.set_num_threads(threads)
    finally:
        _PARALLEL_LOCK.release()
