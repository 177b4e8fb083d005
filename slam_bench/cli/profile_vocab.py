"""`slam-bench profile --family topk|fused_linear|fused_linear_memory`: the vocabulary-scale
families (slam_bench/profiling/vocab*.py), called from slam_bench/cli/profile.py.

- topk, fused_linear: every provider side by side over V; writes
  `<out>/<device>-<family>.csv` and `.png`.
- fused_linear_memory: peak extra memory of forward + backward of the fused loss, the dense
  path and the unfused one (two methods, see profiling/vocab_memory.py), at N=4096,
  V=65,536, H=64, fp32 (--quick: N=1024, V=8192); writes `<out>/<device>-fused_linear_memory.csv`
  and prints PASS/FAIL for the fused claim (--check-targets: exit 1 on FAIL).
"""
from __future__ import annotations

import time

import pandas as pd

FAMILIES = ("topk", "fused_linear", "fused_linear_memory")
QUICK_MEMORY_SIZE = dict(n=1024, v=8192, h=64)


def main(args, device, copy_bw: float) -> int:
    from slam_bench.profiling import report

    t0 = time.monotonic()
    if args.family == "fused_linear_memory":
        if device.type != "cpu":
            raise SystemExit("slam-bench profile: --family fused_linear_memory measures the CPU "
                             "(torch backend); on a GPU, gpu_check records peak memory")
        from slam_bench.profiling import vocab_memory as M
        size = QUICK_MEMORY_SIZE if args.quick else M.ISSUE_SIZE
        rows = M.memory_rows(**size)
        checks = M.memory_checks(rows, M.n_independence(**size))
        csv = M.write_rows(rows, args.out)
        print(pd.DataFrame(rows)[["provider", "method", "peak_bytes", "bound_bytes",
                                  "dense_over_this", "threads", "note"]].to_string(index=False))
    else:
        from slam_bench.profiling import vocab_sweep as S
        key = "gpu" if device.type == "cuda" else ("cpu-quick" if args.quick else "cpu")
        spec = S.SWEEPS[(args.family, key)]
        rows = S.run_family(spec, device, copy_bw)
        df, csv, png = S.save(rows, device, copy_bw, spec, args.out)
        ok = df[(df["status"] == "ok") & (df["mode"] == "full")]
        print(ok.pivot_table(index=["dtype", "N", "C"], columns="provider", values="ms_median",
                             aggfunc="min").to_string(float_format=lambda v: f"{v:.3g}"))
        for _, r in df[df["status"] != "ok"].drop_duplicates(["provider", "note"]).iterrows():
            print(f"skipped {r['provider']}: {r['note']}")
        checks = []
    if checks:
        print(report.format_checks(checks))
    print(f"wrote {csv} in {time.monotonic() - t0:.0f} s")
    return 1 if args.check_targets and any(c["result"] != "PASS" for c in checks) else 0
