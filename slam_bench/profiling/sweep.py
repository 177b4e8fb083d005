"""The throughput sweep of spec/kernels.md: which configurations, and measuring them into rows.

A sweep is a list of `families.Config` (a problem, its modes and providers); `SweepSpec` builds
the CPU ones from a few numbers, and each family lists its GPU configurations (goal rows first).
`run_sweep` measures every (configuration, mode) with all its providers side by side, each
provider on its own copy of the inputs, and returns one row per provider, including a
"skipped" row with the reason for each provider that cannot run there.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

# The loss family registers itself on import: imported here, every sweep sees it.
from slam_bench.profiling import loss_family  # noqa: F401
from slam_bench.profiling import timing
from slam_bench.profiling.families import (FAMILIES, MODES, Config, KernelFamily, Problem,
                                           Unavailable, family_of)

@dataclass(frozen=True)
class SweepSpec:
    """A CPU sweep: C sweep at n_fixed, N sweep at c_for_n_sweep, every kernel x teacher x
    dtype x mode; with the CPU timer's settings."""
    name: str
    kernels: Tuple[str, ...]
    dtypes: Tuple[str, ...]
    teachers: Tuple[str, ...]
    c_values: Tuple[int, ...]
    n_fixed: int
    n_values: Tuple[int, ...]
    c_for_n_sweep: int
    modes: Tuple[str, ...] = MODES
    providers: Optional[Tuple[str, ...]] = None  # None: each family's providers
    # CPU timer: warm-up calls and interleaved rounds; seconds after which rounds stop early.
    warmup: int = 2
    reps: int = 15
    max_seconds_per_config: float = 20.0
    # torch.compile only for these (kernel, mode) pairs: its warm-up costs tens of seconds
    # per graph on a small CPU, which the quick sweep cannot afford for every graph.
    compile_only: Optional[Tuple[Tuple[str, str], ...]] = None
    backend: str = "auto"  # backend of this library's providers

    def configs(self) -> List[Config]:
        """Bf16 first, then the other dtypes."""
        sizes = [(self.n_fixed, c) for c in self.c_values]
        sizes += [(n, self.c_for_n_sweep) for n in self.n_values
                  if (n, self.c_for_n_sweep) not in sizes]
        out = []
        for dtype in self.dtypes:
            for kernel in self.kernels:
                teachers = ("peaked",) if kernel == "distill_onehot" else self.teachers
                for teacher in teachers:
                    for n, c in sizes:
                        out.append(Config(kernel, teacher, dtype, n, c, self.modes, self.providers))
        return out

    def skip(self, provider: str, kernel: str, mode: str) -> Optional[str]:
        if provider == "compile" and self.compile_only is not None \
                and (kernel, mode) not in self.compile_only:
            only = ", ".join("/".join(p) for p in self.compile_only)
            return (f"{self.name}: torch.compile measured only for {only} (warm-up cost)"
                    if only else f"{self.name}: torch.compile not measured (warm-up cost)")
        return None


CPU_QUICK = SweepSpec(
    name="cpu-quick", kernels=("slam", "distill"), dtypes=("fp32",), teachers=("peaked",),
    c_values=(10, 100, 1000), n_fixed=8192, n_values=(), c_for_n_sweep=1000,
    reps=9, max_seconds_per_config=15.0, compile_only=(("slam", "full"),))
CPU_FULL = SweepSpec(
    name="cpu-full", kernels=("slam", "distill"), dtypes=("bf16", "fp32"),
    teachers=("peaked", "random"), c_values=(10, 100, 1000, 10000), n_fixed=8192,
    n_values=(1024, 4096, 16384), c_for_n_sweep=1000, reps=15)
# gpu_check --dry-run: the Triton kernel in the interpreter on CPU tensors, tiny sizes.
DRY = SweepSpec(
    name="dry-run", kernels=("slam", "distill"), dtypes=("bf16",), teachers=("peaked",),
    c_values=(10, 100), n_fixed=16, n_values=(), c_for_n_sweep=100, warmup=0, reps=2,
    compile_only=(), backend="triton")


def gpu_configs() -> Tuple[List[Config], List[Config]]:
    """(goal configurations of every family, the rest of their GPU sweeps)."""
    goals = [c for fam in FAMILIES.values() for c in fam.goal_configs()]
    rest = [c for fam in FAMILIES.values() for c in fam.gpu_configs()]
    return goals, rest


def _skip_row(base: dict, provider: str, mode: str, reason: str) -> dict:
    return dict(base, provider=provider, mode=mode, status="skipped", note=reason)


def build(family: KernelFamily, provider: str, problem: Problem, mode: str):
    """(step, own problem): a zero-argument callable running one step of `mode` ("fwd":
    forward under no_grad; "full": forward + backward from no .grad) on the provider's own
    copy of the inputs. Raises Unavailable."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    own = problem.own_copy()
    loss = family.loss_fn(provider, own)
    x = own.data[own.grad_input]
    if mode == "fwd":
        def fwd():
            with torch.no_grad():
                return loss(own)
        return fwd, own
    x.requires_grad_(True)

    def full():
        x.grad = None  # every step starts from no .grad: no accumulation pass
        loss(own).backward()
    return full, own


def run_sweep(configs: Sequence[Config], device: torch.device, copy_bw_gbps: float, *,
              name: str, backend: str = "auto", warmup: int = 2, reps: int = 15,
              max_seconds: float = 20.0,
              skip: Optional[Callable[[str, str, str], Optional[str]]] = None,
              log: Callable[[str], None] = print, deadline: Optional[float] = None,
              use_cuda_timer: Optional[bool] = None) -> List[dict]:
    """Rows (dicts) of measurements. A (configuration, mode, provider) measured once is not
    measured again; past `deadline` (time.monotonic) what is left is recorded as skipped."""
    cuda_timer = device.type == "cuda" if use_cuda_timer is None else use_cuda_timer
    rows: List[dict] = []
    told, done = set(), set()
    for cfg in configs:
        fam = family_of(cfg.kernel)
        problem = None
        for mode in cfg.modes:
            key = (cfg.kernel, cfg.teacher, cfg.dtype, cfg.n, cfg.c, mode)
            todo = [p for p in (cfg.providers or fam.providers) if (key, p) not in done]
            done.update((key, p) for p in todo)
            if not todo:
                continue
            if problem is None:
                problem = fam.make_problem(cfg.kernel, cfg.n, cfg.c, cfg.dtype, device,
                                           cfg.teacher, backend=backend)
            base = dict(family=fam.name, kernel=cfg.kernel, teacher=cfg.teacher, dtype=cfg.dtype,
                        N=cfg.n, C=cfg.c, params=problem.params)
            steps = {}
            for prov in todo:
                reason = skip(prov, cfg.kernel, mode) if skip else None
                if reason is None and deadline is not None and time.monotonic() > deadline:
                    reason = "time budget of the run spent"
                if reason is None:
                    try:
                        steps[prov] = build(fam, prov, problem, mode)
                    except Unavailable as e:
                        reason = str(e)
                if reason is not None:
                    rows.append(_skip_row(base, prov, mode, reason))
                    if (prov, reason) not in told:
                        log(f"  skipping {prov}: {reason}")
                        told.add((prov, reason))
            rows += _measure(fam, steps, problem, base, mode, device, cuda_timer, copy_bw_gbps,
                             warmup, reps, max_seconds, deadline, log)
            del steps
        del problem
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for r in rows:
        r["sweep"] = name
    return rows


def _measure(fam, steps, problem, base, mode, device, cuda_timer, copy_bw_gbps, warmup, reps,
             max_seconds, deadline, log) -> List[dict]:
    rows = []
    ok: Dict[str, Callable] = {}
    warm_s = {}
    for prov, (fn, own) in steps.items():  # first calls: compile, autotune; a failure is recorded
        if deadline is not None and time.monotonic() > deadline:
            rows.append(_skip_row(base, prov, mode, "time budget of the run spent"))
            continue
        t0 = time.perf_counter()
        try:
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
        except Exception as e:  # noqa: BLE001 - any provider failure becomes a recorded row
            first = str(e).splitlines()[0][:300] if str(e) else ""
            msg = f"failed: {type(e).__name__}: {first}"
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
        samples = timing.time_cpu_round_robin(ok, warmup, reps, max_seconds)
        stats = {p: timing.summarize(s) for p, s in samples.items()}
    floor = fam.floor_bytes(problem, mode)
    for prov, fn in ok.items():
        own = steps[prov][1]
        own.data[own.grad_input].grad = None  # a full step starts by dropping .grad: not a free
        peak = (timing.peak_extra_bytes_cuda(fn) if device.type == "cuda"
                else timing.peak_extra_bytes_cpu(fn))
        st = stats[prov]
        moved = fam.provider_bytes(prov, problem, mode)
        sec = st["ms_median"] * 1e-3
        gbps_p, gbps_f = moved / sec / 1e9, floor / sec / 1e9
        bw = copy_bw_gbps if copy_bw_gbps and math.isfinite(copy_bw_gbps) else math.nan
        rows.append(dict(
            base, provider=prov, mode=mode, status="ok", note="", **st,
            backend=problem.backend if prov.startswith("slam_bench") else "",
            provider_bytes=moved, floor_bytes=floor, gbps_provider=gbps_p, gbps_floor=gbps_f,
            frac_copy_bw_provider=gbps_p / bw, frac_copy_bw_floor=gbps_f / bw,
            peak_extra_bytes=peak, warmup_s=round(warm_s[prov], 3)))
    summary = "  ".join(f"{p}={stats[p]['ms_median']:.3g}ms" for p in ok)
    log(f"  {base['kernel']:<14} {base['teacher']:<6} {base['dtype']} {mode:<4} "
        f"N={base['N']:<7} C={base['C']:<7} {summary}")
    return rows

