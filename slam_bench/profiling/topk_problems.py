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

from typing import Optional

import torch

TEACHER_KINDS = ("soft", "peaked", "ties", "full")
PEAK_LOGIT = 6.0


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
