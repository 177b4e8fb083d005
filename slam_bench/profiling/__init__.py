"""Loss throughput measurement: kernel families, timers, the sweep, the CSV and plot.

`slam-bench profile` (slam_bench/cli/profile.py) and `python -m slam_bench.gpu_check` both drive
`sweep.run_sweep` and write with `report`; the conventions are those of spec/kernels.md
("Benchmarking conventions"): one long CSV row per (kernel, provider, mode, dtype, N, C,
teacher), with the bytes the provider moves, the problem's floor, and GB/s and the fraction of
the measured copy bandwidth against both.

Files: `families.py` (the plug-in interface below), `loss_family.py` and `loss_checks.py` (the
SLaM loss family: slam, distill, distill_onehot), `sweep.py` (configurations and measuring),
`timing.py` (timers, peak memory, copy bandwidth), `report.py` (CSV, plot, tables).

Adding a kernel family (e.g. a sparse top-K teacher loss or a fused linear + loss):
1. In a new module `slam_bench/profiling/<name>_family.py`, build a
   `families.KernelFamily(name=..., kernels=(...), providers=(...), make_problem=...,
   loss_fn=..., provider_bytes=..., floor_bytes=..., goal_configs=..., gpu_configs=...,
   correctness=..., gpu_goals=..., cpu_targets=...)` and pass it to
   `families.register_family`. The contracts:
   - `make_problem(kernel, n, c, dtype, device, teacher, seed=0, backend="auto") -> Problem`:
     inputs in `Problem.data` by name; `grad_input` names the tensor a "full" step
     differentiates; `params` is the string recorded in the CSV; this library's providers must
     pass `problem.backend` on (the GPU check sets "triton": never a silent fallback).
   - `loss_fn(provider, problem) -> (problem -> loss tensor)`, raising `families.Unavailable`
     with the reason where a provider cannot run; the sweep gives each provider its own copy
     of the inputs and wraps the loss into "fwd" (no_grad) and "full" (backward) steps.
   - `provider_bytes(provider, problem, mode)` and `floor_bytes(problem, mode)`: bytes read
     and written through the provider's own interface, and the least any provider must move.
   - `goal_configs()`: the `families.Config` rows its GPU goals read (measured first, with
     only the providers the goals compare); `gpu_configs()`: the rest of its GPU sweep.
   - `correctness(device, dry_run, log) -> rows` (dicts with at least kernel, dtype, N, C and
     result "PASS"/"FAIL"), `gpu_goals(df)` and `cpu_targets(df)` -> `report.check_row`s.
2. Import the module in `sweep.py` next to `loss_family` so that every sweep sees it.
The GPU check then runs its correctness rows, its goal rows before any other family's
remaining sweep, and prints its goals in the summary; `slam-bench profile` measures its rows.
"""
