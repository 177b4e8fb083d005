"""Forward loss correction (Patrini et al., "Making deep neural networks robust to label
noise: a loss correction approach", CVPR 2017).

With a transition matrix T (C, C), T[i, j] = P(teacher label j | true class i), the student's
clean-label prediction f is pushed through the noise model before the cross-entropy:
    loss(row) = -sum_j y_j log (T^t f)_j,    f = softmax(z / T_temp).
The project estimates T on the validation set (`slam_bench.estimators.fit_transition`).
SLaM is its per-example, top-k restricted relative.

Numerics: (T^t f)_j is computed in float64 (a plain matmul), so it underflows only when every
class that can be relabelled as j has log-probability below about -700; the result is cast to
float32 (float64 logits keep float64). Entries with y_j = 0 contribute exactly 0, also to the
gradient, even where (T^t f)_j = 0.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from slam_bench import checks
from slam_bench.losses._common import reduce_rows, work_dtype

TRANSITION_ATOL = 1e-3  # rows of the transition matrix must sum to 1 within this


def check_transition(transition, c: int, device, check_values: bool) -> None:
    """transition: (C, C) float tensor, non-negative and finite, rows summing to 1."""
    if not isinstance(transition, Tensor):
        raise TypeError(f"transition must be a torch.Tensor, got {type(transition).__name__}")
    if not transition.is_floating_point():
        raise TypeError(f"transition must be a float tensor, got {transition.dtype}")
    if tuple(transition.shape) != (c, c):
        raise ValueError(f"transition must have shape ({c}, {c}), got {tuple(transition.shape)}")
    checks.check_same_device_named("transition", transition, device)
    if check_values:
        checks.check_simplex_rows("transition", transition, TRANSITION_ATOL,
                                  " (row i = P(teacher label | true class i))")


def forward_correction_loss(student_logits: Tensor, teacher_probs: Tensor, transition: Tensor, *,
                            temperature: float = 1.0, weight: Optional[Tensor] = None,
                            reduction: str = "mean", check_values: bool = True) -> Tensor:
    """Forward-corrected soft cross-entropy -sum_j y_j log (T^t softmax(z / temp))_j.

    Args:
        student_logits: (N, C) float16/bfloat16/float32/float64 logits z.
        teacher_probs: (N, C) teacher soft labels y (rows on the simplex).
        transition: (C, C) float row-stochastic matrix, row i = P(teacher label | true class i).
        temperature, weight, reduction, check_values: as in `slam_bench.distill_loss`.
    Returns:
        float32 (float64 for float64 logits) scalar, or (N,) with reduction="none".
    """
    n, c = checks.check_loss_inputs(student_logits, teacher_probs, temperature, weight, reduction,
                                    check_values)
    check_transition(transition, c, student_logits.device, check_values)
    f = torch.softmax(student_logits.double() / temperature, dim=1)
    q = f @ transition.double()  # (N, C): q_j = sum_i f_i T[i, j]
    y = teacher_probs.double()
    pos = y > 0
    # Where y_j = 0 the log is never taken, so a zero q_j there yields neither inf nor NaN grads.
    logq = torch.log(torch.where(pos, q, torch.ones_like(q)))
    rows = -(y * logq).sum(dim=1)
    return reduce_rows(rows.to(work_dtype(student_logits)), weight, reduction)
