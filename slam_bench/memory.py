"""Peak memory of one call of a function, on CPU and on CUDA.

CPU peak memory: torch's CPU allocator reports each allocation and free to the profiler when
`profile_memory=True`; the running sum of those sizes over one call, at its maximum, is the
peak extra memory of that call (inputs allocated before it are not counted, the returned
gradient is). The profiler sees the calling thread's allocations only, so the call runs with
one torch thread; with T threads the passes that hand row chunks to T Python workers (value
checks, the sparse top-K backend) hold up to T chunks' temporaries at once (CHUNK_ELEMENTS x
4 bytes each); the dense loss runs one chunk at a time at any thread count. tracemalloc and the
resident set are not used: the first does not see torch's allocator and the second cannot be
reset within one process. The profiler's C++ side prints "USDT:"/"STAGE:" lines to the
process's stderr on every start and stop, with no switch to turn them off; the probe filters
them out of what reaches the terminal (`_without_profiler_chatter`).

CUDA: torch.cuda.reset_peak_memory_stats, then max_memory_allocated less what was allocated
before. Low in the house (torch and numpy only), so that both the profiling families and the
trial loop (a student step's peak, logged in its row) measure with the same probe.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Callable, Iterator

import numpy as np
import torch


def peak_extra_bytes_cpu(fn: Callable[[], object]) -> int:
    """Peak bytes allocated by torch's CPU allocator during one call of `fn`, over the start."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    # The profiler sees allocator events of the calling thread only, and the torch backend
    # hands row chunks to worker threads when torch has more than one: measure on one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _without_profiler_chatter(), \
                profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
    finally:
        torch.set_num_threads(threads)
    allocs = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        ev = stack.pop()
        if ev.tag == _EventType.Allocation and ev.extra_fields.device.type == "cpu":
            allocs.append((ev.start_time_ns, ev.extra_fields.alloc_size))
        stack.extend(ev.children)
    allocs.sort()
    sizes = np.array([s for _, s in allocs], dtype=np.int64)
    return int(np.cumsum(sizes).max(initial=0)) if sizes.size else 0


NOISE_PREFIXES = ("USDT:", "STAGE:")
# The allocator's note that blocks allocated before the probe started are not followed: true
# of every input, and not what the probe measures.
NOISE_SNIPPETS = ("allocated before the profiling started",)


@contextlib.contextmanager
def _without_profiler_chatter() -> Iterator[None]:
    """Route file descriptor 2 to a temporary file for the block, then pass on every line
    except the profiler's own chatter (NOISE_PREFIXES, NOISE_SNIPPETS)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().decode(errors="replace").splitlines(keepends=True)
                    if not ln.startswith(NOISE_PREFIXES)
                    and not any(s in ln for s in NOISE_SNIPPETS)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def peak_extra_bytes_cuda(fn: Callable[[], object]) -> int:
    """Peak CUDA bytes allocated during one call of `fn`, over what was allocated before."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated() - base)


def peak_extra_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """`peak_extra_bytes_cuda` on a CUDA device, else `peak_extra_bytes_cpu`."""
    if torch.device(device).type == "cuda":
        with torch.cuda.device(device):
            return peak_extra_bytes_cuda(fn)
    return peak_extra_bytes_cpu(fn)
