"""Benchmark problems and the providers that compute them.

A *kernel* is the loss being measured: "slam" (per-row alpha, top-k mixing), "distill" (the
alpha = 1 soft-label cross-entropy) and "distill_onehot" (distill with one-hot teacher rows,
the case where hard-label cross-entropy kernels such as Liger's compute the same math).
A *provider* is one implementation of a kernel. `build` returns a zero-argument callable that
runs one forward (mode "fwd") or forward + backward (mode "full"), or raises `Unavailable`
with the reason, which the sweep records.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from slam_bench import distill_loss, slam_loss
from slam_bench.reference import distill_loss_reference, slam_loss_reference

KERNELS = ("slam", "distill", "distill_onehot")
PROVIDERS = ("slam_bench", "eager", "compile", "torch_ce", "liger")
MODES = ("fwd", "full")
TEACHERS = ("peaked", "random")

# Problem hyper-parameters, recorded in every CSV row (spec/kernels.md leaves them open).
K_TOP = 5                  # teacher top-k size of the "slam" kernel (capped at C)
ALPHA_RANGE = (0.6, 1.0)   # per-row alpha drawn uniformly from this range
PEAK_LOGIT = 6.0           # "peaked" teacher: this logit bonus on one class (top prob ~0.9 at C=1000)
LOGIT_SCALE = 2.0          # student logits ~ N(0, LOGIT_SCALE^2)


class Unavailable(Exception):
    """The provider cannot run this kernel here; the message says why."""


@dataclass
class Problem:
    """Inputs of one benchmark configuration. z, y (N, C) in `dtype`; alpha (N,) float32;
    labels (N,) int64 (the teacher's argmax)."""
    kernel: str
    z: Tensor
    y: Tensor
    alpha: Tensor
    k: int
    labels: Tensor
    backend: str = "auto"  # what the "slam_bench" provider asks for ("triton" in dry runs)


def make_problem(kernel: str, n: int, c: int, dtype: torch.dtype, device, teacher: str,
                 seed: int = 0, backend: str = "auto") -> Problem:
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if teacher not in TEACHERS:
        raise ValueError(f"teacher must be one of {TEACHERS}, got {teacher!r}")
    device = torch.device(device)
    # Drawn on the device itself: GPU sweeps reach 10^9 elements, slow to draw on a CPU.
    gen = torch.Generator(device=device).manual_seed(seed)
    kw = dict(generator=gen, device=device)
    z = (torch.randn(n, c, **kw) * LOGIT_SCALE).to(dtype)
    t_logits = torch.randn(n, c, **kw)
    labels = torch.randint(0, c, (n,), **kw)
    if teacher == "peaked":
        t_logits[torch.arange(n, device=device), labels] += PEAK_LOGIT
    labels = t_logits.argmax(dim=1)
    if kernel == "distill_onehot":
        del t_logits
        y = torch.zeros(n, c, dtype=dtype, device=device).scatter_(1, labels[:, None], 1.0)
    else:
        y = torch.softmax(t_logits, dim=1)
        del t_logits
        y = y.to(dtype)
    lo, hi = ALPHA_RANGE
    alpha = lo + (hi - lo) * torch.rand(n, **kw)
    return Problem(kernel, z, y, alpha, min(K_TOP, c), labels, backend)


_COMPILED: dict = {}


def _compiled(fn):
    # One compiled function per formula, shared by every configuration: dynamic shapes, so a
    # new N or C reuses the graph instead of paying another compile.
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, dynamic=True)
    return _COMPILED[fn]


def _liger(kernel: str):
    if importlib.util.find_spec("liger_kernel") is None:
        raise Unavailable("liger-kernel is not installed")
    from liger_kernel.transformers import LigerCrossEntropyLoss, LigerKLDIVLoss
    if kernel == "distill_onehot":
        ce = LigerCrossEntropyLoss(reduction="mean")
        return lambda p: ce(p.z, p.labels)
    if kernel == "distill":
        # Liger's soft-target loss is KL(y || f) on log-probabilities: the same gradient as the
        # soft cross-entropy (the value differs by the teacher's entropy); log_softmax is eager.
        kl = LigerKLDIVLoss(reduction="batchmean")
        return lambda p: kl(torch.log_softmax(p.z, dim=1), p.y)
    raise Unavailable("Liger has no SLaM loss")


def _loss_fn(provider: str, kernel: str, device: torch.device) -> Callable[[Problem], Tensor]:
    """The loss of `kernel` as computed by `provider`, as a function of the problem."""
    if provider == "slam_bench":
        if kernel == "slam":
            return lambda p: slam_loss(p.z, p.y, p.alpha, p.k, check_values=False,
                                       backend=p.backend)
        return lambda p: distill_loss(p.z, p.y, check_values=False, backend=p.backend)
    if provider in ("eager", "compile"):
        if kernel == "slam":
            ref = slam_loss_reference
            if provider == "compile":
                ref = _compiled(slam_loss_reference)
            return lambda p: ref(p.z, p.y, p.alpha, p.k)
        ref = _compiled(distill_loss_reference) if provider == "compile" else distill_loss_reference
        return lambda p: ref(p.z, p.y)
    if provider == "torch_ce":
        if kernel == "distill":
            return lambda p: F.cross_entropy(p.z, p.y)  # soft-target cross-entropy
        if kernel == "distill_onehot":
            return lambda p: F.cross_entropy(p.z, p.labels)
        raise Unavailable("PyTorch has no SLaM loss")
    if provider == "liger":
        if device.type != "cuda":
            raise Unavailable("Liger-Kernel needs a CUDA GPU")
        return _liger(kernel)
    raise ValueError(f"provider must be one of {PROVIDERS}, got {provider!r}")


def build(provider: str, problem: Problem, mode: str) -> Callable[[], Optional[Tensor]]:
    """A zero-argument callable running one step of `mode` ("fwd" or "full")."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    loss_fn = _loss_fn(provider, problem.kernel, problem.z.device)
    z = problem.z
    if mode == "fwd":
        z.requires_grad_(False)

        def fwd():
            with torch.no_grad():
                return loss_fn(problem)
        return fwd
    z.requires_grad_(True)

    def full():
        z.grad = None  # every provider starts from no .grad: no accumulation pass
        loss_fn(problem).backward()
    return full
