"""The SLaM loss family: its benchmark problems, providers, byte counts and GPU sweep.

Kernels (values of the CSV's "kernel" column): "slam" (per-row alpha, top-k mixing),
"distill" (the alpha = 1 soft-label cross-entropy) and "distill_onehot" (distill with one-hot
teacher rows, where hard-label cross-entropy kernels such as Liger's compute the same math).

Providers, each on its own copy of the inputs (Problem.own_copy):
- "slam_bench": this library's loss with check_values=False (what a tuned training loop
  calls; on a GPU it asks for backend="triton" explicitly, so a kernel that fails to import
  or compile fails the row instead of silently running the torch backend);
- "slam_bench_checked": the same with default arguments (value checks on);
- "slam_bench_compile": compile mode, torch.compile(fullgraph=True, static shapes, afresh per
  configuration) of a step calling the loss with check_values=False (Inductor; "aot_eager"
  on CPU tensors, where the dry run only checks that the path runs); not in PROVIDERS: only
  the configurations that name it measure it (a GPU goal row, the dry run's tiny row);
- "slam_bench_unsplit": "slam_bench" with split rows turned off (one program per streamed row,
  kernels/split_rows.py), beside it at a few wide rows (GPU goal rows; the dry run's tiny
  row, where nothing is split on CPU);
- "eager": the formula a user writes (slam_bench.reference: softmax -> mix -> log -> sum)
  under autograd; "compile": torch.compile of it, static shapes, compiled afresh for each
  configuration (the compile time is the row's warmup_s, outside the timing);
- "torch_ce": F.cross_entropy (soft targets for distill, labels for distill_onehot);
- "liger": Liger-Kernel's cross-entropy (labels) and KL-divergence losses, where its math
  matches.

Bytes: a provider is credited with what it reads and writes through its own interface (the
one-hot comparison credits label-based providers with N int64 labels, not an N x C teacher);
the floor of a problem is the least any provider must move: z and the teacher once (labels
for one-hot rows), alpha for SLaM, and dL/dz once in "full" mode (docs/kernels.md).
"""
from __future__ import annotations

import math
from typing import List

import torch
import torch.nn.functional as F

from slam_bench import distill_loss, slam_loss
from slam_bench.profiling.accuracy import finite_or_raise
from slam_bench.checks import check_choice
from slam_bench.profiling.families import (DTYPE_BYTES, DTYPES, Config, Grid, KernelFamily,
                                           Problem, Unavailable, register_family, require_liger)
from slam_bench.reference import distill_loss_reference, slam_loss_reference

KERNELS = ("slam", "distill", "distill_onehot")
PROVIDERS = ("slam_bench", "slam_bench_checked", "eager", "compile", "torch_ce", "liger")
TEACHERS = ("peaked", "random")

# Problem hyper-parameters, recorded in every CSV row (docs/kernels.md leaves them open).
K_TOP = 5                  # teacher top-k size of the "slam" kernel (capped at C)
ALPHA_RANGE = (0.6, 1.0)   # per-row alpha drawn uniformly from this range
PEAK_LOGIT = 6.0           # "peaked" teacher: this logit bonus on one class (top prob ~0.9 at C=1000)
LOGIT_SCALE = 2.0          # student logits ~ N(0, LOGIT_SCALE^2)

# GPU sweep: N is chosen so that a problem holds about this many elements (a bf16 full step
# then moves ~0.8 GB, many times the H200's 60 MB of L2), between the two bounds.
GPU_ELEMENTS = 1 << 27
GPU_MIN_N, GPU_MAX_N = 512, 1 << 20
GPU_C = (10, 100, 1000, 8192, 32000, 128256, 262144)
# The C values of the goals: rows kept on chip (<= 8192) and streamed rows (>= 32000).
GOAL_C_ON_CHIP = (1000, 8192)
GOAL_C_STREAMED = (32000, 128256, 262144)
# The default checks' goal: slam_bench_checked beside slam_bench at these sizes (bf16).
CHECKED_GOAL_C = 32000
CHECKED_GOAL_N = (4096, 8192)
# The split rows' goal: slam_bench (split where N < 2 x SMs) beside "slam_bench_unsplit" (one
# program per row) at these few wide rows (bf16).
SPLIT_GOAL_C = 128256
SPLIT_GOAL_N = (8, 64)


def gpu_n(c: int) -> int:
    """Rows of a GPU problem with C classes: ~GPU_ELEMENTS elements, a power of two."""
    n = 1 << max(0, round(math.log2(GPU_ELEMENTS / c)))
    return max(GPU_MIN_N, min(GPU_MAX_N, n))


def make_problem(kernel: str, n: int, c: int, dtype: str, device, teacher: str, seed: int = 0,
                 backend: str = "auto") -> Problem:
    """z (N, C) logits and y (N, C) teacher rows in `dtype` ("bf16", "fp16", "fp32"); alpha (N,)
    float32; k; labels (N,) int64 (the teacher's argmax)."""
    check_choice("kernel", kernel, KERNELS)
    check_choice("teacher", teacher, TEACHERS)
    device = torch.device(device)
    tdtype = DTYPES[dtype]
    # Drawn on the device itself: GPU sweeps reach 10^8 elements, slow to draw on a CPU.
    gen = torch.Generator(device=device).manual_seed(seed)
    kw = dict(generator=gen, device=device)
    z = (torch.randn(n, c, **kw) * LOGIT_SCALE).to(tdtype)
    t_logits = torch.randn(n, c, **kw)
    labels = torch.randint(0, c, (n,), **kw)
    if teacher == "peaked":
        t_logits[torch.arange(n, device=device), labels] += PEAK_LOGIT
    labels = t_logits.argmax(dim=1)
    if kernel == "distill_onehot":
        del t_logits
        y = torch.zeros(n, c, dtype=tdtype, device=device).scatter_(1, labels[:, None], 1.0)
    else:
        y = torch.softmax(t_logits, dim=1)
        del t_logits
        y = y.to(tdtype)
    lo, hi = ALPHA_RANGE
    alpha = lo + (hi - lo) * torch.rand(n, **kw)
    k = min(K_TOP, c)
    params = f"k={k} alpha={lo}-{hi}" if kernel == "slam" else ""
    return Problem(kernel, n, c, dtype, teacher, dict(z=z, y=y, alpha=alpha, k=k, labels=labels),
                   params=params, backend=backend)


def _compiled(fn):
    # Static shapes, compiled afresh for each configuration: a dynamic-shape graph would be
    # slower than what a user's compiled training step gets, and reusing one across
    # configurations would hit torch.compile's recompile limit and fall back to eager.
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


def _compiled_ours(fn, device):
    # Compile mode of this library's loss: one graph (fullgraph=True makes a break an error).
    torch._dynamo.reset()
    backend = "inductor" if torch.device(device).type == "cuda" else "aot_eager"
    return torch.compile(fn, dynamic=False, fullgraph=True, backend=backend)


def _liger(kernel: str):
    from liger_kernel.transformers import LigerCrossEntropyLoss, LigerKLDIVLoss
    if kernel == "distill_onehot":
        ce = LigerCrossEntropyLoss(reduction="mean")
        return lambda p: ce(p.data["z"], p.data["labels"])
    if kernel == "distill":
        # Liger's soft-target loss is KL(y || f) on log-probabilities: the same gradient as the
        # soft cross-entropy (the value differs by the teacher's entropy); log_softmax is eager.
        kl = LigerKLDIVLoss(reduction="batchmean")
        return lambda p: kl(torch.log_softmax(p.data["z"], dim=1), p.data["y"])
    raise Unavailable("Liger has no SLaM loss")


def loss_fn(provider: str, problem: Problem):
    """The loss of `problem` as computed by `provider`, as a function of the problem."""
    kernel = problem.kernel
    if provider in ("slam_bench", "slam_bench_checked"):
        check = provider == "slam_bench_checked"
        if kernel == "slam":
            return lambda p: slam_loss(p.data["z"], p.data["y"], p.data["alpha"], p.data["k"],
                                       check_values=check, backend=p.backend)
        return lambda p: distill_loss(p.data["z"], p.data["y"], check_values=check,
                                      backend=p.backend)
    if provider == "slam_bench_unsplit":
        # The same call with the split turned off (kernels/config.py): one program per row.
        from slam_bench.kernels import config

        def unsplit(p):
            with config.no_split():
                return slam_loss(p.data["z"], p.data["y"], p.data["alpha"], p.data["k"],
                                 check_values=False, backend=p.backend)
        if kernel != "slam":
            raise Unavailable("the unsplit comparison is recorded for the slam kernel")
        return unsplit
    if provider == "slam_bench_compile":
        device = problem.data["z"].device
        if kernel == "slam":
            step = _compiled_ours(lambda z, y, alpha, k, backend: slam_loss(
                z, y, alpha, k, check_values=False, backend=backend), device)
            return lambda p: step(p.data["z"], p.data["y"], p.data["alpha"], p.data["k"],
                                  p.backend)
        step = _compiled_ours(lambda z, y, backend: distill_loss(
            z, y, check_values=False, backend=backend), device)
        return lambda p: step(p.data["z"], p.data["y"], p.backend)
    if provider in ("eager", "compile"):
        if kernel == "slam":
            ref = _compiled(slam_loss_reference) if provider == "compile" else slam_loss_reference
            return lambda p: ref(p.data["z"], p.data["y"], p.data["alpha"], p.data["k"])
        ref = _compiled(distill_loss_reference) if provider == "compile" else distill_loss_reference
        return lambda p: ref(p.data["z"], p.data["y"])
    if provider == "torch_ce":
        if kernel == "distill":
            return lambda p: F.cross_entropy(p.data["z"], p.data["y"])  # soft targets
        if kernel == "distill_onehot":
            return lambda p: F.cross_entropy(p.data["z"], p.data["labels"])
        raise Unavailable("PyTorch has no SLaM loss")
    if provider == "liger":
        require_liger(problem.data["z"].device)
        return _liger(kernel)
    raise ValueError(f"provider must be one of "
                     f"{PROVIDERS + ('slam_bench_compile', 'slam_bench_unsplit')}, "
                     f"got {provider!r}")


def _reads_labels(provider: str, kernel: str) -> bool:
    return kernel == "distill_onehot" and provider in ("torch_ce", "liger")


def provider_bytes(provider: str, problem: Problem, mode: str) -> int:
    """Bytes `provider` reads and writes through its own interface for one step."""
    n, c = problem.n, problem.c
    bz = DTYPE_BYTES[problem.dtype]
    moved = n * c * bz  # the logits
    if _reads_labels(provider, problem.kernel):
        moved += n * 8  # int64 labels
    else:
        moved += n * c * problem.data["y"].element_size()
    if problem.kernel == "slam":
        moved += n * 4  # alpha
    if mode == "full":
        moved += n * c * bz  # dL/dz, in the logits' dtype
    return moved


def floor_bytes(problem: Problem, mode: str) -> int:
    """The least any provider moves: the cheapest interface's reads, and dL/dz once."""
    cheapest = "torch_ce" if problem.kernel == "distill_onehot" else "slam_bench"
    return provider_bytes(cheapest, problem, mode)


def goal_configs() -> List[Config]:
    """The rows the GPU goals read, in the order the GPU check runs them: bf16 SLaM, forward
    + backward, on chip then streamed; torch.compile only where a goal compares with it; the
    default checks beside check_values=False at C = 32000, N = 4096 and 8192; compile mode of
    this library's loss at C = 32000 (recorded, no goal)."""
    out = [Config("slam", "peaked", "bf16", gpu_n(c), c, ("full",), ("slam_bench", "eager"))
           for c in GOAL_C_ON_CHIP]
    out += [Config("slam", "peaked", "bf16", gpu_n(c), c, ("full",),
                   ("slam_bench", "slam_bench_checked", "slam_bench_compile", "eager", "compile")
                   if c == CHECKED_GOAL_C else ("slam_bench", "eager", "compile"))
            for c in GOAL_C_STREAMED]
    # Split rows beside one program per row, at a few wide rows.
    out += [Config("slam", "peaked", "bf16", n, SPLIT_GOAL_C, ("full",),
                   ("slam_bench", "slam_bench_unsplit")) for n in SPLIT_GOAL_N]
    # The default (fused) checks beside check_values=False over the goal's N range.
    out += [Config("slam", "peaked", "bf16", n, CHECKED_GOAL_C, ("full",),
                   ("slam_bench", "slam_bench_checked"))
            for n in CHECKED_GOAL_N if n != gpu_n(CHECKED_GOAL_C)]
    return out


# The rest of the GPU sweep measures these (torch.compile costs ~20 s a graph: goal rows only).
GPU_SWEEP_PROVIDERS = ("slam_bench", "eager", "torch_ce", "liger")


def gpu_configs() -> List[Config]:
    """The rest of the GPU sweep (docs/kernels.md), most informative first: bf16 before fp32,
    SLaM, then the one-hot comparison with Liger and soft distillation, random teachers,
    forward-only rows, and an N sweep at C = 32000."""
    out = []
    for dtype in ("bf16", "fp32"):
        for kernel in ("slam", "distill_onehot", "distill"):
            for teacher in (("peaked",) if kernel == "distill_onehot" else TEACHERS):
                for c in GPU_C:
                    out.append(Config(kernel, teacher, dtype, gpu_n(c), c,
                                      providers=GPU_SWEEP_PROVIDERS))
    for n in (512, 8192, 32768):
        out.append(Config("slam", "peaked", "bf16", n, 32000, providers=GPU_SWEEP_PROVIDERS))
    return out


# CPU sweeps (slam_bench.profiling.sweep names them): C sweeps at N = 8192; the full one adds
# bf16, random teachers, C = 10,000 and an N sweep at C = 1000. The dry run of the GPU check
# runs the kernels under the interpreter at tiny sizes.
CPU_GRIDS = {
    "cpu-quick": (Grid(kernels=("slam", "distill"), dtypes=("fp32",), teachers=("peaked",),
                       c_values=(10, 100, 1000), n_fixed=8192),),
    "cpu-full": (Grid(kernels=("slam", "distill"), dtypes=("bf16", "fp32"), teachers=TEACHERS,
                      c_values=(10, 100, 1000, 10000), n_fixed=8192,
                      n_values=(1024, 4096, 16384), c_for_n_sweep=1000),),
    "dry-run": (Grid(kernels=("slam", "distill"), dtypes=("bf16",), teachers=("peaked",),
                     c_values=(10, 100), n_fixed=16),
                Grid(kernels=("slam",), dtypes=("bf16",), teachers=("peaked",), c_values=(20,),
                     n_fixed=16, modes=("full",),
                     providers=("slam_bench", "slam_bench_compile", "slam_bench_unsplit"))),
}


def smoke(device) -> None:
    """One forward + backward through the Triton kernels; raises whatever stops them."""
    gen = torch.Generator(device=device).manual_seed(0)
    z = torch.randn(8, 100, device=device, generator=gen).requires_grad_(True)
    y = torch.softmax(torch.randn(8, 100, device=device, generator=gen), dim=1)
    loss = slam_loss(z, y, 0.7, 3, backend="triton")
    loss.backward()
    finite_or_raise(loss, z.grad)


def _register():
    from slam_bench.profiling import loss_checks

    return register_family(KernelFamily(
        name="loss", kernels=KERNELS, providers=PROVIDERS, make_problem=make_problem,
        loss_fn=loss_fn, provider_bytes=provider_bytes, floor_bytes=floor_bytes,
        cpu_grids=CPU_GRIDS, goal_configs=goal_configs, gpu_configs=gpu_configs, smoke=smoke,
        correctness=loss_checks.correctness, gpu_goals=loss_checks.gpu_goals,
        cpu_targets=loss_checks.cpu_targets))


FAMILY = _register()
