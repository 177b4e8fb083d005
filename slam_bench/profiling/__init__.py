"""Loss throughput measurement: problems and providers, timers, the sweep, the CSV and plot.

`slam-bench profile` (slam_bench/cli/profile.py) and `python -m slam_bench.gpu_check` both drive `sweep.run_sweep`
and write with `report`; the conventions are those of spec/kernels.md ("Benchmarking
conventions"): one long CSV row per (kernel, provider, mode, dtype, N, C, teacher).

The vocabulary-scale families of `slam_loss_topk` / `fused_linear_slam_loss` live beside it:
`vocab` (problems, providers, work), `vocab_sweep` (sizes, runs, CSV), `vocab_memory` (peak
memory of the fused loss), `vocab_check` (gpu_check's rows and goals), `topk_problems`.
"""
