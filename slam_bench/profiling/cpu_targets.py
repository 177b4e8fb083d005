"""The CPU targets of the torch backend, measured side by side in one process.

    python -m slam_bench.profiling.cpu_targets [--reps 9] [--threads 2] [--load 4] [--compile]

Every provider runs one forward + backward per round, in a rotating order, on its own copy of
the inputs (N = 8192, C = 1000, fp32, the "peaked" teacher of slam_bench.profiling.loss_family);
each ratio is the median over rounds of (baseline time / measured time) within the round, so a
load that changes between rounds moves both sides of a ratio together. The load average is
printed with every measurement: on a busy machine the numbers are not the quiet targets.
`--load L` starts L single-threaded CPU-bound processes for the run ("oversubscribed": L + the
torch threads > cores). Also printed: the aten ops one forward + backward dispatches, and the
fraction of memcpy bandwidth the fused loss reaches (its floor traffic: read z and y, write
dL/dz, 12 B per element in fp32, against one read + one write of a copy).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, Iterator, List

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from slam_bench import cpu_fused
from slam_bench.profiling import loss_checks as G
from slam_bench.profiling import loss_family as L
from slam_bench.profiling import sweep, timing

N, C = G.CPU_TARGET_SIZE
# (name, kernel, provider, variant): variant "eager" runs slam_bench's eager body
# (SLAM_BENCH_CPU_KERNEL=0, the code before the compiled body), "omp" the compiled body with
# at::parallel_for's static split instead of its row blocks, "pool" the compiled body with its
# row blocks taken by the library's own helper threads (the default before OpenMP's team).
PROVIDERS = (
    ("slam_loss", "slam", "slam_bench_checked", None),
    ("slam_loss check_values=False", "slam", "slam_bench", None),
    ("slam_loss at::parallel_for", "slam", "slam_bench_checked", "omp"),
    ("slam_loss helper pool (before)", "slam", "slam_bench_checked", "pool"),
    ("slam_loss eager body (before)", "slam", "slam_bench_checked", "eager"),
    ("slam eager formula", "slam", "eager", None),
    ("distill_loss", "distill", "slam_bench_checked", None),
    ("distill_loss check_values=False", "distill", "slam_bench", None),
    ("F.cross_entropy soft targets", "distill", "torch_ce", None),
    ("torch.compile distill formula", "distill", "compile", None),
    # A user's compiled step calling slam_loss: the forward op is opaque to Inductor, and the
    # backward multiplies by grad_output (one N x C pass that eager skips at grad_output = 1).
    ("slam_loss in torch.compile", "slam", "inductor_ours", None),
)
# (measured, baseline, target speed-up): the thresholds are loss_checks' CPU targets, the same
# ones `slam-bench profile --check-targets` and suites/test_throughput.py apply.
TARGETS = (
    ("slam_loss", "slam eager formula", G.CPU_MIN_SPEEDUP_DEFAULT),
    ("slam_loss check_values=False", "slam eager formula", G.CPU_MIN_SPEEDUP_NO_CHECKS),
    ("distill_loss", "F.cross_entropy soft targets", G.CPU_MIN_SPEEDUP_VS_TORCH_CE),
    ("distill_loss", "torch.compile distill formula", G.CPU_MIN_SPEEDUP_VS_COMPILE),
    ("distill_loss check_values=False", "F.cross_entropy soft targets",
     G.CPU_MIN_SPEEDUP_VS_TORCH_CE),
    ("slam_loss eager body (before)", "slam eager formula", None),
    ("slam_loss", "slam_loss at::parallel_for", None),
    ("slam_loss", "slam_loss helper pool (before)", None),
    ("slam_loss in torch.compile", "slam_loss check_values=False", None),
    ("slam_loss in torch.compile", "slam eager formula", None),
)
LOADED_TARGET = ("slam_loss", "slam eager formula", G.CPU_MIN_SPEEDUP_LOADED)


class OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched inside the block."""

    def __init__(self):
        super().__init__()
        self.ops: Dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        self.ops[name] = self.ops.get(name, 0) + 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.ops.values())


def count_ops(step: Callable[[], None]) -> int:
    with OpCounter() as counter:
        step()
    return counter.total


@contextlib.contextmanager
def variant(which) -> Iterator[None]:
    """The body a PROVIDERS variant runs (see there)."""
    old = os.environ.get("SLAM_BENCH_CPU_KERNEL")
    lib = cpu_fused.library()
    scheduler = {"omp": 1, "pool": 2}.get(which)  # cpu_common.h's g_scheduler
    if which == "eager":
        os.environ["SLAM_BENCH_CPU_KERNEL"] = "0"
    elif scheduler is not None and lib is not None:
        lib.slam_cpu_set_scheduler(scheduler)
    try:
        yield
    finally:
        if which == "eager":
            if old is None:
                os.environ.pop("SLAM_BENCH_CPU_KERNEL", None)
            else:
                os.environ["SLAM_BENCH_CPU_KERNEL"] = old
        elif scheduler is not None and lib is not None:
            lib.slam_cpu_set_scheduler(0)


def load_avg() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[List[subprocess.Popen]]:
    """`count` single-threaded CPU-bound processes for the duration of the block."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


def build_steps(names, compile_: bool, n: int = N, c: int = C):
    steps, warm = {}, {}
    problems = {k: L.make_problem(k, n, c, "fp32", "cpu", "peaked") for k in ("slam", "distill")}
    for name, kernel, provider, var in PROVIDERS:
        if name not in names or (provider in ("compile", "inductor_ours") and not compile_):
            continue
        if provider == "inductor_ours":
            fn, _ = compiled_step(problems[kernel])
        else:
            fn, _ = sweep.build(L.FAMILY, provider, problems[kernel], "full")

        def step(fn=fn, var=var):
            with variant(var):
                fn()
        t0 = time.perf_counter()
        step()
        step()
        warm[name] = time.perf_counter() - t0
        steps[name] = step
    return steps, warm


def compiled_step(problem, backend: str = "inductor"):
    """(step, z): forward + backward of slam_loss(check_values=False) on the problem's own
    copy z of the logits, compiled with fullgraph=True (by Inductor, as a user's training step
    would be). (No torch._dynamo.reset():
    that would drop the other compiled provider's code and recompile it mid-measurement.)"""
    from slam_bench import slam_loss
    d = problem.own_copy().data
    z = d["z"].requires_grad_(True)
    loss = torch.compile(lambda z: slam_loss(z, d["y"], d["alpha"], d["k"], check_values=False),
                         dynamic=False, fullgraph=True, backend=backend)

    def step():
        z.grad = None
        loss(z).backward()
    return step, z


def measure(steps: Dict[str, Callable[[], None]], reps: int) -> Dict[str, List[float]]:
    """Per provider, its step times (s) in `reps` rounds, the order rotating each round."""
    names = list(steps)
    times: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(reps):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            t0 = time.perf_counter()
            steps[n]()
            times[n].append(time.perf_counter() - t0)
    return times


def ratio(times, measured, baseline) -> List[float]:
    return [b / m for m, b in zip(times[measured], times[baseline])]


def report(times, targets, label: str) -> bool:
    ok = True
    print(f"-- {label}: load average before/after {label_load(times)}")
    for n, ts in times.items():
        if n.startswith("_"):
            continue
        q = statistics.quantiles(ts, n=4)
        print(f"   {n:34s} median {1e3 * statistics.median(ts):8.2f} ms  "
              f"(IQR {1e3 * q[0]:.2f}-{1e3 * q[2]:.2f}, min {1e3 * min(ts):.2f})")
    for measured, baseline, goal in targets:
        if measured not in times or baseline not in times:
            continue
        rs = ratio(times, measured, baseline)
        q = statistics.quantiles(rs, n=4)
        med = statistics.median(rs)
        verdict = "" if goal is None else (" PASS" if med >= goal else " FAIL") + f" (>= {goal}x)"
        ok &= goal is None or med >= goal
        print(f"   {measured} vs {baseline}: {med:.2f}x (IQR {q[0]:.2f}-{q[2]:.2f}){verdict}")
    return ok


def label_load(times) -> str:
    return f"{times['_load'][0]} -> {times['_load'][1]}"


def run(reps: int, threads: int, load: int, compile_: bool, rows: int = N, cols: int = C) -> bool:
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    lib = cpu_fused.library()
    print(f"torch {torch.__version__}, {threads} threads, {os.cpu_count()} cores; compiled body: "
          f"{'loaded' if lib else 'UNAVAILABLE'} in {time.perf_counter() - t0:.2f} s "
          f"({cpu_fused.library_path().name})")
    all_names = [p[0] for p in PROVIDERS]
    ok = True
    with timing.allocator_steady_state():
        steps, warm = build_steps(all_names, compile_, rows, cols)
        for n, w in warm.items():
            print(f"   warm-up (2 steps, incl. any compile) {n}: {w:.2f} s")
        for n in ("slam_loss", "slam_loss check_values=False", "slam_loss eager body (before)",
                  "slam eager formula", "distill_loss", "F.cross_entropy soft targets"):
            print(f"   aten ops per forward + backward, {n}: {count_ops(steps[n])}")
        nbytes = rows * cols * 4
        bw = timing.copy_bandwidth_gbps(torch.device("cpu"), nbytes)
        before = load_avg()
        times = measure(steps, reps)
        times["_load"] = [before, load_avg()]
        ok &= report(times, TARGETS, f"no added load, {reps} rounds")
        for n in ("slam_loss", "slam_loss check_values=False", "distill_loss check_values=False"):
            gbps = 3 * nbytes / statistics.median(times[n]) / 1e9
            print(f"   {n}: {gbps:.1f} GB/s of floor traffic = {100 * gbps / bw:.0f}% of "
                  f"memcpy ({bw:.1f} GB/s, read + write, measured just before)")
        # In CPU time at 1 thread (less sensitive to the load than wall time at 2 threads).
        torch.set_num_threads(1)
        bw1 = timing.copy_bandwidth_gbps(torch.device("cpu"), nbytes)
        one = measure({n: steps[n] for n in ("slam_loss", "distill_loss")}, reps)
        torch.set_num_threads(threads)
        for n, ts in one.items():
            gbps = 3 * nbytes / statistics.median(ts) / 1e9
            print(f"   1 thread, {n}: {1e3 * statistics.median(ts):.1f} ms, {gbps:.1f} GB/s of floor "
                  f"traffic = {100 * gbps / bw1:.0f}% of 1-thread memcpy ({bw1:.1f} GB/s), "
                  f"load {load_avg()}")
        if load:
            sub = {n: steps[n] for n in ("slam_loss", "slam eager formula",
                                         "slam_loss eager body (before)",
                                         "slam_loss at::parallel_for",
                                         "slam_loss helper pool (before)")}
            with busy_processes(load):
                time.sleep(2.0)
                before = load_avg()
                lt = measure(sub, reps)
                lt["_load"] = [before, load_avg()]
            ok &= report(lt, [LOADED_TARGET,
                              ("slam_loss eager body (before)", "slam eager formula", None),
                              ("slam_loss", "slam_loss at::parallel_for", None),
                              ("slam_loss", "slam_loss helper pool (before)", None)],
                         f"oversubscribed: {load} busy single-threaded processes + {threads} "
                         f"torch threads on {os.cpu_count()} cores, {reps} rounds")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--threads", type=int, default=G.CPU_TARGET_THREADS)
    ap.add_argument("--load", type=int, default=4, help="busy processes for the loaded run (0: none)")
    ap.add_argument("--n", type=int, default=N)
    ap.add_argument("--c", type=int, default=C)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the "
                    "distillation formula and of a step calling slam_loss (tens of seconds "
                    "to compile)")
    a = ap.parse_args(argv)
    return 0 if run(a.reps, a.threads, a.load, a.compile, a.n, a.c) else 1


if __name__ == "__main__":
    sys.exit(main())
