"""Timers, peak memory and copy bandwidth, on CPU and on CUDA.

CPU time: a perf_counter loop that visits the providers of one configuration round-robin
(A, B, C, then B, C, A, ...: the starting provider rotates), so that load from other
processes on a shared machine lands on every provider alike and their ratio stays
meaningful. Two things a CPU step leaves behind would otherwise be charged to whichever
provider runs next, so the order of the providers (and the timer) would decide the ratios:
- libgomp's worker threads keep spinning for a few ms after the last OpenMP region
  (OMP_WAIT_POLICY unset), taking a core from the next step. Each timed call therefore comes
  right after an untimed call of the same provider (`settle`): every provider is timed in the
  state its own step leaves, as in a loop that calls it every step, and as pytest-benchmark
  times it (its rounds of one provider run back to back).
- glibc returns the pages of freed large blocks to the kernel (heap trimming, and its mmap
  threshold), so the next large allocation page-faults them in again: 0.85 us per 4 KiB page
  on the machine measured, and the eager formula faulted 8,000 to 96,000 pages in one step at
  N = 8192, C = 1000 (its step took 47 ms without faults and up to 147 ms with them; which
  steps fault depends on what ran before). `allocator_steady_state` keeps freed memory in the
  heap while the timers run, as jemalloc or tcmalloc do, so no provider pays page faults for
  memory it reuses. Allocations above 32 MiB, glibc's largest mmap threshold, still fault.
GPU time: triton.testing.do_bench.

CPU and CUDA peak memory: slam_bench.memory (imported here by its names), whose note says how
it is measured and why.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Callable, Dict, Iterator, List

import numpy as np
import torch

from slam_bench.memory import (NOISE_PREFIXES, NOISE_SNIPPETS,  # noqa: F401 (the names)
                               _without_profiler_chatter, peak_extra_bytes_cpu,
                               peak_extra_bytes_cuda)

QUANTILES = (50, 20, 80)  # median and the 20th/80th percentiles, as do_bench reports them
# Untimed calls of a provider right before each of its timed calls on CPU (module note).
SETTLE_CALLS = 1


def machine_load() -> Dict[str, float]:
    """The 1-minute load average and the cores this process may use. On a busy machine (load
    above the cores) other processes take cores from the timed steps: each threaded op then
    waits at its barrier for a descheduled thread, and ratios between providers change with
    the number of ops each dispatches, so a row records the load it was measured under."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        load = math.nan
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return {"load_avg_1m": round(load, 2), "cores": cores}


def is_busy(load: float, cores: float) -> bool:
    return load == load and load > cores  # NaN (no load average here) is not busy


def summarize(samples_ms: List[float]) -> Dict[str, float]:
    """Median and 20/80 percentiles of one provider's per-call times (ms)."""
    med, p20, p80 = np.percentile(np.asarray(samples_ms, dtype=float), QUANTILES)
    return {"ms_median": float(med), "ms_p20": float(p20), "ms_p80": float(p80)}


def spread(st: Dict[str, float]) -> float:
    """(p80 - p20) / median of one provider's times: how far to trust its median."""
    return (st["ms_p80"] - st["ms_p20"]) / st["ms_median"] if st["ms_median"] > 0 else math.nan


def time_cpu_round_robin(fns: Dict[str, Callable[[], object]], warmup: int, reps: int,
                         max_seconds: float = float("inf"),
                         settle: int = SETTLE_CALLS) -> Dict[str, List[float]]:
    """Per-call times in ms of each callable, interleaved; each timed call follows `settle`
    untimed calls of the same callable (see the module note). Stops early (keeping at least 3
    rounds) once `max_seconds` have gone by, so one slow provider cannot stall a sweep."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out: Dict[str, List[float]] = {name: [] for name in fns}
    order = list(fns)
    start = time.perf_counter()
    for rnd in range(reps):
        for name in order[rnd % len(order):] + order[:rnd % len(order)]:
            for _ in range(settle):
                fns[name]()
            t0 = time.perf_counter()
            fns[name]()
            out[name].append((time.perf_counter() - t0) * 1e3)
        if rnd >= 2 and time.perf_counter() - start > max_seconds:
            break
    return out


# glibc's mallopt parameters, and the largest mmap threshold it accepts on 64-bit machines
# (beyond it every allocation is mmapped).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 << 20


def _glibc_mallopt():
    """glibc's mallopt, or None (another C library, another OS)."""
    import ctypes
    import platform
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return None


@contextlib.contextmanager
def allocator_steady_state() -> Iterator[bool]:
    """Within the block, glibc keeps freed memory in the heap (no trimming, mmap threshold at
    its 32 MiB maximum), so a step that reuses the sizes it freed does not page-fault (module
    note). Yields whether that took effect (False off glibc). On exit the trim threshold goes
    back to twice the mmap threshold, where glibc's own dynamic rule ends up after freeing a
    large block; the mmap threshold stays at 32 MiB (mallopt turns the dynamic rule off)."""
    mallopt = _glibc_mallopt()
    if mallopt is None:
        yield False
        return
    ok = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) \
        and bool(mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))
    try:
        yield ok
    finally:
        mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD_MAX)


def time_cuda(fn: Callable[[], object], warmup_ms: int = 25, rep_ms: int = 100) -> Dict[str, float]:
    """Median and 20/80 percentile ms of `fn` on the current CUDA device (do_bench)."""
    from triton.testing import do_bench
    med, p20, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms,
                             quantiles=[q / 100 for q in QUANTILES])
    return {"ms_median": float(med), "ms_p20": float(p20), "ms_p80": float(p80)}


PEAK_METHOD = {
    "cpu": ("torch.profiler(profile_memory=True) on 1 thread: max running sum of CPU "
            "allocator events (the torch backend adds ~2 MiB per extra thread)"),
    "cuda": "torch.cuda.reset_peak_memory_stats + max_memory_allocated - allocated before",
}


def copy_bandwidth_gbps(device: torch.device, nbytes: int, reps: int = 10) -> float:
    """Measured device copy bandwidth in GB/s (1e9 B/s): read + write of an `nbytes` buffer."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    moved = 2 * src.numel() * 4
    if device.type == "cuda":
        ms = time_cuda(lambda: dst.copy_(src))["ms_median"]
    else:
        ms = summarize(time_cpu_round_robin({"copy": lambda: dst.copy_(src)}, 2, reps)["copy"])["ms_median"]
    return moved / (ms * 1e-3) / 1e9
