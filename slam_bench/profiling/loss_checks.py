"""The SLaM loss family's correctness rows (for the GPU check) and its targets and goals.

Every goal is computed from the sweep's CSV rows only, and every PASS/FAIL compares the value
printed next to it with the threshold printed next to it.
"""
from __future__ import annotations

import contextlib
from typing import Callable, List
from unittest import mock

import pandas as pd
import torch

from slam_bench.profiling.accuracy import FP32_RTOL, judge, lowp_tol, rel_err
from slam_bench.profiling.families import DTYPE_BYTES, DTYPES
from slam_bench.profiling.report import check_row, pick

# ---------------------------------------------------------------- CPU targets (slam-bench profile)

CPU_TARGET_SIZE = (8192, 1000)          # N, C; float32, forward + backward
CPU_TARGET_THREADS = 2
CPU_MIN_SPEEDUP_DEFAULT = 3.0           # slam_loss(...) vs the eager formula
CPU_MIN_SPEEDUP_NO_CHECKS = 3.5         # slam_loss(..., check_values=False) vs the eager formula
CPU_MAX_PEAK_BUFFERS = 2.0              # peak extra memory, in N x C float32 buffers
CPU_MIN_SPEEDUP_VS_TORCH_CE = 1.2       # distill_loss vs soft-target F.cross_entropy
CPU_MIN_SPEEDUP_VS_COMPILE = 1.2        # distill_loss vs torch.compile of the distill formula
CPU_MIN_SPEEDUP_LOADED = 1.5            # slam_loss vs the eager formula, cores oversubscribed 3x


def cpu_targets(df: pd.DataFrame) -> List[dict]:
    """The CPU targets, from the fp32 rows at N = 8192, C = 1000, mode "full"."""
    n, c = CPU_TARGET_SIZE
    threads = sorted({str(t) for t in df["threads"].dropna()}) if "threads" in df else []
    at = f"N={n}, C={c}, fp32, {'/'.join(threads) or '?'} threads (stated at {CPU_TARGET_THREADS})"

    def med(kernel, provider):
        rows = pick(df, kernel, provider, "full", "fp32", n, c)
        return float(rows["ms_median"].min()) if len(rows) else None

    def speedup(goal, kernel, ours_provider, other, need):
        ours, base = med(kernel, ours_provider), med(kernel, other)
        ratio = base / ours if ours and base else None
        return check_row(goal, ratio, f">= {need}x", ratio is not None and ratio >= need)

    out = [
        speedup(f"slam_loss (default checks) fwd+bwd vs the eager formula ({at})", "slam",
                "slam_bench_checked", "eager", CPU_MIN_SPEEDUP_DEFAULT),
        speedup(f"slam_loss check_values=False fwd+bwd vs the eager formula ({at})", "slam",
                "slam_bench", "eager", CPU_MIN_SPEEDUP_NO_CHECKS),
    ]
    rows = pick(df, "slam", "slam_bench", "full", "fp32", n, c)
    buffers = float(rows["peak_extra_bytes"].max()) / (n * c * 4) if len(rows) else None
    out.append(check_row("slam_loss fwd+bwd peak extra memory, in N x C fp32 buffers", buffers,
                         f"<= {CPU_MAX_PEAK_BUFFERS}",
                         buffers is not None and buffers <= CPU_MAX_PEAK_BUFFERS))
    out.append(speedup("distill_loss check_values=False fwd+bwd vs F.cross_entropy soft targets",
                       "distill", "slam_bench", "torch_ce", CPU_MIN_SPEEDUP_VS_TORCH_CE))
    return out


# ---------------------------------------------------------------- GPU goals (gpu_check)

# Rows kept on chip move the floor's bytes (6 per element in bf16): 0.85 of copy bandwidth.
GPU_MIN_FRAC_ON_CHIP = 0.85
# Streamed rows (C > 8192) read z and y twice by design (10 B per element in bf16): the same
# 0.85 of what that design can reach, 0.85 x 6 / 10 of the floor's bandwidth.
GPU_MIN_FRAC_STREAMED = round(0.85 * 6 / 10, 2)
GPU_LARGE_C = 32000
GPU_MIN_SPEEDUP_EAGER = 3.0
GPU_MIN_SPEEDUP_COMPILE = 1.5
# "No cliff" (Liger's JSD lost 12x when the vocabulary doubled): along the C sweep (C >= 1000)
# the floor's GB/s never falls below half the previous C's. The step from rows on chip to
# streamed rows costs at most 6/10 by design.
GPU_CLIFF_RATIO = 0.5
# The default value checks, fused into the loss pass, add per-row stats (12 B a row, nothing
# next to the 2 x C x 2 B a bf16 row reads) and one small device-to-host read with its sync
# (and, for a per-row alpha tensor, the host's alpha range check): about 10-30 us against a
# ~0.4-1 ms step at N = 4096..8192, C = 32000, bf16. The checked step may take at most this
# factor of the unchecked step's median time.
GPU_MAX_CHECKED_RATIO = 1.15
# Peak extra memory may exceed one gradient buffer by per-row vectors (64 B a row) and
# allocator rounding (1 MiB).
# Split rows (a few wide rows over several programs each) must be faster than one program
# per row where they apply: at N = 8 an H100 would otherwise run 8 of its 132 SMs.
GPU_MIN_SPLIT_SPEEDUP = 1.0
GPU_PEAK_ROW_SLACK_BYTES = 64
GPU_PEAK_FIXED_SLACK_BYTES = 1 << 20


def gpu_goals(df: pd.DataFrame, kernel: str = "slam") -> List[dict]:
    """The GPU goals for `kernel`'s fused provider ("slam_bench"), bf16, forward + backward."""
    out = []
    ours = pick(df, kernel, "slam_bench", "full", "bf16")
    on_chip = ours[(ours["C"] >= 1000) & (ours["C"] <= 8192)]
    streamed = ours[ours["C"] >= GPU_LARGE_C]
    for rows, what, need in ((on_chip, "1000 <= C <= 8192 (rows on chip)", GPU_MIN_FRAC_ON_CHIP),
                             (streamed, f"C >= {GPU_LARGE_C} (streamed rows)",
                              GPU_MIN_FRAC_STREAMED)):
        frac = float(rows["frac_copy_bw_floor"].min()) if len(rows) else None
        out.append(check_row(f"{kernel} bf16 fwd+bwd, {what}: min fraction of copy bandwidth "
                             "at the floor's bytes", frac, f">= {need}",
                             frac is not None and frac >= need))
    keys = ["N", "C", "teacher"]
    for prov, need in (("eager", GPU_MIN_SPEEDUP_EAGER), ("compile", GPU_MIN_SPEEDUP_COMPILE)):
        other = pick(df, kernel, prov, "full", "bf16")
        m = streamed.merge(other, on=keys, suffixes=("", "_o"))
        sp = float((m["ms_median_o"] / m["ms_median"]).min()) if len(m) else None
        out.append(check_row(f"{kernel} bf16 fwd+bwd at C >= {GPU_LARGE_C}: min speed-up over {prov}",
                             sp, f">= {need}x", sp is not None and sp >= need))
    # Along C: the best floor GB/s measured at each C (over N), peaked teacher.
    best = ours[(ours["C"] >= 1000) & (ours["teacher"] == "peaked")].groupby("C")["gbps_floor"].max()
    worst = float((best.values[1:] / best.values[:-1]).min()) if len(best) >= 2 else None
    out.append(check_row(f"{kernel} bf16 fwd+bwd: no cliff along C (worst GB/s ratio to the "
                         "previous C)", worst, f">= {GPU_CLIFF_RATIO}",
                         worst is not None and worst >= GPU_CLIFF_RATIO))
    from slam_bench.profiling.loss_family import CHECKED_GOAL_C, CHECKED_GOAL_N
    lo, hi = min(CHECKED_GOAL_N), max(CHECKED_GOAL_N)
    at = ours[(ours["C"] == CHECKED_GOAL_C) & (ours["N"] >= lo) & (ours["N"] <= hi)]
    checked = pick(df, kernel, "slam_bench_checked", "full", "bf16")
    m = at.merge(checked, on=keys, suffixes=("", "_o"))
    # Every N of the goal measured, or MISSING.
    ratio = (float((m["ms_median_o"] / m["ms_median"]).max())
             if set(CHECKED_GOAL_N) <= set(m["N"]) else None)
    out.append(check_row(f"{kernel} bf16 fwd+bwd at C = {CHECKED_GOAL_C}, N = {lo}..{hi}: "
                         "default (fused) checks' time / check_values=False's (max)", ratio,
                         f"<= {GPU_MAX_CHECKED_RATIO}x",
                         ratio is not None and ratio <= GPU_MAX_CHECKED_RATIO))
    from slam_bench.profiling.loss_family import SPLIT_GOAL_C, SPLIT_GOAL_N
    at = ours[(ours["C"] == SPLIT_GOAL_C) & ours["N"].isin(SPLIT_GOAL_N)]
    unsplit = pick(df, kernel, "slam_bench_unsplit", "full", "bf16")
    m = at.merge(unsplit, on=keys, suffixes=("", "_o"))
    speedup = (float((m["ms_median_o"] / m["ms_median"]).min())
               if set(SPLIT_GOAL_N) <= set(m["N"]) else None)
    out.append(check_row(f"{kernel} bf16 fwd+bwd at C = {SPLIT_GOAL_C}, N in "
                         f"{', '.join(map(str, SPLIT_GOAL_N))}: split rows' speed-up over one "
                         "program per row (min)", speedup, f">= {GPU_MIN_SPLIT_SPEEDUP}x",
                         speedup is not None and speedup >= GPU_MIN_SPLIT_SPEEDUP))
    full = df[(df["kernel"] == kernel) & (df["provider"] == "slam_bench") & (df["mode"] == "full")
              & (df["status"] == "ok")]
    if len(full):
        grad = full["N"] * full["C"] * full["dtype"].map(DTYPE_BYTES)
        limit = grad + GPU_PEAK_ROW_SLACK_BYTES * full["N"] + GPU_PEAK_FIXED_SLACK_BYTES
        ratio = float((full["peak_extra_bytes"] / grad).max())
        passed = bool((full["peak_extra_bytes"] <= limit).all())
    else:
        ratio, passed = None, False
    out.append(check_row(f"{kernel} fwd+bwd peak extra memory, in gradient buffers (max)", ratio,
                         "<= 1 (+ 64 B a row + 1 MiB)", passed))
    return out


# ---------------------------------------------------------------- correctness (gpu_check)

# (N, C) of the dtype grid: C = 1000 (on chip, not a multiple of 16), 8192 (widest row on
# chip), 32769 (streamed, past the 32k of docs/kernels.md), 262,144 (the largest supported).
GPU_SIZES = ((256, 1000), (64, 8192), (64, 32769), (16, 262144))
DRY_SIZES = ((5, 10), (3, 100))
# Paths the dtype grid does not take, in bf16: (label, N, C, options).
GPU_SPECIAL = (
    ("per-row k, odd C (peeled head)", 64, 50257, dict(k="rows")),
    ("k = C on chip", 128, 1000, dict(k="C")),
    ("k = C streamed", 16, 32000, dict(k="C")),
    ("ties overflow the top-k slots", 16, 32000, dict(teacher="uniform")),
    ("reduction none, grad_output != 1", 256, 1000, dict(reduction="none")),
    ("overwrite_logits", 256, 1000, dict(overwrite=True)),
    # A few wide rows: each split over several programs (kernels/split_rows.py).
    ("split rows", 8, 128256, dict(split=True)),
    ("split rows, per-row k, odd C", 64, 50257, dict(split=True, k="rows")),
    ("split rows, ties overflow the slots", 8, 32000, dict(split=True, teacher="uniform")),
)
DRY_SPECIAL = (
    ("per-row k", 4, 37, dict(k="rows")),
    ("k = C", 4, 37, dict(k="C")),
    ("reduction none, grad_output != 1", 4, 37, dict(reduction="none")),
    ("overwrite_logits", 4, 37, dict(overwrite=True)),
    ("split rows", 3, 45, dict(split=True)),
    ("split rows, per-row k", 3, 45, dict(split=True, k="rows")),
)
# The dry run splits rows as a 4-SM device would, in the tests' small blocks (the interpreter
# has no SMs and cannot afford a streamed C).
DRY_SPLIT_SMS = 4


def _case(kernel, dtype_name, n, c, device, opts):
    from slam_bench.profiling.loss_family import make_problem
    p = make_problem("slam" if kernel == "slam" else "distill", n, c, dtype_name, device,
                     "peaked", seed=1, backend="triton")
    z, y, alpha = p.data["z"], p.data["y"], p.data["alpha"]
    if opts.get("teacher") == "uniform":
        y = torch.full_like(y, 1.0 / c)
    k = p.data["k"]
    if opts.get("k") == "rows":
        gen = torch.Generator(device=device).manual_seed(2)
        k = torch.randint(1, 9, (n,), generator=gen, device=device)
    elif opts.get("k") == "C":
        k = c
    reduction = opts.get("reduction", "mean")
    go = (torch.randn(n, device=device, generator=torch.Generator(device=device).manual_seed(3))
          if reduction == "none" else torch.tensor(1.0, device=device))
    return z, y, alpha, k, reduction, go


@contextlib.contextmanager
def _split_rows(dry_run: bool):
    """Where rows must be split: on a GPU as its SM count decides (the case's N is below
    2 x SMs), in the dry run as a DRY_SPLIT_SMS-SM device in small blocks; raises if the
    split launch did not run (a silent fallback would measure the other path)."""
    from slam_bench.kernels import config
    from slam_bench.kernels import split_rows
    from slam_bench.profiling.loss_device_checks import _small_blocks
    calls = []
    real = split_rows.split_launch

    def counted(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(split_rows, "split_launch", counted))
        if dry_run:  # the dry run's small blocks (the fused-check rows' own), a 4-SM device
            stack.enter_context(_small_blocks(True))
            stack.enter_context(mock.patch.object(config, "SM_COUNT_OVERRIDE", DRY_SPLIT_SMS))
        yield
    if not calls:
        raise AssertionError("the rows were not split (one program per row ran)")


def _run_case(kernel, z, y, alpha, k, reduction, go, overwrite):
    from slam_bench import distill_loss, slam_loss
    leaf = z.detach().clone().requires_grad_(True)
    x = leaf * 1.0 if overwrite else leaf  # overwrite_logits writes into an intermediate
    if kernel == "slam":
        loss = slam_loss(x, y, alpha, k, reduction=reduction, backend="triton",
                         overwrite_logits=overwrite)
    else:
        loss = distill_loss(x, y, reduction=reduction, backend="triton", overwrite_logits=overwrite)
    loss.backward(go.to(loss.dtype))
    return loss, leaf.grad


def _reference(kernel, z, y, alpha, k, reduction, go, dtype=None):
    """The float64 reference (dtype None), or PyTorch's own formula in `dtype`."""
    from slam_bench.reference import distill_loss_reference, slam_loss_reference
    wd = torch.float64 if dtype is None else dtype
    zr = z.detach().to(wd).requires_grad_(True)
    yr, ar = y.to(wd), alpha.to(wd)
    if kernel == "slam":
        out = slam_loss_reference(zr, yr, ar, k, reduction=reduction)
    else:
        out = distill_loss_reference(zr, yr, reduction=reduction)
    out.backward(go.to(wd))
    return out, zr.grad


def correctness(device: torch.device, dry_run: bool, log: Callable[[str], None]) -> List[dict]:
    """One row per case: the fused kernel's (backend="triton") loss and gradient error
    against the float64 reference, and the tolerance it is held to; then the default value
    checks' errors and compile mode (slam_bench.profiling.loss_device_checks)."""
    cases = []
    for dtype_name in ("fp32", "bf16", "fp16"):
        for kernel in ("slam", "distill"):
            for n, c in (DRY_SIZES if dry_run else GPU_SIZES):
                cases.append((kernel, dtype_name, n, c, "", {}))
    for label, n, c, opts in (DRY_SPECIAL if dry_run else GPU_SPECIAL):
        cases.append(("slam", "bf16", n, c, label, opts))
    rows = []
    for kernel, dtype_name, n, c, label, opts in cases:
        row = dict(kernel=kernel, dtype=dtype_name, N=n, C=c, case=label)
        name = f"{kernel} {dtype_name} N={n} C={c}" + (f" ({label})" if label else "")
        z, y, alpha, k, reduction, go = _case(kernel, dtype_name, n, c, device, opts)
        l64, g64 = _reference(kernel, z, y, alpha, k, reduction, go)

        def errors():
            with _split_rows(dry_run) if opts.get("split") else contextlib.nullcontext():
                loss, grad = _run_case(kernel, z, y, alpha, k, reduction, go,
                                       opts.get("overwrite", False))
            return rel_err(loss, l64), rel_err(grad, g64)

        def tolerances():
            if dtype_name == "fp32":
                return FP32_RTOL, FP32_RTOL
            # PyTorch's own error in this dtype sets the scale
            ll, gl = _reference(kernel, z, y, alpha, k, reduction, go, DTYPES[dtype_name])
            return lowp_tol(rel_err(ll, l64)), lowp_tol(rel_err(gl, g64))

        rows.append(judge(row, name, errors, tolerances, log))
    # The default (fused) value checks raise the torch backend's errors, and compile mode.
    from slam_bench.profiling import loss_device_checks
    rows += loss_device_checks.fused_check_rows(device, dry_run, log)
    rows += loss_device_checks.compile_rows(device, dry_run, log)
    return rows
