"""Loss throughput measurement: kernel families, timers, the sweep, the CSV and plot.

`slam-bench profile` (slam_bench/cli/profile.py) and `python -m slam_bench.gpu_check` both drive
`sweep.run_sweep` over every registered kernel family and write with `report`; the conventions
are those of docs/kernels.md ("Benchmarking"): one long CSV row per (family, kernel, provider,
mode, dtype, N, C, teacher, params), with the bytes the provider moves, the problem's floor,
GB/s and the fraction of the measured copy bandwidth against both, and FLOPs and TFLOP/s for
compute-bound families.

Files: `families.py` (the plug-in interface below); the families, each a `<name>_family.py`
(problems, providers, bytes, sweeps) with a `<name>_checks.py` (correctness rows, goals,
targets): `loss` (slam, distill, distill_onehot; the GPU check's value-check and compile-mode
rows in `loss_device_checks.py`), `topk` (slam_loss_topk; teachers in `topk_problems.py`),
`fused_linear` (fused_linear_slam_loss; its memory claim in `fused_linear_memory.py`);
`accuracy.py` (tolerances against the float64 reference), `sweep.py` (sweeps and measuring),
`timing.py` (timers, peak memory, copy bandwidth), `report.py` (CSV, plot, tables),
`cpu_targets.py` (the CPU targets measured side by side in one process).

Adding a kernel family:
1. In a new module `slam_bench/profiling/<name>_family.py`, build a
   `families.KernelFamily(name=..., kernels=(...), providers=(...), make_problem=...,
   loss_fn=..., provider_bytes=..., floor_bytes=..., flops=..., cpu_grids=...,
   goal_configs=..., gpu_configs=..., smoke=..., correctness=..., gpu_goals=...,
   cpu_targets=...)` and pass it to `families.register_family`. The contracts:
   - `make_problem(kernel, n, c, dtype, device, teacher, seed=0, backend="auto", **params)
     -> Problem`: inputs in `Problem.data` by name; `grad_input` names the tensor (or tuple of
     tensors) a "full" step differentiates; `params` is the string recorded in the CSV
     ("name=value" words); keyword `params` come from `Config.params` (e.g. a hidden size).
     This library's providers must pass `problem.backend` on (the GPU check sets "triton":
     never a silent fallback).
   - `loss_fn(provider, problem) -> (problem -> loss tensor)`, called on the provider's own
     copy of the inputs (it may add provider-specific inputs there, built before timing),
     raising `families.Unavailable` with the reason where a provider cannot run; the sweep
     wraps the loss into "fwd" (no_grad) and "full" (backward) steps.
   - `provider_bytes(provider, problem, mode)` and `floor_bytes(problem, mode)`: bytes read
     and written through the provider's own interface, and the least any provider doing the
     work must move; `flops(problem, mode)`: 2 x multiply-adds, 0 for memory-bound work.
   - `cpu_grids`: {"cpu-quick" | "cpu-full" | "dry-run": (families.Grid, ...)}: the CPU
     sweeps (the dry run is the GPU check's CPU rehearsal under Triton's interpreter).
   - `goal_configs()`: the `families.Config` rows its GPU goals read (measured first, with
     only the providers the goals compare); `gpu_configs()`: the rest of its GPU sweep.
   - `smoke(device)`: one tiny backend="triton" forward + backward (the GPU check stops,
     measuring nothing, when it raises).
   - `correctness(device, dry_run, log) -> rows` (dicts with at least kernel, dtype, N, C and
     result "PASS"/"FAIL"), `gpu_goals(df)` and `cpu_targets(df)` -> `report.check_row`s.
2. Import the module below, after the families whose rows should come first.
The GPU check then runs its smoke call, its correctness rows, its goal rows before any
family's remaining sweep, and prints its goals in the summary; `slam-bench profile` measures
its rows (`--family <name>` alone) and checks its targets.
"""
# Families register on import, in this order: the order of the CSV's rows, of the summary's
# goals and of the GPU check's goal rows.
from slam_bench.profiling import loss_family  # noqa: F401  (isort: keep this order)
from slam_bench.profiling import topk_family  # noqa: F401
from slam_bench.profiling import fused_linear_family  # noqa: F401
