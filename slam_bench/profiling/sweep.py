"""The throughput sweep of spec/kernels.md: which sizes, and running them into CSV rows.

A sweep is data (`SweepSpec`): the quick, full, GPU and dry-run variants differ only in their
numbers. `run_sweep` measures every (kernel, teacher, dtype, N, C, mode) with all providers
side by side and returns one row per provider, including a "skipped" row with the reason for
each provider that cannot run there.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import torch

from slam_bench.profiling import providers as P
from slam_bench.profiling import timing

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}


@dataclass(frozen=True)
class SweepSpec:
    name: str
    kernels: Tuple[str, ...]
    dtypes: Tuple[str, ...]
    teachers: Tuple[str, ...]
    c_values: Tuple[int, ...]          # C sweep at n_fixed
    n_fixed: int
    n_values: Tuple[int, ...]          # N sweep at c_for_n_sweep (may be empty)
    c_for_n_sweep: int
    modes: Tuple[str, ...] = P.MODES
    providers: Tuple[str, ...] = P.PROVIDERS
    # CPU timer: warm-up calls and interleaved rounds; seconds after which rounds stop early.
    warmup: int = 2
    reps: int = 15
    max_seconds_per_config: float = 20.0
    # torch.compile only for these (kernel, mode) pairs: its warm-up costs tens of seconds
    # per graph on a small CPU, which the quick sweep cannot afford for every graph.
    compile_only: Optional[Tuple[Tuple[str, str], ...]] = None
    backend: str = "auto"  # backend of the "slam_bench" provider

    def configs(self):
        """(kernel, teacher, dtype, N, C) in sweep order: bf16 first, then the rest."""
        sizes = [(self.n_fixed, c) for c in self.c_values]
        sizes += [(n, self.c_for_n_sweep) for n in self.n_values
                  if (n, self.c_for_n_sweep) not in sizes]
        for dtype in self.dtypes:
            for kernel in self.kernels:
                teachers = ("peaked",) if kernel == "distill_onehot" else self.teachers
                for teacher in teachers:
                    for n, c in sizes:
                        yield kernel, teacher, dtype, n, c


CPU_QUICK = SweepSpec(
    name="cpu-quick", kernels=("slam", "distill"), dtypes=("fp32",), teachers=("peaked",),
    c_values=(10, 100, 1000), n_fixed=8192, n_values=(), c_for_n_sweep=1000,
    reps=9, max_seconds_per_config=15.0, compile_only=(("slam", "full"),))
CPU_FULL = SweepSpec(
    name="cpu-full", kernels=("slam", "distill"), dtypes=("bf16", "fp32"),
    teachers=("peaked", "random"), c_values=(10, 100, 1000, 10000), n_fixed=8192,
    n_values=(1024, 4096, 16384), c_for_n_sweep=1000, reps=15)
GPU = SweepSpec(
    name="gpu", kernels=("slam", "distill", "distill_onehot"), dtypes=("bf16", "fp32"),
    teachers=("peaked", "random"), c_values=(10, 100, 1000, 32000, 128256, 262144),
    n_fixed=2048, n_values=(512, 8192, 32768), c_for_n_sweep=32000,
    compile_only=(("slam", "full"),))
# gpu_check --dry-run: the Triton kernel in the interpreter on CPU tensors, tiny sizes.
DRY = SweepSpec(
    name="dry-run", kernels=("slam", "distill"), dtypes=("bf16",), teachers=("peaked",),
    c_values=(10, 100), n_fixed=16, n_values=(), c_for_n_sweep=100, warmup=0, reps=2,
    compile_only=(), backend="triton")


def model_bytes(mode: str, n: int, c: int, dtype: str) -> int:
    """The floor of spec/kernels.md: read z and y once, and in "full" write dL/dz once."""
    per_elem = DTYPE_BYTES[dtype] * (3 if mode == "full" else 2)
    return n * c * per_elem


def _skip_row(base: dict, provider: str, mode: str, reason: str) -> dict:
    return dict(base, provider=provider, mode=mode, status="skipped", note=reason)


def run_sweep(spec: SweepSpec, device: torch.device, copy_bw_gbps: float,
              log: Callable[[str], None] = print, deadline: Optional[float] = None,
              use_cuda_timer: Optional[bool] = None) -> List[dict]:
    """Rows (dicts) of measurements; `deadline` (time.monotonic) skips what is left past it."""
    cuda_timer = device.type == "cuda" if use_cuda_timer is None else use_cuda_timer
    rows: List[dict] = []
    told = set()
    for kernel, teacher, dtype, n, c in spec.configs():
        base = dict(kernel=kernel, teacher=teacher, dtype=dtype, N=n, C=c,
                    k=min(P.K_TOP, c) if kernel == "slam" else "",
                    alpha_range=f"{P.ALPHA_RANGE[0]}-{P.ALPHA_RANGE[1]}" if kernel == "slam" else "")
        problem = P.make_problem(kernel, n, c, DTYPES[dtype], device, teacher,
                                 backend=spec.backend)
        for mode in spec.modes:
            fns = {}
            for prov in spec.providers:
                reason = None
                if deadline is not None and time.monotonic() > deadline:
                    reason = "time budget of the run spent"
                elif (prov == "compile" and spec.compile_only is not None
                      and (kernel, mode) not in spec.compile_only):
                    only = ", ".join("/".join(p) for p in spec.compile_only)
                    reason = (f"{spec.name}: torch.compile measured only for {only} "
                              "(warm-up cost)" if only else
                              f"{spec.name}: torch.compile not measured (warm-up cost)")
                if reason is None:
                    try:
                        fns[prov] = P.build(prov, problem, mode)
                    except P.Unavailable as e:
                        reason = str(e)
                if reason is not None:
                    rows.append(_skip_row(base, prov, mode, reason))
                    if (prov, reason) not in told:
                        log(f"  skipping {prov}: {reason}")
                        told.add((prov, reason))
            rows += _measure(spec, fns, problem, base, mode, device, cuda_timer, copy_bw_gbps,
                             log)
            problem.z.grad = None
        del problem
    return rows


def _measure(spec, fns, problem, base, mode, device, cuda_timer, copy_bw_gbps, log) -> List[dict]:
    rows = []
    ok = {}
    warm_s = {}
    for prov, fn in fns.items():  # first calls: compile, autotune; a failure is recorded
        t0 = time.perf_counter()
        try:
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
        except Exception as e:  # noqa: BLE001 - any provider failure becomes a recorded row
            msg = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            rows.append(_skip_row(base, prov, mode, msg))
            log(f"  {prov} {base['kernel']} {mode} N={base['N']} C={base['C']}: {msg}")
            continue
        warm_s[prov] = time.perf_counter() - t0
        ok[prov] = fn
    if not ok:
        return rows
    if cuda_timer:
        stats = {p: timing.time_cuda(fn) for p, fn in ok.items()}
    else:
        samples = timing.time_cpu_round_robin(ok, spec.warmup, spec.reps,
                                              spec.max_seconds_per_config)
        stats = {p: timing.summarize(s) for p, s in samples.items()}
    mb = model_bytes(mode, base["N"], base["C"], base["dtype"])
    for prov, fn in ok.items():
        peak = _peak(fn, problem, device)
        st = stats[prov]
        gbps = mb / (st["ms_median"] * 1e-3) / 1e9
        rows.append(dict(base, provider=prov, mode=mode, status="ok", note="", **st,
                         model_bytes=mb, gbps=gbps,
                         frac_copy_bw=gbps / copy_bw_gbps if copy_bw_gbps else math.nan,
                         peak_extra_bytes=peak, warmup_s=round(warm_s[prov], 3)))
    summary = "  ".join(f"{p}={stats[p]['ms_median']:.3g}ms" for p in ok)
    log(f"  {base['kernel']:<14} {base['teacher']:<6} {base['dtype']} {mode:<4} "
        f"N={base['N']:<6} C={base['C']:<7} {summary}")
    return rows


def _peak(fn, problem, device) -> int:
    # A full step starts by dropping the previous .grad, which would count as a free.
    problem.z.grad = None
    if device.type == "cuda":
        return timing.peak_extra_bytes_cuda(fn)
    return timing.peak_extra_bytes_cpu(fn)
