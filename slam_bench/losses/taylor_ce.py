"""Taylor cross-entropy (Feng et al., "Can cross entropy loss be robust to label noise?",
IJCAI 2020): the order-t truncation of the Taylor series of -log p around p = 1,

    -log p = sum_{n>=1} (1 - p)^n / n  ~  sum_{n=1..t} (1 - p)^n / n,

applied to every class with the teacher's soft label as weight:
    loss(row) = sum_j y_j * sum_{n=1..t} (1 - f_j)^n / n,   f = softmax(z / T).

Not "Taylor-softmax" (de Brebisson & Vincent), which replaces exp in the softmax. Order t = 1
is the (bounded, noise-robust) mean absolute error; t -> infinity recovers cross-entropy.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from slam_bench.checks import check_loss_inputs
from slam_bench.losses._common import reduce_rows, work_dtype


def taylor_ce_loss(student_logits: Tensor, teacher_probs: Tensor, *, order: int = 2,
                   temperature: float = 1.0, weight: Optional[Tensor] = None,
                   reduction: str = "mean", check_values: bool = True) -> Tensor:
    """Taylor-CE of order `order` against soft teacher labels.

    Args:
        student_logits: (N, C) float16/bfloat16/float32/float64 logits z.
        teacher_probs: (N, C) teacher soft labels y (rows on the simplex).
        order: t >= 1, the number of series terms.
        temperature: T > 0; f = softmax(z / T).
        weight: None or (N,) non-negative per-row factors.
        reduction: "mean" (weighted row sum / N), "sum" or "none" ((N,) rows).
        check_values: validate tensor contents (synchronises a GPU).
    Returns:
        float32 (float64 for float64 logits) scalar, or (N,) with reduction="none".
    """
    check_loss_inputs(student_logits, teacher_probs, temperature, weight, reduction, check_values)
    if isinstance(order, bool) or not isinstance(order, int):
        raise TypeError(f"order must be an int >= 1, got {type(order).__name__}")
    if order < 1:
        raise ValueError(f"order must be an int >= 1, got {order}")
    wd = work_dtype(student_logits)
    f = torch.softmax(student_logits.to(wd) / temperature, dim=1)
    u = 1 - f
    # Horner form of sum_{n=1..t} u^n / n = u (1 + u (1/2 + u (1/3 + ...))): t multiplies.
    series = torch.full_like(u, 1.0 / order)
    for n in range(order - 1, 0, -1):
        series = series * u + 1.0 / n
    series = series * u
    rows = (teacher_probs.to(wd) * series).sum(dim=1)
    return reduce_rows(rows, weight, reduction)
