"""Random sparse top-K teachers, shared by the profiling families, gpu_check and the tests.

A teacher row is what an inference server or an offline cache returns: the K most likely token
ids of a softmax over the full vocabulary and their probabilities, which sum to less than 1
(the rest of the mass is dropped). Kinds:
- "soft":   top-K of softmax(N(0, 2^2) logits): a flat teacher, K ids hold part of the mass;
- "peaked": one id PEAK_LOGIT above the rest: a confident teacher, most mass in the K ids;
- "ties":   a few distinct levels (exact ties, also at the mask threshold, and exact zeros);
- "full":   the K probabilities renormalised to sum to 1 (as when K = V).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from slam_bench.profiling.loss_family import ALPHA_RANGE

TEACHER_KINDS = ("soft", "peaked", "ties", "full")
PEAK_LOGIT = 6.0
# Benchmark problems of the "topk" and "fused_linear" families (recorded in each CSV row).
K_TEACHER = 64   # teacher ids per row (inference servers return up to 20, caches keep 32-128)
K_MIX = 5        # SLaM's top-k mask size (capped at K)
ID_BYTES = 8     # int64 ids


def random_topk_teacher(n: int, v: int, k_ids: int, *, kind: str = "soft",
                        gen: Optional[torch.Generator] = None, device="cpu",
                        n_ignored: int = 0, ignore_index: int = -100, garbage: bool = False):
    """(ids (n, K) int64 distinct per row, probs (n, K) float32, argmax ids (n,) int64).

    The first `n_ignored` rows (of a random permutation) get ids[i, 0] = ignore_index; with
    `garbage` their other ids lie outside [0, V) and their probabilities are NaN, so that code
    which reads an ignored row shows it."""
    if kind not in TEACHER_KINDS:
        raise ValueError(f"kind must be one of {TEACHER_KINDS}, got {kind!r}")
    device = torch.device(device)
    gen = gen if gen is not None else torch.Generator(device=device).manual_seed(0)
    kw = dict(generator=gen, device=device)
    logits = torch.randn(n, v, **kw) * 2.0
    if kind == "peaked" and n:
        logits[torch.arange(n, device=device), torch.randint(0, v, (n,), **kw)] += PEAK_LOGIT
    top = torch.topk(torch.softmax(logits, dim=1), k_ids, dim=1)
    del logits
    ids, probs = top.indices, top.values
    if kind == "ties":
        levels = torch.randint(0, 4, (n, k_ids), **kw).float()
        probs = levels / (levels.sum(dim=1, keepdim=True) + 1.0)  # one division a row: ties stay
    elif kind == "full":
        probs = probs / probs.sum(dim=1, keepdim=True)
    argmax = ids.gather(1, probs.argmax(dim=1, keepdim=True)).squeeze(1)
    if n_ignored:
        rows = torch.randperm(n, **kw)[:n_ignored]
        ids[rows, 0] = ignore_index
        if garbage:
            ids[rows, 1:] = v + 7
            probs[rows] = float("nan")
    return ids, probs, argmax


def teacher_data(n: int, v: int, dtype: torch.dtype, gen: torch.Generator, device, *,
                 k_ids: int = K_TEACHER, kind: str = "peaked") -> Dict[str, object]:
    """The teacher side of a benchmark problem: ids (N, K) int64, probs (N, K) in `dtype`,
    alpha (N,) float32 in the loss family's ALPHA_RANGE, k = min(K_MIX, K) and labels (N,) int64 (the
    teacher's argmax, for label-based peers). K = min(k_ids, V)."""
    k_ids = min(k_ids, v)
    ids, probs, labels = random_topk_teacher(n, v, k_ids, kind=kind, gen=gen, device=device)
    lo, hi = ALPHA_RANGE
    alpha = lo + (hi - lo) * torch.rand(n, generator=gen, device=device)
    return dict(ids=ids, probs=probs.to(dtype), alpha=alpha, k=min(K_MIX, k_ids), labels=labels)


def teacher_params(data: Dict[str, object]) -> str:
    """The CSV's params words of a teacher built by `teacher_data`."""
    lo, hi = ALPHA_RANGE
    return f"K={data['ids'].shape[1]} k={data['k']} alpha={lo}-{hi}"


def teacher_bytes(provider: str, problem) -> int:
    """Bytes of the teacher as `provider` reads it, and of alpha, for a problem of the "topk"
    or "fused_linear" family: N int64 labels for "liger" (no alpha), the scattered (N, V) row
    in the problem's dtype for "dense", the K ids and probabilities otherwise."""
    from slam_bench.profiling.families import DTYPE_BYTES
    n, d = problem.n, problem.data
    if provider == "liger":
        return n * ID_BYTES
    if provider == "dense":
        teacher = n * problem.c * DTYPE_BYTES[problem.dtype]
    else:
        teacher = d["ids"].numel() * ID_BYTES + d["probs"].numel() * d["probs"].element_size()
    return teacher + n * 4  # alpha, float32


def add_dense_teacher(problem) -> None:
    """problem.data["y"]: the K teacher entries scattered into (N, V) rows (zeros elsewhere) in
    the problem's dtype, the input of the "dense" providers (built before timing)."""
    from slam_bench.profiling.families import DTYPES
    from slam_bench.vocab.reference import densify
    d = problem.data
    d["y"] = densify(d["ids"], d["probs"], problem.c, dtype=DTYPES[problem.dtype])[0]
