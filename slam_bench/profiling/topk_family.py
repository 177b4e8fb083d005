"""The "topk" kernel family: `slam_loss_topk` on (N, V) logits and a sparse top-K teacher.

Problems: logits z (N, V) ~ N(0, 2^2) in the sweep's dtype, and a teacher of K = 64 (id,
probability) pairs a row (topk_problems.teacher_data: "peaked" teachers, alpha per row, k = 5).
C in the CSV is the vocabulary V; params records K, k and the alpha range.

Providers, each on its own copy of the inputs:
- "slam_bench": `slam_loss_topk(..., check_values=False)`; on a GPU check backend="triton";
- "slam_bench_checked": the same with default arguments (value checks on);
- "dense": the dense path, `slam_loss` on the teacher scattered into an (N, V) row (built for
  that provider's own copy before timing: an input, not part of the step);
- "liger": Liger-Kernel's cross-entropy on the teacher's argmax (CUDA only): the closest work a
  peer library does (one hard label, no mixing, no K gathered ids).

Bytes: each provider is credited with its own interface: z, the teacher as it reads it (K ids
and probabilities; the dense (N, V) row; or N labels), alpha, and in "full" dL/dz once. The
floor is the cheaper of "slam_bench" and "dense" (the K entries, unless K is close to V):
Liger reads less but does less work.
"""
from __future__ import annotations

from typing import List

import torch

from slam_bench import slam_loss, slam_loss_topk
from slam_bench.checks import check_choice
from slam_bench.profiling.accuracy import finite_or_raise
from slam_bench.profiling.families import (DTYPE_BYTES, DTYPES, Config, Grid, KernelFamily,
                                           Problem, register_family, require_liger)
from slam_bench.profiling.topk_problems import (K_TEACHER, TEACHER_KINDS, add_dense_teacher,
                                                teacher_bytes, teacher_data, teacher_params)

KERNELS = ("topk",)
PROVIDERS = ("slam_bench", "slam_bench_checked", "dense", "liger")
LOGIT_SCALE = 2.0

CPU_GRIDS = {
    "cpu-quick": (Grid(kernels=KERNELS, dtypes=("fp32",), teachers=("peaked",),
                       c_values=(1000, 32000), n_fixed=256),),
    "cpu-full": (Grid(kernels=KERNELS, dtypes=("fp32", "bf16"), teachers=("peaked",),
                      c_values=(1000, 32000, 128256), n_fixed=1024),),
    "dry-run": (Grid(kernels=KERNELS, dtypes=("bf16",), teachers=("peaked",), c_values=(100,),
                     n_fixed=8),),
}
# GPU: LLM vocabularies at N = 4096 rows (2 GiB of bf16 logits at V = 262,144).
GPU_N = 4096
GPU_V = (32000, 128256, 262144)
GPU_SWEEP_PROVIDERS = ("slam_bench", "dense", "liger")


def make_problem(kernel: str, n: int, c: int, dtype: str, device, teacher: str, seed: int = 0,
                 backend: str = "auto", k_ids: int = K_TEACHER) -> Problem:
    """z (N, V=c) in `dtype`; ids (N, K), probs (N, K), alpha (N,), k, labels (N,)."""
    check_choice("kernel", kernel, KERNELS)
    check_choice("teacher", teacher, TEACHER_KINDS)
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    data = teacher_data(n, c, DTYPES[dtype], gen, device, k_ids=k_ids, kind=teacher)
    data["z"] = (torch.randn(n, c, generator=gen, device=device) * LOGIT_SCALE).to(DTYPES[dtype])
    return Problem(kernel, n, c, dtype, teacher, data, params=teacher_params(data),
                   backend=backend)


def _liger():
    from liger_kernel.transformers import LigerCrossEntropyLoss
    ce = LigerCrossEntropyLoss(reduction="mean")
    return lambda p: ce(p.data["z"], p.data["labels"])


def loss_fn(provider: str, problem: Problem):
    """The loss of `problem` as computed by `provider` (called on the provider's own copy)."""
    if provider in ("slam_bench", "slam_bench_checked"):
        check = provider == "slam_bench_checked"
        return lambda p: slam_loss_topk(p.data["z"], p.data["ids"], p.data["probs"],
                                        p.data["alpha"], p.data["k"], check_values=check,
                                        backend=p.backend)
    if provider == "dense":
        add_dense_teacher(problem)
        return lambda p: slam_loss(p.data["z"], p.data["y"], p.data["alpha"], p.data["k"],
                                   check_values=False, backend=p.backend)
    if provider == "liger":
        require_liger(problem.data["z"].device)
        return _liger()
    raise ValueError(f"provider must be one of {PROVIDERS}, got {provider!r}")


def provider_bytes(provider: str, problem: Problem, mode: str) -> int:
    """Bytes `provider` reads and writes through its own interface for one step."""
    z = problem.n * problem.c * DTYPE_BYTES[problem.dtype]
    return z * (2 if mode == "full" else 1) + teacher_bytes(provider, problem)  # dL/dz once


def floor_bytes(problem: Problem, mode: str) -> int:
    """The least a provider doing this work moves: the K teacher entries, or the dense row
    where that is smaller (K close to V)."""
    return min(provider_bytes(p, problem, mode) for p in ("slam_bench", "dense"))


def goal_configs() -> List[Config]:
    """The rows the GPU goals read: bf16 forward + backward, ours and the dense path."""
    return [Config("topk", "peaked", "bf16", GPU_N, v, ("full",), ("slam_bench", "dense"))
            for v in GPU_V]


def gpu_configs() -> List[Config]:
    """The rest of the GPU sweep: forward-only rows, Liger, and fp32."""
    return [Config("topk", "peaked", dtype, GPU_N, v, providers=GPU_SWEEP_PROVIDERS)
            for dtype in ("bf16", "fp32") for v in GPU_V]


def smoke(device) -> None:
    """One forward + backward through the top-K Triton kernels; raises what stops them."""
    p = make_problem("topk", 4, 300, "fp32", device, "peaked", k_ids=8)
    z = p.data["z"].requires_grad_(True)
    loss = slam_loss_topk(z, p.data["ids"], p.data["probs"], p.data["alpha"], p.data["k"],
                          backend="triton")
    loss.backward()
    finite_or_raise(loss, z.grad)


def _register():
    from slam_bench.profiling import topk_checks

    return register_family(KernelFamily(
        name="topk", kernels=KERNELS, providers=PROVIDERS, make_problem=make_problem,
        loss_fn=loss_fn, provider_bytes=provider_bytes, floor_bytes=floor_bytes,
        cpu_grids=CPU_GRIDS, goal_configs=goal_configs, gpu_configs=gpu_configs, smoke=smoke,
        correctness=topk_checks.correctness, gpu_goals=topk_checks.gpu_goals))


FAMILY = _register()
