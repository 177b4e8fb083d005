"""The vocabulary-scale kernel families of `slam-bench profile`: problems, providers, work.

Families (the "kernel" column of their CSV rows):
- "topk":         `slam_loss_topk` on (N, V) logits and a top-K teacher.
- "fused_linear": `fused_linear_slam_loss` on hidden (N, H), lm_weight (V, H) and the teacher.

Providers:
- "slam_bench": ours.
- "dense":      the dense path: `slam_loss` on the teacher scattered into an (N, V) row
                (built before timing, not counted), after `F.linear` for "fused_linear".
- "unfused":    (fused_linear) `F.linear`, then `slam_loss_topk`: what fusing saves.
- "liger":      (CUDA) Liger-Kernel's cross-entropy (topk) / fused linear cross-entropy
                (fused_linear) on the teacher's argmax: the closest work a peer library does
                (one hard label, no mixing, no K gathered ids).

Work per problem (the floor, spec/kernels.md): "topk" is memory-bound: read the logits once
and, in "full", write their gradient once, plus the K (id, probability, gathered logit)
entries of each row. "fused_linear" never needs the logits in memory, so its byte floor is its
inputs and gradients; it is compute-bound: 2 N V H multiply-adds for the logits, and in "full"
2 more matmuls of that size (d(hidden), d(lm_weight)): `model_flops`. Rows record TFLOP/s
and its fraction of a plain matmul of the same shape measured on the device.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch
from torch import Tensor
from torch.nn import functional as F

from slam_bench import fused_linear_slam_loss, slam_loss, slam_loss_topk
from slam_bench.profiling.providers import ALPHA_RANGE, Unavailable
from slam_bench.profiling.topk_problems import random_topk_teacher
from slam_bench.reference_topk import densify

FAMILIES = ("topk", "fused_linear")
PROVIDERS = {"topk": ("slam_bench", "dense", "liger"),
             "fused_linear": ("slam_bench", "unfused", "dense", "liger")}
MODES = ("fwd", "full")
# Problem hyper-parameters, recorded in every row.
K_TEACHER = 64   # teacher ids per row (inference servers return up to 20, caches keep 32-128)
K_MIX = 5        # SLaM's top-k mask size
TEACHER = "peaked"
ID_BYTES = 8     # int64 ids


@dataclass
class VocabProblem:
    """Inputs of one configuration. ids (N, K) int64, probs (N, K) and z (N, V) or hidden
    (N, H) / lm_weight (V, H) in `dtype`; alpha (N,) fp32; labels (N,) the teacher's argmax."""
    family: str
    ids: Tensor
    probs: Tensor
    alpha: Tensor
    k: int
    labels: Tensor
    z: Optional[Tensor] = None
    hidden: Optional[Tensor] = None
    lm_weight: Optional[Tensor] = None
    backend: str = "auto"
    chunk_size: Optional[int] = None
    _dense: Optional[Tensor] = None

    @property
    def v(self) -> int:
        return self.z.shape[1] if self.z is not None else self.lm_weight.shape[0]

    def leaves(self):
        return (self.z,) if self.family == "topk" else (self.hidden, self.lm_weight)

    def dense_teacher(self) -> Tensor:
        """The teacher scattered into (N, V), in the logits' dtype (built once)."""
        if self._dense is None:
            dtype = self.leaves()[0].dtype
            self._dense = densify(self.ids, self.probs, self.v, dtype=dtype)[0]
        return self._dense


def make_problem(family: str, n: int, v: int, dtype: torch.dtype, device, *, h: int = 64,
                 k_ids: int = K_TEACHER, seed: int = 0, backend: str = "auto",
                 chunk_size: Optional[int] = None) -> VocabProblem:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    kw = dict(generator=gen, device=device)
    k_ids = min(k_ids, v)
    ids, probs, labels = random_topk_teacher(n, v, k_ids, kind=TEACHER, gen=gen, device=device)
    lo, hi = ALPHA_RANGE
    p = VocabProblem(family, ids, probs.to(dtype), lo + (hi - lo) * torch.rand(n, **kw),
                     min(K_MIX, k_ids), labels, backend=backend, chunk_size=chunk_size)
    if family == "topk":
        p.z = (torch.randn(n, v, **kw) * 2.0).to(dtype)
    else:
        p.hidden = torch.randn(n, h, **kw).to(dtype)
        p.lm_weight = (torch.randn(v, h, **kw) * (2.0 / h ** 0.5)).to(dtype)
    return p


def _liger(family: str):
    if importlib.util.find_spec("liger_kernel") is None:
        raise Unavailable("liger-kernel is not installed")
    if family == "topk":
        from liger_kernel.transformers import LigerCrossEntropyLoss
        ce = LigerCrossEntropyLoss(reduction="mean")
        return lambda p: ce(p.z, p.labels)
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    flce = LigerFusedLinearCrossEntropyLoss(reduction="mean")
    return lambda p: flce(p.lm_weight, p.hidden, p.labels)


def _loss_fn(provider: str, p: VocabProblem) -> Callable[[VocabProblem], Tensor]:
    kw = dict(check_values=False, backend=p.backend)
    if provider == "liger":
        if p.ids.device.type != "cuda":
            raise Unavailable("Liger-Kernel needs a CUDA GPU")
        return _liger(p.family)
    if p.family == "topk":
        if provider == "slam_bench":
            return lambda q: slam_loss_topk(q.z, q.ids, q.probs, q.alpha, q.k, **kw)
        if provider == "dense":
            return lambda q: slam_loss(q.z, q.dense_teacher(), q.alpha, q.k, **kw)
    else:
        if provider == "slam_bench":
            return lambda q: fused_linear_slam_loss(q.hidden, q.lm_weight, q.ids, q.probs,
                                                    q.alpha, q.k, chunk_size=q.chunk_size, **kw)
        if provider == "unfused":
            return lambda q: slam_loss_topk(F.linear(q.hidden, q.lm_weight), q.ids, q.probs,
                                            q.alpha, q.k, **kw)
        if provider == "dense":
            return lambda q: slam_loss(F.linear(q.hidden, q.lm_weight), q.dense_teacher(),
                                       q.alpha, q.k, **kw)
    raise ValueError(f"provider must be one of {PROVIDERS[p.family]}, got {provider!r}")


def build(provider: str, problem: VocabProblem, mode: str) -> Callable[[], object]:
    """A zero-argument callable running one step of `mode` ("fwd" or "full")."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    loss_fn = _loss_fn(provider, problem)
    if provider == "liger" and problem.family == "topk":
        # Liger's cross-entropy writes its gradient into the logits: give it its own copy so
        # the providers timed after it still read logits.
        problem = replace(problem, z=problem.z.detach().clone())
    if provider == "dense":
        problem.dense_teacher()  # an input of the dense path: built before any measurement
    leaves = problem.leaves()
    for t in leaves:
        t.requires_grad_(mode == "full")
    if mode == "fwd":
        def fwd():
            with torch.no_grad():
                return loss_fn(problem)
        return fwd

    def full():
        for t in leaves:
            t.grad = None
        loss_fn(problem).backward()
    return full


def model_bytes(family: str, mode: str, n: int, v: int, k_ids: int, h: int,
                dtype_bytes: int) -> int:
    """The byte floor of one step (module docstring)."""
    teacher = n * k_ids * (ID_BYTES + dtype_bytes)
    if family == "topk":
        per_elem = dtype_bytes * (2 if mode == "full" else 1)
        return n * v * per_elem + teacher + n * k_ids * dtype_bytes  # + the gathered logits
    io = (n * h + v * h) * dtype_bytes
    return teacher + (2 * io if mode == "full" else io)


def model_flops(family: str, mode: str, n: int, v: int, h: int) -> int:
    """Matmul flops of one step: 2 N V H for the logits, x3 with both gradients."""
    if family == "topk":
        return 0
    return 2 * n * v * h * (3 if mode == "full" else 1)
