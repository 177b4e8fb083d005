"""Loss throughput benchmarks (pytest-benchmark), every provider side by side.

`pytest suites/` (smoke): each body runs once at a tiny size, as a check that every provider
still runs. `pytest suites/test_throughput.py --benchmark` (without -n: pytest-benchmark turns
itself off under pytest-xdist): pytest-benchmark times them at full size, providers of one
(kernel, mode, size) in one table, each on its own copy of the inputs, and
`test_cpu_speed_targets` asserts the CPU targets from the medians pytest-benchmark measured
for `test_cpu_speed[...]` earlier in the same process, at 2 torch threads:
- slam_loss with its default value checks >= 3x the eager formula (softmax -> mix -> log ->
  sum under autograd), forward + backward, N = 8192, C = 1000, fp32;
- slam_loss(check_values=False) >= 3.5x; distill_loss(check_values=False) >= 1.2x
  soft-target F.cross_entropy.
`test_cpu_memory_target` checks the peak extra memory target. The full CSV sweep with its plot
is `slam-bench profile`; `slam-bench profile --device cpu --quick --check-targets` states the
same targets from its interleaved timer. Both timers measure each provider in the state its
own previous step leaves (here: its rounds run back to back) and keep freed memory in glibc's
heap while they run (slam_bench.profiling.timing says why), so they measure the same thing.
"""
from __future__ import annotations

import pytest
import torch

from slam_bench.profiling import loss_checks as targets
from slam_bench.profiling import loss_family as L
from slam_bench.profiling import sweep, timing

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SMOKE_SIZE = (64, 10)
FULL_SIZES = ((8192, 1000), (8192, 100)) if DEVICE.type == "cpu" else \
    ((L.gpu_n(32000), 32000), (L.gpu_n(262144), 262144))
FULL_DTYPE = "fp32" if DEVICE.type == "cpu" else "bf16"
BACKEND = "triton" if DEVICE.type == "cuda" else "auto"


@pytest.fixture(autouse=True, scope="module")
def _allocator_steady_state():
    """No page faults for memory a step reuses: as slam-bench profile times (timing's note)."""
    with timing.allocator_steady_state():
        yield


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


def _step(provider, kernel, n, c, dtype, mode, device=DEVICE):
    problem = L.make_problem(kernel, n, c, dtype, device, "peaked", backend=BACKEND)
    try:
        fn, own = sweep.build(L.FAMILY, provider, problem, mode)
    except L.Unavailable as e:
        pytest.skip(str(e))
    bytes_ = {"provider_bytes": L.provider_bytes(provider, problem, mode),
              "floor_bytes": L.floor_bytes(problem, mode)}
    return fn, own, bytes_


@pytest.mark.parametrize("mode", ("fwd", "full"))
@pytest.mark.parametrize("kernel", ("slam", "distill"))
@pytest.mark.parametrize("provider", L.PROVIDERS)
@pytest.mark.parametrize("size", range(len(FULL_SIZES)))
def test_loss_throughput(benchmark, full_run, provider, kernel, mode, size):
    if not full_run and size:
        pytest.skip("the smoke run checks one size")
    if provider == "compile" and not full_run:
        pytest.skip("torch.compile's warm-up (tens of seconds a graph on CPU) is measured "
                    "under --benchmark only")
    n, c = FULL_SIZES[size] if full_run else SMOKE_SIZE
    dtype = FULL_DTYPE if full_run else "fp32"
    fn, own, bytes_ = _step(provider, kernel, n, c, dtype, mode)
    _run(benchmark, fn, full_run, f"{kernel} {mode} {dtype} N={n} C={c} ({DEVICE.type})",
         {"provider": provider, **bytes_})
    # The step ran: in "full" mode it left a finite gradient behind.
    if mode == "full":
        grad = own.data["z"].grad
        assert grad is not None and bool(torch.isfinite(grad).all())


# ---------------------------------------------------------------- the CPU targets

# What each benchmark measures: (kernel, provider); the targets compare their medians.
SPEED = {
    "slam eager formula": ("slam", "eager"),
    "slam_loss": ("slam", "slam_bench_checked"),
    "slam_loss check_values=False": ("slam", "slam_bench"),
    "distill_loss check_values=False": ("distill", "slam_bench"),
    "F.cross_entropy soft targets": ("distill", "torch_ce"),
}
# (measured, baseline, minimum speed-up)
TARGETS = (
    ("slam_loss", "slam eager formula", targets.CPU_MIN_SPEEDUP_DEFAULT),
    ("slam_loss check_values=False", "slam eager formula", targets.CPU_MIN_SPEEDUP_NO_CHECKS),
    ("distill_loss check_values=False", "F.cross_entropy soft targets",
     targets.CPU_MIN_SPEEDUP_VS_TORCH_CE),
)
_MEDIANS = {}


@pytest.fixture
def target_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(targets.CPU_TARGET_THREADS)
    yield targets.CPU_TARGET_THREADS
    torch.set_num_threads(threads)


@pytest.mark.parametrize("impl", list(SPEED))
def test_cpu_speed(benchmark, full_run, target_threads, impl):
    kernel, provider = SPEED[impl]
    n, c = targets.CPU_TARGET_SIZE if full_run else SMOKE_SIZE
    fn, own, bytes_ = _step(provider, kernel, n, c, "fp32", "full", torch.device("cpu"))
    _run(benchmark, fn, full_run,
         f"CPU targets: fwd+bwd fp32 N={n} C={c}, {target_threads} threads", {"impl": impl, **bytes_})
    assert bool(torch.isfinite(own.data["z"].grad).all())
    if benchmark.stats is not None:
        _MEDIANS[impl] = benchmark.stats.stats.median


def test_cpu_speed_targets(full_run, request):
    """The speed targets, from this process's pytest-benchmark medians of test_cpu_speed."""
    if not full_run:
        return  # smoke: test_cpu_speed ran each implementation once
    if request.config._benchmarksession.disabled:
        pytest.skip("pytest-benchmark is off (it turns itself off under pytest-xdist): run "
                    "`pytest suites/test_throughput.py --benchmark` without -n")
    missing = sorted(set(SPEED) - set(_MEDIANS))
    assert not missing, f"test_cpu_speed did not run in this process for: {missing}"
    lines, failed = [], []
    for ours, base, need in TARGETS:
        ratio = _MEDIANS[base] / _MEDIANS[ours]
        lines.append(f"{ours}: {ratio:.2f}x {base} (target >= {need}x)")
        if ratio < need:
            failed.append(lines[-1])
    print("\n".join(lines))
    assert not failed, "; ".join(failed)


def test_cpu_memory_target(full_run):
    """Peak extra memory of slam_loss fwd+bwd (torch backend), in N x C fp32 buffers."""
    n, c = targets.CPU_TARGET_SIZE if full_run else SMOKE_SIZE
    fn, own, _ = _step("slam_bench", "slam", n, c, "fp32", "full", torch.device("cpu"))
    fn()
    own.data["z"].grad = None
    peak = timing.peak_extra_bytes_cpu(fn)
    assert peak > 0  # the probe saw the step (at the smoke size, fixed costs dominate the ratio)
    if full_run:
        buffers = peak / (n * c * 4)
        assert buffers <= targets.CPU_MAX_PEAK_BUFFERS, f"{buffers:.2f} buffers"
