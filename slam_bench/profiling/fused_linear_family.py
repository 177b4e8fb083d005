"""The "fused_linear" kernel family: `fused_linear_slam_loss` on hidden (N, H), lm_weight (V, H)
and a sparse top-K teacher (as in topk_family). C in the CSV is the vocabulary V; params
records K, k, H, the chunk (rows of logits held at once) and the alpha range.

Providers, each on its own copy of the inputs:
- "slam_bench": `fused_linear_slam_loss(..., check_values=False)` (backend="triton" on a GPU
  check); "slam_bench_checked": the same with default arguments;
- "unfused": `F.linear`, then `slam_loss_topk`: what fusing saves;
- "dense": `F.linear`, then `slam_loss` on the teacher scattered into (N, V) rows (built for
  that provider before timing);
- "liger": Liger-Kernel's fused linear cross-entropy on the teacher's argmax (CUDA only).

Work: the N x V logits never need to exist, so the byte floor is the inputs and their
gradients (hidden, lm_weight, the K teacher entries (or the dense teacher where K is close to
V), alpha; d(hidden), d(lm_weight)); every provider is credited with those bytes through its
interface (the dense teacher, or labels, in place of the K entries). The step is compute-bound: 2 N V H multiply-adds for the logits,
and in "full" two more matmuls of that size, so rows also record FLOPs and TFLOP/s (`flops`).

The CPU sweeps include the memory benchmark (N = 4096, V = 65,536, H = 64, fp32;
N = 1024, V = 8192 in the quick sweep): its peak-memory rows are the family's CPU targets
(fused_linear_checks.cpu_targets, fused_linear_memory.py).
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch.nn import functional as F

from slam_bench import fused_linear_slam_loss, slam_loss, slam_loss_topk
from slam_bench.vocab.fused_linear import default_chunk_size
from slam_bench.checks import check_choice
from slam_bench.profiling.accuracy import finite_or_raise
from slam_bench.profiling.families import (DTYPE_BYTES, DTYPES, Config, Grid, KernelFamily,
                                           Problem, register_family, require_liger)
from slam_bench.profiling.fused_linear_memory import MEMORY_SIZES
from slam_bench.profiling.topk_problems import (K_TEACHER, TEACHER_KINDS, add_dense_teacher,
                                                teacher_bytes, teacher_data, teacher_params)

KERNELS = ("fused_linear",)
PROVIDERS = ("slam_bench", "slam_bench_checked", "unfused", "dense", "liger")
DEFAULT_H = 64


def _memory_grids(size: dict) -> tuple:
    """The memory benchmark at `size` (forward + backward, fp32): every provider but Liger at
    N, and the fused loss alone at N / 4 with the same chunk (its growth with N)."""
    params = (("h", size["h"]), ("chunk_size", size["chunk"]))
    common = dict(kernels=KERNELS, dtypes=("fp32",), teachers=("peaked",), modes=("full",),
                  params=params)
    return (Grid(c_values=(size["v"],), n_fixed=size["n"],
                 providers=("slam_bench", "unfused", "dense"), **common),
            Grid(c_values=(size["v"],), n_fixed=size["n"] // 4, providers=("slam_bench",),
                 **common))


CPU_GRIDS = {
    "cpu-quick": (Grid(kernels=KERNELS, dtypes=("fp32",), teachers=("peaked",),
                       c_values=(8192, 32000), n_fixed=512, params=(("h", 64),)),)
    + _memory_grids(MEMORY_SIZES["cpu-quick"]),
    "cpu-full": (Grid(kernels=KERNELS, dtypes=("fp32",), teachers=("peaked",),
                      c_values=(8192, 32000, 65536), n_fixed=2048, params=(("h", 256),)),)
    + _memory_grids(MEMORY_SIZES["cpu-full"]),
    "dry-run": (Grid(kernels=KERNELS, dtypes=("bf16",), teachers=("peaked",), c_values=(100,),
                     n_fixed=8, params=(("h", 16),)),),
}
# GPU: LLM vocabularies and hidden sizes, N = 4096 rows.
GPU_N, GPU_H = 4096, 4096
GPU_V = (32000, 128256, 262144)
GPU_PARAMS = (("h", GPU_H),)


def make_problem(kernel: str, n: int, c: int, dtype: str, device, teacher: str, seed: int = 0,
                 backend: str = "auto", h: int = DEFAULT_H, k_ids: int = K_TEACHER,
                 chunk_size: Optional[int] = None) -> Problem:
    """hidden (N, H), lm_weight (V=c, H) in `dtype` (logits of about unit scale); the teacher
    of topk_problems.teacher_data; chunk_size None: the function's default."""
    check_choice("kernel", kernel, KERNELS)
    check_choice("teacher", teacher, TEACHER_KINDS)
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    tdtype = DTYPES[dtype]
    data = teacher_data(n, c, tdtype, gen, device, k_ids=k_ids, kind=teacher)
    data["hidden"] = torch.randn(n, h, generator=gen, device=device).to(tdtype)
    data["lm_weight"] = (torch.randn(c, h, generator=gen, device=device)
                         * (2.0 / h ** 0.5)).to(tdtype)
    data["chunk_size"] = chunk_size
    chunk = chunk_size or default_chunk_size(n, c)
    return Problem(kernel, n, c, dtype, teacher, data, grad_input=("hidden", "lm_weight"),
                   params=f"{teacher_params(data)} H={h} chunk={chunk}", backend=backend)


def _liger():
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    flce = LigerFusedLinearCrossEntropyLoss(reduction="mean")
    return lambda p: flce(p.data["lm_weight"], p.data["hidden"], p.data["labels"])


def loss_fn(provider: str, problem: Problem):
    """The loss of `problem` as computed by `provider` (called on the provider's own copy)."""
    def teacher(p):
        d = p.data
        return d["ids"], d["probs"], d["alpha"], d["k"]

    if provider in ("slam_bench", "slam_bench_checked"):
        check = provider == "slam_bench_checked"
        return lambda p: fused_linear_slam_loss(
            p.data["hidden"], p.data["lm_weight"], *teacher(p), chunk_size=p.data["chunk_size"],
            check_values=check, backend=p.backend)
    if provider == "unfused":
        return lambda p: slam_loss_topk(F.linear(p.data["hidden"], p.data["lm_weight"]),
                                        *teacher(p), check_values=False, backend=p.backend)
    if provider == "dense":
        add_dense_teacher(problem)
        return lambda p: slam_loss(F.linear(p.data["hidden"], p.data["lm_weight"]), p.data["y"],
                                   p.data["alpha"], p.data["k"], check_values=False,
                                   backend=p.backend)
    if provider == "liger":
        require_liger(problem.data["hidden"].device)
        return _liger()
    raise ValueError(f"provider must be one of {PROVIDERS}, got {provider!r}")


def provider_bytes(provider: str, problem: Problem, mode: str) -> int:
    """Bytes through the provider's interface: hidden and lm_weight (and their gradients in
    "full"), the teacher as the provider reads it, alpha."""
    d = problem.data
    io = (d["hidden"].numel() + d["lm_weight"].numel()) * DTYPE_BYTES[problem.dtype]
    return io * (2 if mode == "full" else 1) + teacher_bytes(provider, problem)


def floor_bytes(problem: Problem, mode: str) -> int:
    """The least a provider doing this work moves: the K teacher entries, or the dense row
    where that is smaller (K close to V)."""
    return min(provider_bytes(p, problem, mode) for p in ("slam_bench", "dense"))


def flops(problem: Problem, mode: str) -> int:
    """2 N V H for the logits; x3 with d(hidden) and d(lm_weight)."""
    h = problem.data["hidden"].shape[1]
    return 2 * problem.n * problem.c * h * (3 if mode == "full" else 1)


def goal_configs() -> List[Config]:
    """The rows the GPU goals read: bf16 forward + backward against the unfused path and
    Liger's fused linear cross-entropy."""
    return [Config("fused_linear", "peaked", "bf16", GPU_N, v, ("full",),
                   ("slam_bench", "unfused", "liger"), GPU_PARAMS) for v in GPU_V]


def gpu_configs() -> List[Config]:
    """The rest of the GPU sweep: forward-only rows and the dense path."""
    return [Config("fused_linear", "peaked", "bf16", GPU_N, v,
                   providers=("slam_bench", "unfused", "dense", "liger"), params=GPU_PARAMS)
            for v in GPU_V]


def smoke(device) -> None:
    """One forward + backward through the fused chunk step's Triton kernel (two chunks)."""
    p = make_problem("fused_linear", 6, 300, "fp32", device, "peaked", h=16, k_ids=8,
                     chunk_size=3)
    h, w = p.data["hidden"].requires_grad_(True), p.data["lm_weight"].requires_grad_(True)
    loss = fused_linear_slam_loss(h, w, p.data["ids"], p.data["probs"], p.data["alpha"],
                                  p.data["k"], chunk_size=3, backend="triton")
    loss.backward()
    finite_or_raise(loss, h.grad, w.grad)


def _register():
    from slam_bench.profiling import fused_linear_checks

    return register_family(KernelFamily(
        name="fused_linear", kernels=KERNELS, providers=PROVIDERS, make_problem=make_problem,
        loss_fn=loss_fn, provider_bytes=provider_bytes, floor_bytes=floor_bytes, flops=flops,
        cpu_grids=CPU_GRIDS, goal_configs=goal_configs, gpu_configs=gpu_configs, smoke=smoke,
        correctness=fused_linear_checks.correctness, gpu_goals=fused_linear_checks.gpu_goals,
        cpu_targets=fused_linear_checks.cpu_targets))


FAMILY = _register()
