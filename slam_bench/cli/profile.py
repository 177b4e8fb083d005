"""`slam-bench profile [--device cpu|cuda] [--quick] [--out DIR] [--check-targets]`.

Runs the throughput sweep of spec/kernels.md on one device and writes
`<DIR>/<device-name>.csv` (long format, one row per kernel/provider/mode/dtype/N/C/teacher)
and `<DIR>/<device-name>.png` (GB/s against C, the measured copy bandwidth as the ceiling).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from slam_bench.cli import profile_vocab

DEFAULT_OUT = Path("results") / "throughput"
# Copy-bandwidth probe size: well past the last-level cache, so it measures memory.
COPY_PROBE_BYTES = {"cpu": 256 << 20, "cuda": 2 << 30}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where to measure (default: cpu)")
    parser.add_argument("--quick", action="store_true",
                        help="the short sweep (fp32, C in {10, 100, 1000} on CPU)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's own choice); recorded")
    parser.add_argument("--check-targets", action="store_true",
                        help="exit 1 unless the targets of issue 6 (CPU targets, or GPU goals "
                             "with --device cuda) hold in the measured rows")
    parser.add_argument("--family", choices=("loss",) + profile_vocab.FAMILIES, default="loss",
                        help="loss (default: slam/distill sweep), or a vocabulary-scale family "
                             "(see slam_bench/cli/profile_vocab.py)")


def main(args: argparse.Namespace) -> int:
    from slam_bench.profiling import report, sweep, timing

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("slam-bench profile: --device cuda needs a CUDA GPU; none is visible")
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"slam-bench profile: --threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.family != "loss":
        bw = timing.copy_bandwidth_gbps(device, COPY_PROBE_BYTES[device.type])
        return profile_vocab.main(args, device, bw)
    if device.type == "cuda":
        spec = sweep.GPU
    else:
        spec = sweep.CPU_QUICK if args.quick else sweep.CPU_FULL
    t0 = time.monotonic()
    bw = timing.copy_bandwidth_gbps(device, COPY_PROBE_BYTES[device.type])
    name = report.device_name(device)
    print(f"{name}: measured copy bandwidth {bw:.1f} GB/s; sweep {spec.name}"
          + (f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""))
    rows = sweep.run_sweep(spec, device, bw)
    df, csv, png = report.save_sweep(rows, device, bw, spec.name, args.out, timing.PEAK_METHOD)
    print(report.format_table(df))
    skipped = df[df["status"] != "ok"].drop_duplicates(["provider", "note"])
    for _, r in skipped.iterrows():
        print(f"skipped {r['provider']}: {r['note']}")
    checks = report.cpu_targets(df) if device.type == "cpu" else report.gpu_goals(df)
    print(report.format_checks(checks))
    rc = 1 if args.check_targets and any(c["result"] != "PASS" for c in checks) else 0
    print(f"wrote {csv} and {png} in {time.monotonic() - t0:.0f} s")
    return rc
