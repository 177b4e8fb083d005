"""Tiny CPU sweeps for the profiling tests: every family's "cpu-quick" grids shrunk to a few
rows (warm-up 0, one timed round), so `slam-bench profile --quick` runs in seconds."""
from __future__ import annotations

from slam_bench.profiling import fused_linear_family, fused_linear_memory, sweep
from slam_bench.profiling.families import FAMILIES, Grid

TINY_SPEC = sweep.SweepSpec(name="cpu-quick", warmup=0, reps=1, compile_only=())
TINY_MEMORY = dict(n=32, v=512, h=8, chunk=8)
TINY_GRIDS = {
    "loss": (Grid(kernels=("slam", "distill"), dtypes=("fp32",), teachers=("peaked",),
                  c_values=(10, 30), n_fixed=8),),
    "topk": (Grid(kernels=("topk",), dtypes=("fp32",), teachers=("peaked",), c_values=(50,),
                  n_fixed=4),),
    "fused_linear": (Grid(kernels=("fused_linear",), dtypes=("fp32",), teachers=("peaked",),
                          c_values=(50,), n_fixed=4, params=(("h", 8),)),)
    + fused_linear_family._memory_grids(TINY_MEMORY),
}


def tiny_cpu_sweep(monkeypatch) -> None:
    """`--quick` measures TINY_GRIDS (the fused family's memory claim at TINY_MEMORY)."""
    monkeypatch.setattr(sweep, "CPU_QUICK", TINY_SPEC)
    for name, grids in TINY_GRIDS.items():
        monkeypatch.setitem(FAMILIES[name].cpu_grids, "cpu-quick", grids)
    monkeypatch.setitem(fused_linear_memory.MEMORY_SIZES, "cpu-quick", TINY_MEMORY)
