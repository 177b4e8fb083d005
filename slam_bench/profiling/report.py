"""Result files of a throughput sweep: the long CSV, its plot, and the pass/fail checks.

Every check reads the CSV's rows only (never live timers), so a committed CSV can be
re-checked and the plot redrawn from it.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import math
import platform
import re
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import pandas as pd

from slam_bench.profiling.sweep import DTYPE_BYTES

COLUMNS = [
    "kernel", "provider", "mode", "dtype", "N", "C", "teacher", "status", "ms_median", "ms_p20",
    "ms_p80", "model_bytes", "gbps", "frac_copy_bw", "peak_extra_bytes", "warmup_s", "k",
    "alpha_range", "note", "device", "device_name", "threads", "copy_bw_gbps", "peak_method",
    "timer", "sweep", "torch", "triton", "liger_kernel", "python", "git_sha", "timestamp",
]

# CPU targets of issue 6 at N = 8192, C = 1000, float32, forward + backward.
CPU_TARGET_SIZE = (8192, 1000)
CPU_MIN_SPEEDUP_VS_EAGER = 2.0       # slam_loss vs the plain autograd formula
CPU_MAX_PEAK_BUFFERS = 2.0           # peak extra memory, in N x C float32 buffers
CPU_MIN_SPEEDUP_VS_TORCH_CE = 1.0    # distill_loss "no slower" than F.cross_entropy

# GPU goals (gpu_check): full fwd+bwd, bf16, C >= GPU_LARGE_C.
GPU_LARGE_C = 32000
GPU_MIN_FRAC_COPY_BW = 0.85
GPU_MIN_SPEEDUP_EAGER = 3.0
GPU_MIN_SPEEDUP_COMPILE = 1.5
# "No cliff": along the C sweep (C >= 1000), GB/s never falls below this fraction of the
# previous C's value.
GPU_CLIFF_RATIO = 0.8
# Peak extra memory may exceed one gradient buffer by per-row statistics (64 B a row) and
# allocator rounding (1 MiB).
GPU_PEAK_ROW_SLACK_BYTES = 64
GPU_PEAK_FIXED_SLACK_BYTES = 1 << 20


def device_name(device) -> str:
    import torch
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return name or platform.machine() or "cpu"


def file_stem(name: str) -> str:
    """A device name as a file name: runs of other characters become one underscore."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return stem or "device"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def git_sha() -> str:
    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty",
                              "--abbrev=12"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_metadata(device, copy_bw: float, sweep_name: str, timer: str) -> Dict[str, object]:
    import torch
    return {
        "device": device.type, "device_name": device_name(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else "",
        "copy_bw_gbps": copy_bw, "peak_method": device.type, "timer": timer,
        "sweep": sweep_name, "torch": torch.__version__, "triton": _version("triton"),
        "liger_kernel": _version("liger-kernel"), "python": platform.python_version(),
        "git_sha": git_sha(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def to_frame(rows: List[dict], meta: Dict[str, object], peak_methods: Dict[str, str]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for key, value in meta.items():
        df[key] = value
    df["peak_method"] = peak_methods.get(str(meta["device"]), "")
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = math.nan
    return df[COLUMNS]


def save_sweep(rows: List[dict], device, copy_bw: float, sweep_name: str, out_dir: Path,
               peak_methods: Dict[str, str]):
    """The sweep's long CSV and plot, named after the device. Returns (frame, csv, png)."""
    timer = "triton.testing.do_bench" if device.type == "cuda" else "perf_counter, providers interleaved"
    df = to_frame(rows, run_metadata(device, copy_bw, sweep_name, timer), peak_methods)
    stem = file_stem(device_name(device))
    return df, write_csv(df, out_dir, stem), plot(df, Path(out_dir) / f"{stem}.png")


def write_csv(df: pd.DataFrame, out_dir: Path, stem: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}.csv"
    df.to_csv(path, index=False, float_format="%.6g")
    return path


_COLORS = {"slam_bench": "tab:red", "eager": "tab:blue", "compile": "tab:green",
           "torch_ce": "tab:orange", "liger": "tab:purple"}


def plot(df: pd.DataFrame, path: Path, mode: str = "full") -> Path:
    """GB/s against C per provider (at each kernel's most common N, "peaked" teacher if
    present), one panel per (kernel, dtype), with the measured copy bandwidth as the ceiling."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = df[(df["status"] == "ok") & (df["mode"] == mode)]
    if "peaked" in set(ok["teacher"]):
        ok = ok[ok["teacher"] == "peaked"]
    panels = sorted({(k, d) for k, d in zip(ok["kernel"], ok["dtype"])})
    ncols = max(1, len({d for _, d in panels}))
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 3.8 * nrows), squeeze=False)
    bw = float(df["copy_bw_gbps"].iloc[0]) if len(df) else math.nan
    for ax, (kernel, dtype) in zip(axes.flat, panels):
        sub = ok[(ok["kernel"] == kernel) & (ok["dtype"] == dtype)]
        n_main = sub["N"].mode().iloc[0]
        sub = sub[sub["N"] == n_main]
        for prov, g in sub.groupby("provider"):
            g = g.sort_values("C")
            ax.plot(g["C"], g["gbps"], marker="o", label=prov, color=_COLORS.get(prov))
        if math.isfinite(bw):
            ax.axhline(bw, color="k", linestyle="--", linewidth=1,
                       label=f"measured copy bandwidth {bw:.0f} GB/s")
        ax.set_xscale("log")
        ax.set_yscale("log")  # providers differ by orders of magnitude
        ax.set_xlabel("C (classes)")
        ax.set_ylabel("GB/s (model bytes / median time)")
        ax.set_title(f"{kernel} {dtype} {mode}, N={n_main}")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    name = df["device_name"].iloc[0] if len(df) else ""
    fig.suptitle(f"{name}: loss throughput ({mode} = forward + backward)" if mode == "full"
                 else f"{name}: loss throughput ({mode})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pick(df, kernel, provider, mode, dtype, n=None, c=None, teacher=None) -> pd.DataFrame:
    sel = ((df["kernel"] == kernel) & (df["provider"] == provider) & (df["mode"] == mode)
           & (df["dtype"] == dtype) & (df["status"] == "ok"))
    if n is not None:
        sel &= df["N"] == n
    if c is not None:
        sel &= df["C"] == c
    if teacher is not None:
        sel &= df["teacher"] == teacher
    return df[sel]


def check_row(goal: str, value: Optional[float], threshold: str, passed: bool) -> dict:
    return {"goal": goal, "value": value, "threshold": threshold,
            "result": "PASS" if passed else ("MISSING" if value is None else "FAIL")}


def cpu_targets(df: pd.DataFrame) -> List[dict]:
    """The CPU targets of issue 6, from the fp32 rows at N = 8192, C = 1000, mode "full"."""
    n, c = CPU_TARGET_SIZE
    out = []

    def med(kernel, provider):
        rows = _pick(df, kernel, provider, "full", "fp32", n, c)
        return float(rows["ms_median"].min()) if len(rows) else None

    ours, eager = med("slam", "slam_bench"), med("slam", "eager")
    ratio = eager / ours if ours and eager else None
    out.append(check_row(f"slam_loss fwd+bwd speed-up over eager formula (N={n}, C={c}, fp32)",
                      ratio, f">= {CPU_MIN_SPEEDUP_VS_EAGER}x",
                      ratio is not None and ratio >= CPU_MIN_SPEEDUP_VS_EAGER))
    rows = _pick(df, "slam", "slam_bench", "full", "fp32", n, c)
    buffers = float(rows["peak_extra_bytes"].max()) / (n * c * 4) if len(rows) else None
    out.append(check_row("slam_loss fwd+bwd peak extra memory, in N x C fp32 buffers", buffers,
                      f"<= {CPU_MAX_PEAK_BUFFERS}",
                      buffers is not None and buffers <= CPU_MAX_PEAK_BUFFERS))
    ours, ce = med("distill", "slam_bench"), med("distill", "torch_ce")
    ratio = ce / ours if ours and ce else None
    out.append(check_row("distill_loss fwd+bwd speed vs F.cross_entropy soft targets (ce_ms / ours_ms)",
                      ratio, f">= {CPU_MIN_SPEEDUP_VS_TORCH_CE}",
                      ratio is not None and ratio >= CPU_MIN_SPEEDUP_VS_TORCH_CE))
    return out


def gpu_goals(df: pd.DataFrame, kernel: str = "slam") -> List[dict]:
    """The GPU goals of issue 6 for `kernel`'s fused provider, from the sweep rows."""
    out = []
    ours = _pick(df, kernel, "slam_bench", "full", "bf16")
    large = ours[ours["C"] >= GPU_LARGE_C]
    frac = float(large["frac_copy_bw"].min()) if len(large) else None
    out.append(check_row(f"{kernel} bf16 fwd+bwd at C >= {GPU_LARGE_C}: min fraction of copy bandwidth",
                      frac, f">= {GPU_MIN_FRAC_COPY_BW}",
                      frac is not None and frac >= GPU_MIN_FRAC_COPY_BW))
    keys = ["N", "C", "teacher"]
    for prov, need in (("eager", GPU_MIN_SPEEDUP_EAGER), ("compile", GPU_MIN_SPEEDUP_COMPILE)):
        other = _pick(df, kernel, prov, "full", "bf16")
        m = large.merge(other, on=keys, suffixes=("", "_o"))
        sp = float((m["ms_median_o"] / m["ms_median"]).min()) if len(m) else None
        out.append(check_row(f"{kernel} bf16 fwd+bwd at C >= {GPU_LARGE_C}: min speed-up over {prov}",
                          sp, f">= {need}x", sp is not None and sp >= need))
    worst = None
    for (_, dtype, teacher), g in _pick(df, kernel, "slam_bench", "full", "bf16").groupby(
            ["N", "dtype", "teacher"]):
        g = g[g["C"] >= 1000].sort_values("C")
        if len(g) < 2:
            continue
        r = (g["gbps"].values[1:] / g["gbps"].values[:-1]).min()
        worst = r if worst is None else min(worst, r)
    out.append(check_row(f"{kernel} bf16 fwd+bwd: no cliff along C (worst GB/s ratio to previous C)",
                      worst, f">= {GPU_CLIFF_RATIO}", worst is not None and worst >= GPU_CLIFF_RATIO))
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
                      "<= 1 (+ per-row stats)", passed))
    return out


def format_checks(checks: List[dict]) -> str:
    width = max(len(c["goal"]) for c in checks)
    lines = [f"{'goal'.ljust(width)}  {'value':>10}  {'threshold':<22}  result"]
    for c in checks:
        v = "n/a" if c["value"] is None else f"{c['value']:.3g}"
        lines.append(f"{c['goal'].ljust(width)}  {v:>10}  {c['threshold']:<22}  {c['result']}")
    return "\n".join(lines)


def format_table(df: pd.DataFrame) -> str:
    """Median ms per provider (columns) for each measured configuration of mode "full"."""
    ok = df[(df["status"] == "ok") & (df["mode"] == "full")]
    if not len(ok):
        return "(no measurements)"
    t = ok.pivot_table(index=["kernel", "dtype", "teacher", "N", "C"], columns="provider",
                       values="ms_median", aggfunc="min")
    return "median ms, forward + backward:\n" + t.to_string(float_format=lambda v: f"{v:.3g}")
