"""The throughput sweep of docs/kernels.md: which configurations, and measuring them into rows.

A sweep is a list of `families.Config` (a problem, its modes and providers). Each registered
family lists its CPU configurations by sweep name (`KernelFamily.cpu_grids`) and its GPU ones
(goal rows first); `SweepSpec` names a CPU sweep and holds its timer settings.
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

from slam_bench.profiling import timing
from slam_bench.profiling.families import (FAMILIES, MODES, Config, KernelFamily, Problem,
                                           Unavailable, family_of)


@dataclass(frozen=True)
class SweepSpec:
    """A CPU sweep: the families' grids of this name, with the CPU timer's settings."""
    name: str
    # CPU timer: warm-up calls and interleaved rounds; seconds after which rounds stop early.
    warmup: int = 2
    reps: int = 15
    max_seconds_per_config: float = 20.0
    # torch.compile only for these (kernel, mode) pairs: its warm-up costs tens of seconds
    # per graph on a small CPU, which the quick sweep cannot afford for every graph.
    compile_only: Optional[Tuple[Tuple[str, str], ...]] = None
    backend: str = "auto"  # backend of this library's providers

    def configs(self, families: Optional[Sequence[str]] = None) -> List[Config]:
        """Every registered family's grids of this sweep (or those of `families`), in
        registration order."""
        chosen = [FAMILIES[f] for f in families] if families else list(FAMILIES.values())
        return [cfg for fam in chosen for grid in fam.cpu_grids.get(self.name, ())
                for cfg in grid.configs()]

    def skip(self, provider: str, kernel: str, mode: str) -> Optional[str]:
        if provider == "compile" and self.compile_only is not None \
                and (kernel, mode) not in self.compile_only:
            only = ", ".join("/".join(p) for p in self.compile_only)
            return (f"{self.name}: torch.compile measured only for {only} (warm-up cost)"
                    if only else f"{self.name}: torch.compile not measured (warm-up cost)")
        return None


CPU_QUICK = SweepSpec(name="cpu-quick", reps=9, max_seconds_per_config=15.0,
                      compile_only=(("slam", "full"),))
CPU_FULL = SweepSpec(name="cpu-full", reps=15)
# gpu_check --dry-run: the Triton kernels in the interpreter on CPU tensors, tiny sizes.
DRY = SweepSpec(name="dry-run", warmup=0, reps=2, compile_only=(), backend="triton")


def gpu_configs(families: Optional[Sequence[str]] = None) -> Tuple[List[Config], List[Config]]:
    """(goal configurations of every family (or of `families`), the rest of their GPU
    sweeps): every family's goal rows come before any family's other rows."""
    chosen = [FAMILIES[f] for f in families] if families else list(FAMILIES.values())
    goals = [c for fam in chosen for c in fam.goal_configs()]
    rest = [c for fam in chosen for c in fam.gpu_configs()]
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
    if mode == "fwd":
        def fwd():
            with torch.no_grad():
                return loss(own)
        return fwd, own
    leaves = list(own.leaves())
    for x in leaves:
        x.requires_grad_(True)

    def full():
        for x in leaves:
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
            key = (cfg.kernel, cfg.teacher, cfg.dtype, cfg.n, cfg.c, cfg.params, mode)
            todo = [p for p in (cfg.providers or fam.providers) if (key, p) not in done]
            done.update((key, p) for p in todo)
            if not todo:
                continue
            if problem is None:
                problem = fam.make_problem(cfg.kernel, cfg.n, cfg.c, cfg.dtype, device,
                                           cfg.teacher, backend=backend, **dict(cfg.params))
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
    # The load while this configuration was timed (the 1-minute average, read right after).
    load = timing.machine_load()
    if device.type == "cpu" and timing.is_busy(load["load_avg_1m"], load["cores"]):
        log(f"  warning: load average {load['load_avg_1m']:.2f} on {load['cores']} cores while "
            f"timing {base['kernel']} {mode} N={base['N']} C={base['C']}: the machine is busy, "
            f"these times and ratios are not a quiet machine's")
    floor = fam.floor_bytes(problem, mode)
    flops = fam.flops(problem, mode)
    for prov, fn in ok.items():
        for x in steps[prov][1].leaves():
            x.grad = None  # a full step starts by dropping .grad: not a free
        peak = (timing.peak_extra_bytes_cuda(fn) if device.type == "cuda"
                else timing.peak_extra_bytes_cpu(fn))
        st = stats[prov]
        moved = fam.provider_bytes(prov, problem, mode)
        sec = st["ms_median"] * 1e-3
        gbps_p, gbps_f = moved / sec / 1e9, floor / sec / 1e9
        bw = copy_bw_gbps if copy_bw_gbps and math.isfinite(copy_bw_gbps) else math.nan
        rows.append(dict(
            base, provider=prov, mode=mode, status="ok", note="", **st,
            spread=timing.spread(st), **load,
            backend=problem.backend if prov.startswith("slam_bench") else "",
            provider_bytes=moved, floor_bytes=floor, gbps_provider=gbps_p, gbps_floor=gbps_f,
            frac_copy_bw_provider=gbps_p / bw, frac_copy_bw_floor=gbps_f / bw,
            flops=flops or math.nan, tflops=flops / sec / 1e12 if flops else math.nan,
            peak_extra_bytes=peak, warmup_s=round(warm_s[prov], 3)))
    summary = "  ".join(f"{p}={stats[p]['ms_median']:.3g}ms (\u00b1{timing.spread(stats[p]):.0%})"
                        for p in ok)
    log(f"  {base['kernel']:<14} {base['teacher']:<6} {base['dtype']} {mode:<4} "
        f"N={base['N']:<7} C={base['C']:<7} {summary}")
    return rows

