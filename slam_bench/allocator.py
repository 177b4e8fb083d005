"""glibc malloc settings for the processes that train the benchmark's students on CPU.

By default glibc serves allocations above 128 KB (raised on the fly up to 32 MB) with their own
mmap and gives freed memory at the top of the heap back to the OS once it passes a threshold.
A training step allocates and frees the same few large buffers every step (logits chunks,
gradients, optimizer temporaries), so each step then faults its buffers' pages in again,
zero-filled by the kernel: measured on this project's 2-core machine, one training step of
`vocab_known_noise`'s student (fused_linear_slam_loss, N = 128 in chunks of 32, H = 32,
V = 32,768, K = 20, Adam; one thread) took 31.0 ms with 3,902 page faults, and 17.1 ms with 10
once `keep_freed_memory()` had run; a whole trial of that suite took 13-14% less time (97 and
109 s against 111 and 127 s, two pairs). Peak resident memory did not change (434 MB both
ways). It is no general speed-up: a trial of mnist1d, whose buffers are small, took about 9%
longer with it (65.6, 72.9, 69.8 s against 61.1, 64.4, 64.8 s, three pairs), and one of
noisy_teacher took the same time (80.0, 86.1 s against 84.8, 88.5 s).

`keep_freed_memory()` serves allocations up to 32 MB (glibc's largest mmap threshold on 64-bit
systems) from the heap and keeps up to 1 GiB of freed memory in the process; glibc's own
threshold adjustment stops. It changes no result, only where memory comes from. It is
process-wide and cannot be undone, so the trial loop calls it only for a suite that asks
(`Suite.keep_freed_memory`: `vocab_known_noise`), on CPU; `slam-bench profile` and the loss
functions never call it. A user's CPU training loop with large per-step buffers can.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit systems (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD = 1 << 30

_APPLIED = False


def keep_freed_memory() -> bool:
    """Apply the settings above once per process. Returns True when they are in effect (glibc
    on Linux), False where there is no glibc (macOS, Windows, musl): there it does nothing."""
    global _APPLIED
    if _APPLIED:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; a glibc that refuses a value keeps its default for it.
    _APPLIED = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                    and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _APPLIED
