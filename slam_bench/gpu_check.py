"""`python -m slam_bench.gpu_check --out DIR [--dry-run]`: the prepared check for a lent GPU.

On a CUDA machine, within `--budget-s` seconds (default 330, under the 6 minutes a lent GPU
gives): measures the copy bandwidth; checks the fused kernel (`backend="triton"`) against the
float64 reference at real sizes for every dtype (C up to 262,144); runs the GPU throughput
sweep; writes DIR/<gpu-name>.csv, .png and correctness.csv; and prints a summary table last,
with PASS/FAIL for each GPU goal of issue 6. The same for `slam_loss_topk` and
`fused_linear_slam_loss` (profiling/vocab_check.py: correctness rows in correctness.csv,
DIR/<gpu-name>-topk.csv and -fused_linear.csv, and their goals in the summary). Exit status 1
when anything fails.

`--dry-run` runs the same steps on CPU tensors at tiny sizes, the kernel under Triton's
interpreter, with the CPU timer, so CI keeps this script working without a GPU; its goals are
reported (they cannot pass at tiny sizes) but do not set the exit status.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import List

# Correctness sizes (N, C): C up to 262,144 and just past the 32k block of spec/kernels.md.
GPU_CHECK_SIZES = ((256, 1000), (64, 32769), (16, 262144))
DRY_CHECK_SIZES = ((5, 10), (3, 100))
FP32_RTOL = 1e-5
# bf16/fp16: the kernel's error against float64 may be at most this multiple of PyTorch's own
# error when it evaluates the reference formula in that dtype (spec/kernels.md).
LOWP_ERROR_MULTIPLE = 2.0
DEFAULT_BUDGET_S = 330.0
# Seconds kept back from the sweep for writing files and the summary.
RESERVE_S = 20.0


def _rel_err(a, ref) -> float:
    a, ref = a.detach().double(), ref.detach()
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def _lowp_tol(torch_err: float) -> float:
    # PyTorch's own low-precision formula can overflow to inf/NaN (fp16 log of an underflowed
    # softmax); then any finite kernel error is "no worse".
    if not math.isfinite(torch_err):
        return math.inf
    return max(LOWP_ERROR_MULTIPLE * torch_err, FP32_RTOL)


def check_correctness(device, sizes, log) -> List[dict]:
    """One row per (kernel, dtype, N, C): the fused kernel's loss and gradient error."""
    from slam_bench import distill_loss, slam_loss
    from slam_bench.profiling import providers as P
    from slam_bench.profiling.sweep import DTYPES
    from slam_bench.reference import distill_loss_reference, slam_loss_reference

    rows = []
    for dtype_name in ("fp32", "bf16", "fp16"):
        dtype = DTYPES[dtype_name]
        for kernel in ("slam", "distill"):
            for n, c in sizes:
                p = P.make_problem(kernel, n, c, dtype, device, "peaked", seed=1)
                a64, y64 = p.alpha.double(), p.y.double()

                def ref(z, y, alpha):
                    if kernel == "slam":
                        return slam_loss_reference(z, y, alpha, p.k)
                    return distill_loss_reference(z, y)

                z64 = p.z.detach().double().requires_grad_(True)
                l64 = ref(z64, y64, a64)
                l64.backward()
                row = dict(kernel=kernel, dtype=dtype_name, N=n, C=c)
                try:
                    z = p.z.detach().clone().requires_grad_(True)
                    if kernel == "slam":
                        loss = slam_loss(z, p.y, p.alpha, p.k, backend="triton")
                    else:
                        loss = distill_loss(z, p.y, backend="triton")
                    loss.backward()
                    e_loss, e_grad = _rel_err(loss, l64), _rel_err(z.grad, z64.grad)
                except Exception as e:  # noqa: BLE001 - recorded as a failed check
                    rows.append(dict(row, result="FAIL", note=f"{type(e).__name__}: {e}"[:200]))
                    log(f"  correctness {kernel} {dtype_name} N={n} C={c}: FAIL ({rows[-1]['note']})")
                    continue
                if dtype_name == "fp32":
                    tol_loss = tol_grad = FP32_RTOL
                else:  # PyTorch's own error in this dtype sets the scale
                    zl = p.z.detach().clone().requires_grad_(True)
                    ll = ref(zl, p.y, p.alpha.to(dtype))
                    ll.backward()
                    tol_loss = _lowp_tol(_rel_err(ll, l64))
                    tol_grad = _lowp_tol(_rel_err(zl.grad, z64.grad))
                ok = math.isfinite(e_loss) and math.isfinite(e_grad) \
                    and e_loss <= tol_loss and e_grad <= tol_grad
                rows.append(dict(row, loss_err=e_loss, loss_tol=tol_loss, grad_err=e_grad,
                                 grad_tol=tol_grad, result="PASS" if ok else "FAIL", note=""))
                log(f"  correctness {kernel} {dtype_name} N={n} C={c}: loss {e_loss:.2g} "
                    f"(tol {tol_loss:.2g}), grad {e_grad:.2g} (tol {tol_grad:.2g}) "
                    f"{rows[-1]['result']}")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slam_bench.gpu_check",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the CSVs and plot")
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU tensors, tiny sizes, Triton interpreter (for CI)")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help=f"wall-clock budget in seconds (default {DEFAULT_BUDGET_S:g})")
    args = parser.parse_args(argv)
    if args.dry_run:
        # Triton reads this when the kernel module is first imported, which happens lazily in
        # slam_bench.functional, i.e. after this line.
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import pandas as pd
    import torch

    from slam_bench.profiling import report, sweep, timing

    start = time.monotonic()
    if args.dry_run:
        device, spec, sizes, probe = torch.device("cpu"), sweep.DRY, DRY_CHECK_SIZES, 16 << 20
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device is visible; use --dry-run to check the script on CPU",
                  file=sys.stderr)
            return 2
        device, spec, sizes, probe = torch.device("cuda"), sweep.GPU, GPU_CHECK_SIZES, 2 << 30
    log = lambda msg: print(msg, flush=True)  # noqa: E731

    bw = timing.copy_bandwidth_gbps(device, probe)
    name = report.device_name(device)
    log(f"{name}: measured copy bandwidth {bw:.1f} GB/s")
    log("correctness against the float64 reference (backend='triton'):")
    corr = check_correctness(device, sizes, log)
    from slam_bench.profiling import vocab_check  # slam_loss_topk, fused_linear_slam_loss
    corr += vocab_check.check_correctness(device, args.dry_run, log)
    log(f"throughput sweep {spec.name}:")
    rows = sweep.run_sweep(spec, device, bw, log=log, use_cuda_timer=device.type == "cuda",
                           deadline=vocab_check.budget_deadline(start, args.budget_s, RESERVE_S))
    df, csv, png = report.save_sweep(rows, device, bw, spec.name, args.out, timing.PEAK_METHOD)
    vocab_df = vocab_check.run_sweeps(device, bw, args.out, args.dry_run, log,
                                      deadline=start + args.budget_s - RESERVE_S)
    corr_df = pd.DataFrame(corr)
    corr_df.to_csv(args.out / "correctness.csv", index=False, float_format="%.4g")

    goals = report.gpu_goals(df)
    n_bad = int((corr_df["result"] != "PASS").sum()) if len(corr_df) else 0
    checks = [report.check_row(f"kernel vs float64 reference: {len(corr_df) - n_bad}/{len(corr_df)} "
                            "(kernel, dtype, N, C) within tolerance", float(n_bad),
                            "0 failures", n_bad == 0)] + goals + vocab_check.goals(vocab_df)
    log(f"wrote {csv}, {png} and {args.out / 'correctness.csv'} "
        f"in {time.monotonic() - start:.0f} s")
    log(report.format_table(df))
    log(report.format_table(vocab_df))
    log("")
    log(f"SUMMARY ({name}{', dry run: goals are not meaningful at tiny sizes' if args.dry_run else ''})")
    log(report.format_checks(checks))
    if args.dry_run:
        return 0
    return 0 if all(c["result"] == "PASS" for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
