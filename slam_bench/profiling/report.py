"""Result files of a throughput sweep: the long CSV, its plot, the printed tables, and the
helpers the families' targets and goals are written with (`pick`, `check_row`).

Every check reads the CSV's rows only (never live timers), so a committed CSV can be
re-checked and the plot redrawn from it.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import math
import platform
import re
from pathlib import Path
from typing import Dict, List, Optional

import io

import pandas as pd

from slam_bench.fileio import atomic_write
from slam_bench.provenance import git_sha

COLUMNS = [
    "family", "kernel", "provider", "mode", "dtype", "N", "C", "teacher", "params", "backend",
    "status", "ms_median", "ms_p20", "ms_p80", "spread", "provider_bytes", "floor_bytes", "gbps_provider",
    "gbps_floor", "frac_copy_bw_provider", "frac_copy_bw_floor", "flops", "tflops",
    "peak_extra_bytes", "warmup_s",
    "note", "device", "device_name", "threads", "load_avg_1m", "cores", "copy_bw_gbps", "peak_method", "timer", "sweep",
    "torch", "triton", "liger_kernel", "python", "git_sha", "timestamp",
]


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


def run_metadata(device, copy_bw: float, timer: str) -> Dict[str, object]:
    import torch
    return {
        "device": device.type, "device_name": device_name(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else "",
        "copy_bw_gbps": copy_bw, "peak_method": device.type, "timer": timer,
        "torch": torch.__version__, "triton": _version("triton"),
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


def save_sweep(rows: List[dict], device, copy_bw: float, out_dir: Path,
               peak_methods: Dict[str, str], suffix: str = "", memory_kept: bool = False):
    """The sweep's long CSV and plot, named after the device (and `suffix`, e.g. the families
    of a partial sweep: "<device>-<suffix>.csv"). memory_kept: the CPU timers ran under
    timing.allocator_steady_state. Returns (frame, csv, png); png is None when matplotlib is
    missing (the GPU check runs without a project install)."""
    if device.type == "cuda":
        timer = "triton.testing.do_bench"
    else:
        timer = ("perf_counter, providers interleaved, each timed call after an untimed one "
                 "of its own" + ("; freed memory kept in the heap" if memory_kept else ""))
    df = to_frame(rows, run_metadata(device, copy_bw, timer), peak_methods)
    stem = file_stem(device_name(device)) + (f"-{suffix}" if suffix else "")
    csv = write_csv(df, Path(out_dir), stem)
    try:
        png = plot(df, Path(out_dir) / f"{stem}.png")
    except ImportError:
        png = None
    return df, csv, png


def write_csv(df: pd.DataFrame, out_dir: Path, stem: str) -> Path:
    return write_frame(df, Path(out_dir) / f"{stem}.csv")


def write_frame(df: pd.DataFrame, path: Path, float_format: str = "%.6g") -> Path:
    """`df` as a CSV at `path`, written atomically (slam_bench.fileio)."""
    atomic_write(path, df.to_csv(index=False, float_format=float_format))
    return Path(path)


_COLORS = {"slam_bench": "tab:red", "slam_bench_checked": "tab:pink", "eager": "tab:blue",
           "compile": "tab:green", "torch_ce": "tab:orange", "liger": "tab:purple",
           "dense": "tab:brown", "unfused": "tab:olive"}


def plot(df: pd.DataFrame, path: Path, mode: str = "full") -> Path:
    """GB/s at the floor's bytes against C per provider ("peaked" teacher if present; the
    largest N measured at each C), one panel per (kernel, dtype), with the measured copy
    bandwidth as the ceiling; TFLOP/s instead for compute-bound kernels (rows with FLOPs)."""
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
        sub = sub.sort_values("N").drop_duplicates(["provider", "C"], keep="last")
        compute = "tflops" in sub and bool(sub["tflops"].notna().any())
        for prov, g in sub.groupby("provider"):
            g = g.sort_values("C")
            ax.plot(g["C"], g["tflops" if compute else "gbps_floor"], marker="o", label=prov,
                    color=_COLORS.get(prov))
        if math.isfinite(bw) and not compute:
            ax.axhline(bw, color="k", linestyle="--", linewidth=1,
                       label=f"measured copy bandwidth {bw:.0f} GB/s")
        ax.set_xscale("log")
        ax.set_yscale("log")  # providers differ by orders of magnitude
        ax.set_xlabel("C (classes)")
        ax.set_ylabel("TFLOP/s (model FLOPs / median time)" if compute
                      else "GB/s (floor bytes / median time)")
        ax.set_title(f"{kernel} {dtype} {mode}")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    name = df["device_name"].iloc[0] if len(df) else ""
    fig.suptitle(f"{name}: loss throughput ({mode} = forward + backward)" if mode == "full"
                 else f"{name}: loss throughput ({mode})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png")
    plt.close(fig)
    atomic_write(path, buf.getvalue())
    return path


def pick(df, kernel, provider, mode, dtype, n=None, c=None, teacher=None) -> pd.DataFrame:
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
    """One goal of a summary: PASS exactly when `passed` (computed by the caller from `value`
    and the threshold it states); MISSING when there was nothing to measure."""
    return {"goal": goal, "value": value, "threshold": threshold,
            "result": "PASS" if passed else ("MISSING" if value is None else "FAIL")}


def format_checks(checks: List[dict]) -> str:
    if not checks:
        return "(no goals)"
    width = max(len(c["goal"]) for c in checks)
    lines = [f"{'goal'.ljust(width)}  {'value':>10}  {'threshold':<22}  result"]
    for c in checks:
        v = "n/a" if c["value"] is None else f"{c['value']:.3g}"
        lines.append(f"{c['goal'].ljust(width)}  {v:>10}  {c['threshold']:<22}  {c['result']}")
    return "\n".join(lines)


def busy_warning(df: pd.DataFrame) -> Optional[str]:
    """A warning line when some CPU row was timed with the load average above the cores
    (its times and the ratios between providers are not a quiet machine's); else None."""
    ok = df[(df["status"] == "ok") & (df["device"] == "cpu")]
    load = pd.to_numeric(ok["load_avg_1m"], errors="coerce")
    busy = ok[load > pd.to_numeric(ok["cores"], errors="coerce")]
    if not len(busy):
        return None
    return (f"warning: the machine was busy for {len(busy)} of {len(ok)} rows (load average up "
            f"to {load.max():.2f} on {int(busy['cores'].max())} cores): their times and the "
            f"ratios and goals computed from them are not a quiet machine's")


def format_table(df: pd.DataFrame) -> str:
    """Median ms per provider (columns) for each measured configuration of mode "full", the
    largest relative spread (p80 - p20) / median of the providers, and a warning when the
    machine was busy."""
    ok = df[(df["status"] == "ok") & (df["mode"] == "full")]
    if not len(ok):
        return "(no measurements)"
    t = ok.pivot_table(index=["kernel", "dtype", "teacher", "N", "C"], columns="provider",
                       values="ms_median", aggfunc="min")
    sp = pd.to_numeric(ok["spread"], errors="coerce")
    text = "median ms, forward + backward:\n" + t.to_string(float_format=lambda v: f"{v:.3g}")
    if sp.notna().any():
        text += f"\nspread (p80 - p20) / median: up to {sp.max():.0%}"
    warn = busy_warning(df)
    return text + (f"\n{warn}" if warn else "")
