"""`slam-bench profile [--device cpu|cuda] [--quick] [--family F ...] [--out DIR] [--threads T]
[--check-targets]`.

Runs the throughput sweep of docs/kernels.md on one device, over every registered kernel family
(slam_bench/profiling/families.py: the loss, top-K and fused linear families) or the ones named
by --family, and writes `<DIR>/<device-name>.csv` (long format, one row per
family/kernel/provider/mode/dtype/N/C/teacher/params; `<device-name>-<family>.csv` when
--family picks families) and the matching .png (GB/s against C, the measured copy bandwidth
as the ceiling), then prints the median times, the providers that could not run, and the
families' targets (CPU) or goals (GPU) with their measured values.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

DEFAULT_OUT = Path("results") / "throughput"
# Copy-bandwidth probe size: well past the last-level cache, so it measures memory.
COPY_PROBE_BYTES = {"cpu": 256 << 20, "cuda": 2 << 30}
PROG = "slam-bench profile"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where to measure (default: cpu)")
    parser.add_argument("--quick", action="store_true",
                        help="the short CPU sweep (e.g. the loss family at fp32, C in {10, 100, "
                             "1000}, N = 8192)")
    parser.add_argument("--family", action="append", default=None, metavar="F",
                        help="measure only this kernel family (repeatable): loss, topk "
                             "(slam_loss_topk), fused_linear (fused_linear_slam_loss, with its "
                             "peak-memory rows); default: every registered family")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="CPU threads for torch, recorded in the CSV (default: torch's own "
                             "choice; 2 with --check-targets, the count the CPU targets are "
                             "stated at)")
    parser.add_argument("--check-targets", action="store_true",
                        help="exit 1 unless every target holds in the measured rows: on CPU, "
                             "slam_loss's and distill_loss's speed-ups at N=8192, C=1000, fp32 "
                             "and the fused linear loss's peak memory (the CPU targets of "
                             "slam_bench/profiling/loss_checks.py and fused_linear_checks.py, "
                             "each printed with its threshold); on a GPU, the goals that "
                             "python -m slam_bench.gpu_check prints")


def main(args: argparse.Namespace) -> int:
    from slam_bench.fileio import ensure_writable_dir
    try:
        out_dir = ensure_writable_dir(args.out)
    except ValueError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    import torch

    from slam_bench.profiling import report, sweep, timing
    from slam_bench.profiling.families import FAMILIES

    chosen = args.family or list(FAMILIES)
    unknown = [f for f in chosen if f not in FAMILIES]
    if unknown:
        print(f"{PROG}: --family must be one of {', '.join(FAMILIES)}; got {', '.join(unknown)}",
              file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"{PROG}: --device cuda needs a CUDA GPU; none is visible", file=sys.stderr)
        return 2
    threads = args.threads or (2 if args.check_targets and device.type == "cpu" else None)
    if threads is not None:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        goals, rest = sweep.gpu_configs(chosen)
        configs, name, kw = goals + rest, "gpu", dict(backend="triton")
    else:
        spec = sweep.CPU_QUICK if args.quick else sweep.CPU_FULL
        configs, name = spec.configs(chosen), spec.name
        kw = dict(backend=spec.backend, warmup=spec.warmup, reps=spec.reps,
                  max_seconds=spec.max_seconds_per_config, skip=spec.skip)
    t0 = time.monotonic()
    # CPU: freed memory stays in the heap while the timers run (timing's module note says why).
    steady = timing.allocator_steady_state() if device.type == "cpu" \
        else contextlib.nullcontext(False)
    with steady as memory_kept:
        bw = timing.copy_bandwidth_gbps(device, COPY_PROBE_BYTES[device.type])
        dev_name = report.device_name(device)
        print(f"{dev_name}: measured copy bandwidth {bw:.1f} GB/s; sweep {name}"
              + (f", {torch.get_num_threads()} threads" if device.type == "cpu" else "")
              + (", freed memory kept in the heap" if memory_kept else ""), flush=True)
        rows = sweep.run_sweep(configs, device, bw, name=name, **kw)
    suffix = "-".join(args.family) if args.family else ""
    df, csv, png = report.save_sweep(rows, device, bw, out_dir, timing.PEAK_METHOD, suffix,
                                     memory_kept=memory_kept)
    print(report.format_table(df))
    skipped = df[df["status"] != "ok"].drop_duplicates(["provider", "note"])
    for _, r in skipped.iterrows():
        print(f"skipped {r['provider']}: {r['note']}")
    checks = []
    for fam in (FAMILIES[f] for f in chosen):
        checks += fam.cpu_targets(df) if device.type == "cpu" else fam.gpu_goals(df)
    print(report.format_checks(checks))
    rc = 1 if args.check_targets and any(c["result"] != "PASS" for c in checks) else 0
    print(f"wrote {csv}{' and ' + str(png) if png else ''} in {time.monotonic() - t0:.0f} s")
    return rc
