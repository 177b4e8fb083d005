"""Peak memory of `fused_linear_slam_loss` against the dense path (issue 12), pytest-benchmark.

`pytest suites/ --benchmark`: at N = 4096, V = 65,536, H = 64, fp32 on CPU, measures the peak
extra memory of one forward + backward step of the fused loss, of the unfused path (F.linear,
slam_loss_topk) and of the dense path (F.linear, slam_loss), with torch.profiler and with the
resident-set high-water mark of a fresh process (slam_bench/profiling/fused_linear_memory.py);
asserts
the fused claim (peak <= chunk x V x 4 + gradients + O(N K), no growth with N beyond O(N (H + K)))
and that the probes see the dense path's N x V logits; prints the ratio and writes
results/throughput/<cpu>-fused_linear_memory.csv; times the fused step. Smoke run: the same at
a tiny size (chunks smaller than N), the RSS probe for the fused loss only, no file.
`slam-bench profile --family fused_linear --check-targets` checks the same claim on its sweep's
peak rows (torch.profiler only).
"""
from __future__ import annotations

from pathlib import Path

import torch

from slam_bench.profiling import fused_linear_family as FL
from slam_bench.profiling import fused_linear_memory as M
from slam_bench.profiling import report, sweep

SMOKE = dict(n=64, v=1024, h=16)
SMOKE_CHUNK = 16
OUT = Path(__file__).resolve().parents[1] / "results" / "throughput"


def test_fused_linear_peak_memory(benchmark, full_run):
    full = M.MEMORY_SIZES["cpu-full"]
    size = dict(n=full["n"], v=full["v"], h=full["h"]) if full_run else SMOKE
    chunk = full["chunk"] if full_run else SMOKE_CHUNK
    if full_run:
        rows = M.memory_rows(**size, chunk=chunk)
    else:  # one fresh process (several seconds to import torch) for the RSS probe
        rows = M.memory_rows(**size, chunk=chunk, providers=("slam_bench", "dense"),
                             methods=("profiler",))
        rows += M.memory_rows(**size, chunk=chunk, providers=("slam_bench",), methods=("rss",))
    checks = M.memory_checks(rows, M.n_independence(**size, chunk=chunk))
    print(report.format_checks(checks))
    for r in rows:
        print(f"{r['method']:<8} {r['provider']:<10} peak {r['peak_bytes'] / 2**20:8.1f} MiB  "
              f"dense / this {r.get('dense_over_this', float('nan')):.1f}  ({r['threads']} threads) {r['note']}")
    assert all(c["result"] == "PASS" for c in checks), report.format_checks(checks)

    problem = FL.make_problem("fused_linear", size["n"], size["v"], "fp32", "cpu", "peaked",
                              backend="torch", h=size["h"], chunk_size=chunk)
    step, own = sweep.build(FL.FAMILY, "slam_bench", problem, "full")
    benchmark.group = f"fused_linear_slam_loss fwd+bwd cpu fp32 N={size['n']} V={size['v']}"
    benchmark.extra_info.update({f"{r['method']}_{r['provider']}_peak_bytes": r["peak_bytes"]
                                 for r in rows})
    if full_run:
        benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=1)
        M.write_rows(rows, OUT)
    else:
        benchmark(step)
    grad = own.data["hidden"].grad
    assert grad is not None and bool(torch.isfinite(grad).all())
