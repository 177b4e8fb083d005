"""Input checks and reductions shared by the baseline losses.

Every baseline follows the conventions of `slam_bench.functional`: the math runs in float32
(float64 for float64 logits), the result is float32/float64, "mean" is the weighted row sum
divided by N (0.0 when N = 0), "sum" is the weighted row sum and "none" the (N,) rows.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from slam_bench import checks


def work_dtype(z: Tensor) -> torch.dtype:
    return torch.float64 if z.dtype == torch.float64 else torch.float32


def check_logits(student_logits, check_values: bool) -> tuple[int, int]:
    """student_logits: (N, C) float tensor, C >= 2. Returns (N, C)."""
    if not isinstance(student_logits, Tensor):
        raise TypeError(f"student_logits must be a torch.Tensor, got {type(student_logits).__name__}")
    if student_logits.dtype not in checks.FLOAT_DTYPES:
        raise TypeError("student_logits must be a float16/bfloat16/float32/float64 tensor, "
                        f"got {student_logits.dtype}")
    if student_logits.dim() != 2:
        raise ValueError(f"student_logits must have shape (N, C), got {tuple(student_logits.shape)}")
    if student_logits.shape[1] < 2:
        raise ValueError(f"student_logits must have C >= 2 classes, got C = {student_logits.shape[1]}")
    if check_values and student_logits.numel() and not bool(torch.isfinite(student_logits).all()):
        raise checks.finite_error("student_logits")
    return tuple(student_logits.shape)


def check_probs(name: str, probs, check_values: bool) -> tuple[int, int]:
    """probs: (N, C) float tensor, C >= 2, rows on the simplex (checks.SIMPLEX_ATOL)."""
    if not isinstance(probs, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(probs).__name__}")
    if probs.dtype not in checks.FLOAT_DTYPES:
        raise TypeError(f"{name} must be a float16/bfloat16/float32/float64 tensor, got {probs.dtype}")
    if probs.dim() != 2 or probs.shape[1] < 2:
        raise ValueError(f"{name} must have shape (N, C) with C >= 2, got {tuple(probs.shape)}")
    if check_values and probs.numel():
        checks.check_simplex_rows(name, probs, checks.SIMPLEX_ATOL[probs.dtype])
    return tuple(probs.shape)


def reduce_rows(rows: Tensor, weight: Optional[Tensor], reduction: str) -> Tensor:
    """rows: (N,) per-row losses in the work dtype; applies weight and the reduction."""
    if weight is not None:
        rows = rows * weight.to(rows.dtype)
    if reduction == "none":
        return rows
    total = rows.sum()
    if reduction == "sum":
        return total
    return total / max(rows.shape[0], 1)
