"""Loss throughput benchmarks (pytest-benchmark), every provider side by side.

`pytest suites/` (smoke): each body runs once at a tiny size, as a check that every provider
still runs. `pytest suites/ --benchmark`: pytest-benchmark times them at full size, grouped
so that providers of one (kernel, mode, size) sit in one table, and `test_cpu_targets` asserts
the CPU targets of issue 6 from medians measured side by side (interleaved) in one run.
The full CSV sweep with its plot is `slam-bench profile`.
"""
from __future__ import annotations

import pytest
import torch

from slam_bench.profiling import providers as P
from slam_bench.profiling import report, sweep, timing

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SMOKE_SIZE = (64, 10)
FULL_SIZES = ((8192, 1000), (8192, 100)) if DEVICE.type == "cpu" else ((4096, 32000), (2048, 262144))
FULL_DTYPE = "fp32" if DEVICE.type == "cpu" else "bf16"
# Issue 2's benchmark: the torch backend against the plain autograd formula, CPU, fp32.
ISSUE2_SIZE = (8192, 1000)


def _sync(fn):
    if DEVICE.type != "cuda":
        return fn

    def synced():
        fn()
        torch.cuda.synchronize()
    return synced


def _run(benchmark, fn, full_run, group, extra):
    benchmark.group = group
    benchmark.extra_info.update(extra)
    if full_run:
        benchmark.pedantic(_sync(fn), rounds=10, iterations=1, warmup_rounds=2)
    else:
        benchmark(fn)


@pytest.mark.parametrize("mode", P.MODES)
@pytest.mark.parametrize("kernel", ("slam", "distill"))
@pytest.mark.parametrize("provider", P.PROVIDERS)
@pytest.mark.parametrize("size", range(len(FULL_SIZES)))
def test_loss_throughput(benchmark, full_run, provider, kernel, mode, size):
    if not full_run and size:
        pytest.skip("the smoke run checks one size")
    if provider == "compile" and not full_run:
        pytest.skip("torch.compile's warm-up (tens of seconds a graph on CPU) is measured "
                    "under --benchmark only")
    n, c = FULL_SIZES[size] if full_run else SMOKE_SIZE
    dtype = FULL_DTYPE if full_run else "fp32"
    problem = P.make_problem(kernel, n, c, sweep.DTYPES[dtype], DEVICE, "peaked")
    try:
        fn = P.build(provider, problem, mode)
    except P.Unavailable as e:
        pytest.skip(str(e))
    _run(benchmark, fn, full_run, f"{kernel} {mode} {dtype} N={n} C={c} ({DEVICE.type})",
         {"provider": provider, "model_bytes": sweep.model_bytes(mode, n, c, dtype)})
    # The step ran: in "full" mode it left a finite gradient behind.
    if mode == "full":
        assert problem.z.grad is not None and bool(torch.isfinite(problem.z.grad).all())


@pytest.mark.parametrize("impl", ("torch_backend", "autograd_formula"))
def test_issue2_torch_backend_vs_formula(benchmark, full_run, impl):
    """Issue 2: forward + backward of the torch backend vs the eager formula, CPU, fp32."""
    n, c = ISSUE2_SIZE if full_run else SMOKE_SIZE
    problem = P.make_problem("slam", n, c, torch.float32, "cpu", "peaked", backend="torch")
    fn = P.build("slam_bench" if impl == "torch_backend" else "eager", problem, "full")
    _run(benchmark, fn, full_run, f"issue 2: slam fwd+bwd cpu fp32 N={n} C={c}",
         {"impl": impl, "model_bytes": sweep.model_bytes("full", n, c, "fp32")})
    assert bool(torch.isfinite(problem.z.grad).all())


def test_cpu_targets(full_run):
    """Issue 6's CPU targets, asserted under --benchmark from interleaved medians measured in
    this run (smoke: a tiny sweep that checks only that the rows are produced)."""
    n, c = report.CPU_TARGET_SIZE if full_run else SMOKE_SIZE
    spec = sweep.SweepSpec(
        name="suite-cpu-targets", kernels=("slam", "distill"), dtypes=("fp32",),
        teachers=("peaked",), c_values=(c,), n_fixed=n, n_values=(), c_for_n_sweep=c,
        modes=("full",), providers=("slam_bench", "eager", "torch_ce"),
        warmup=2 if full_run else 0, reps=15 if full_run else 1)
    device = torch.device("cpu")
    rows = sweep.run_sweep(spec, device, copy_bw_gbps=float("nan"), log=lambda _: None)
    df = report.to_frame(rows, report.run_metadata(device, float("nan"), spec.name, "perf_counter"),
                         timing.PEAK_METHOD)
    measured = df[df["status"] == "ok"]
    assert set(measured["provider"]) == {"slam_bench", "eager", "torch_ce"}
    assert (measured["ms_median"] > 0).all() and (measured["peak_extra_bytes"] > 0).all()
    if full_run:
        checks = report.cpu_targets(df)
        print(report.format_checks(checks))
        assert all(ch["result"] == "PASS" for ch in checks), report.format_checks(checks)
