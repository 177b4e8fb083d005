"""Oracles of the sparse top-K losses: scatter the K teacher probabilities into a dense row
(zeros elsewhere) and apply the plain formula of slam_bench.reference, under autograd.

Tests evaluate these in float64 and compare both backends with them; gpu_check does the same
on a GPU. No argument checking and no tricks, on purpose (see slam_bench/reference.py).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.nn import functional as F

from slam_bench.reference import slam_loss_reference


def densify(ids: Tensor, probs: Tensor, v: int, ignore_index: int = -100, dtype=None):
    """(y (N, V) with each kept row's K probabilities at its ids, keep (N,) bool): the rows
    with ids[i, 0] != ignore_index. Ignored rows are all zeros."""
    n = ids.shape[0]
    dtype = dtype or probs.dtype
    keep = ids[:, 0] != ignore_index
    y = torch.zeros(n, v, dtype=dtype, device=probs.device)
    y[keep] = y[keep].scatter(1, ids[keep].long(), probs[keep].to(dtype))
    return y, keep


def _rows_of(x, keep):
    return x[keep] if isinstance(x, Tensor) else x


def slam_loss_topk_reference(z: Tensor, ids: Tensor, probs: Tensor, alpha, k, *,
                             normalize: bool = False, temperature: float = 1.0,
                             weight: Optional[Tensor] = None, ignore_index: int = -100,
                             reduction: str = "mean") -> Tensor:
    """`slam_loss_reference` on the densified teacher, over the rows not ignored; "mean"
    divides by their number (0 rows: 0), "none" gives 0 for ignored rows. z's dtype."""
    n, v = z.shape
    y, keep = densify(ids, probs, v, ignore_index, z.dtype)
    kept = slam_loss_reference(z[keep], y[keep], _rows_of(alpha, keep), _rows_of(k, keep),
                               normalize=normalize, temperature=temperature, reduction="none")
    rows = z.new_zeros(n).index_put((keep.nonzero().squeeze(1),), kept)
    if weight is not None:
        rows = rows * weight.to(rows.dtype)
    if reduction == "none":
        return rows
    total = rows.sum()
    return total / max(int(keep.sum()), 1) if reduction == "mean" else total


def fused_linear_slam_loss_reference(hidden: Tensor, lm_weight: Tensor, ids: Tensor,
                                     probs: Tensor, alpha, k, *, bias: Optional[Tensor] = None,
                                     **kwargs) -> Tensor:
    """The dense path: logits = hidden @ lm_weight.T + bias, then the top-K reference."""
    return slam_loss_topk_reference(F.linear(hidden, lm_weight, bias), ids, probs, alpha, k,
                                    **kwargs)
