"""Sweeps of the "topk" and "fused_linear" families: sizes as data, measured into CSV rows.

Rows have the columns of the loss sweep (report.COLUMNS, kernel = the family, C = V) plus
EXTRA_COLUMNS: K, H, model_flops, tflops, matmul_tflops (a plain (N, H) @ (H, V) matmul in the
same dtype, timed beside the providers: the compute ceiling of "fused_linear") and
frac_matmul. Timers and peak memory are the loss sweep's (profiling/timing.py).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pandas as pd
import torch

from slam_bench.profiling import report, timing
from slam_bench.profiling import vocab as VP
from slam_bench.profiling.sweep import DTYPE_BYTES, DTYPES

EXTRA_COLUMNS = ["K", "H", "model_flops", "tflops", "matmul_tflops", "frac_matmul"]


@dataclass(frozen=True)
class VocabSweep:
    name: str
    family: str
    dtypes: Tuple[str, ...]
    v_values: Tuple[int, ...]
    n: int
    h: int = 64
    modes: Tuple[str, ...] = VP.MODES
    providers: Optional[Tuple[str, ...]] = None  # default: every provider of the family
    warmup: int = 2
    reps: int = 10
    max_seconds_per_config: float = 20.0
    backend: str = "auto"
    chunk_size: Optional[int] = None

    def configs(self):
        for dtype in self.dtypes:
            for v in self.v_values:
                yield dtype, v


SWEEPS: Dict[Tuple[str, str], VocabSweep] = {
    ("topk", "cpu-quick"): VocabSweep("topk-cpu-quick", "topk", ("fp32",), (1000, 32000), 256,
                                      reps=5, max_seconds_per_config=10.0),
    ("topk", "cpu"): VocabSweep("topk-cpu", "topk", ("fp32", "bf16"), (1000, 32000, 128256),
                                1024),
    ("topk", "gpu"): VocabSweep("topk-gpu", "topk", ("bf16", "fp32"), (32000, 128256, 262144),
                                4096),
    ("topk", "dry-run"): VocabSweep("topk-dry-run", "topk", ("bf16",), (100,), 8, warmup=0,
                                    reps=2, backend="triton"),
    ("fused_linear", "cpu-quick"): VocabSweep("fused-cpu-quick", "fused_linear", ("fp32",),
                                              (8192, 32000), 512, reps=5,
                                              max_seconds_per_config=10.0),
    ("fused_linear", "cpu"): VocabSweep("fused-cpu", "fused_linear", ("fp32",),
                                        (8192, 32000, 65536), 2048, h=256),
    ("fused_linear", "gpu"): VocabSweep("fused-gpu", "fused_linear", ("bf16",),
                                        (32000, 128256, 262144), 4096, h=4096),
    ("fused_linear", "dry-run"): VocabSweep("fused-dry-run", "fused_linear", ("bf16",), (100,),
                                            8, h=16, warmup=0, reps=2, backend="triton"),
}


def _timer(device, spec):
    if device.type == "cuda":
        return lambda fns: {p: timing.time_cuda(fn) for p, fn in fns.items()}

    def cpu(fns):
        samples = timing.time_cpu_round_robin(fns, spec.warmup, spec.reps,
                                              spec.max_seconds_per_config)
        return {p: timing.summarize(s) for p, s in samples.items()}
    return cpu


def _peak(fn, device) -> int:
    if device.type == "cuda":
        return timing.peak_extra_bytes_cuda(fn)
    return timing.peak_extra_bytes_cpu(fn)


def run_family(spec: VocabSweep, device: torch.device, copy_bw_gbps: float,
               log: Callable[[str], None] = print, deadline: Optional[float] = None) -> List[dict]:
    """One row per (dtype, V, mode, provider); providers that cannot run get a skipped row."""
    providers = spec.providers or VP.PROVIDERS[spec.family]
    timer = _timer(device, spec)
    rows: List[dict] = []
    for dtype, v in spec.configs():
        problem = VP.make_problem(spec.family, spec.n, v, DTYPES[dtype], device, h=spec.h,
                                  backend=spec.backend, chunk_size=spec.chunk_size)
        k_ids = problem.ids.shape[1]
        base = dict(kernel=spec.family, teacher=VP.TEACHER, dtype=dtype, N=spec.n, C=v,
                    k=problem.k, K=k_ids, H=spec.h if spec.family == "fused_linear" else "",
                    alpha_range=f"{VP.ALPHA_RANGE[0]}-{VP.ALPHA_RANGE[1]}")
        mm = _matmul_tflops(spec, v, DTYPES[dtype], device, timer)
        for mode in spec.modes:
            fns = {}
            for prov in providers:
                if deadline is not None and time.monotonic() > deadline:
                    rows.append(dict(base, provider=prov, mode=mode, status="skipped",
                                     note="time budget of the run spent"))
                    continue
                try:
                    fns[prov] = VP.build(prov, problem, mode)
                    fns[prov]()  # first call: compile, autotune; a failure is recorded
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                except Exception as e:  # noqa: BLE001 - any provider failure becomes a row
                    fns.pop(prov, None)
                    note = str(e) if isinstance(e, VP.Unavailable) else \
                        f"failed: {type(e).__name__}: {str(e)[:200]}"
                    rows.append(dict(base, provider=prov, mode=mode, status="skipped", note=note))
            if not fns:
                continue
            stats = timer(fns)
            mb = VP.model_bytes(spec.family, mode, spec.n, v, k_ids, spec.h, DTYPE_BYTES[dtype])
            flops = VP.model_flops(spec.family, mode, spec.n, v, spec.h)
            for prov, fn in fns.items():
                st = stats[prov]
                sec = st["ms_median"] * 1e-3
                tflops = flops / sec / 1e12 if flops else math.nan
                rows.append(dict(base, provider=prov, mode=mode, status="ok", note="", **st,
                                 model_bytes=mb, gbps=mb / sec / 1e9,
                                 frac_copy_bw=mb / sec / 1e9 / copy_bw_gbps if copy_bw_gbps
                                 else math.nan, peak_extra_bytes=_peak(fn, device),
                                 model_flops=flops, tflops=tflops, matmul_tflops=mm,
                                 frac_matmul=tflops / mm if mm else math.nan))
            log(f"  {spec.family:<12} {dtype} {mode:<4} N={spec.n} V={v:<7} "
                + "  ".join(f"{p}={stats[p]['ms_median']:.3g}ms" for p in fns))
        for t in problem.leaves():
            t.grad = None
        del problem
    return rows


def _matmul_tflops(spec, v, dtype, device, timer) -> float:
    """TFLOP/s of a plain (N, H) @ (H, V) matmul: the ceiling of "fused_linear"."""
    if spec.family != "fused_linear":
        return math.nan
    a = torch.randn(spec.n, spec.h, device=device).to(dtype)
    b = torch.randn(spec.h, v, device=device).to(dtype)
    ms = timer({"mm": lambda: torch.mm(a, b)})["mm"]["ms_median"]
    return 2 * spec.n * v * spec.h / (ms * 1e-3) / 1e12


def save(rows: List[dict], device, copy_bw: float, spec: VocabSweep, out_dir: Path):
    """The family's CSV (`<device>-<family>.csv`) and plot. Returns (frame, csv, png)."""
    timer = "triton.testing.do_bench" if device.type == "cuda" else \
        "perf_counter, providers interleaved"
    meta = report.run_metadata(device, copy_bw, spec.name, timer)
    df = pd.DataFrame(rows)
    for key, value in meta.items():
        df[key] = value
    df["peak_method"] = timing.PEAK_METHOD.get(device.type, "")
    for col in report.COLUMNS + EXTRA_COLUMNS:
        if col not in df.columns:
            df[col] = math.nan
    df = df[report.COLUMNS + EXTRA_COLUMNS]
    stem = f"{report.file_stem(report.device_name(device))}-{spec.family}"
    csv = report.write_csv(df, Path(out_dir), stem)
    return df, csv, plot(df, Path(out_dir) / f"{stem}.png")


def plot(df: pd.DataFrame, path: Path) -> Path:
    """Per dtype, forward + backward: GB/s of the byte floor ("topk") or TFLOP/s
    ("fused_linear") against V, one line per provider."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = df[(df["status"] == "ok") & (df["mode"] == "full")]
    dtypes = sorted(set(ok["dtype"])) or ["(none)"]
    fig, axes = plt.subplots(1, len(dtypes), figsize=(5.5 * len(dtypes), 3.8), squeeze=False)
    for ax, dtype in zip(axes.flat, dtypes):
        sub = ok[ok["dtype"] == dtype]
        fused = bool(len(sub)) and sub["kernel"].iloc[0] == "fused_linear"
        col = "tflops" if fused else "gbps"
        for prov, g in sub.groupby("provider"):
            g = g.sort_values("C")
            ax.plot(g["C"], g[col], marker="o", label=prov)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("V (vocabulary)")
        ax.set_ylabel("TFLOP/s (3 matmuls of N x V x H)" if fused else
                      "GB/s (byte floor / median time)")
        ax.set_title(f"{sub['kernel'].iloc[0] if len(sub) else ''} {dtype} fwd+bwd")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
