"""The plain formulas of docs/method.md section 2, differentiated by autograd.

These are the oracles: tests evaluate them in float64 and compare every backend with them,
and the throughput benchmarks time them as "the eager formula" (and its torch.compile).
They do no argument checking and no numerical tricks on purpose: they are the math as
written, so that a disagreement always points at the fused code.

Shapes: z, y (N, C); alpha a float or (N,); k an int or (N,) integer tensor; weight None or
(N,). Returns the per-row loss (N,) in z's dtype when reduction="none", else a scalar.
"""
from __future__ import annotations

import torch
from torch import Tensor


def topk_mask(y: Tensor, k) -> Tensor:
    """m[i, j] = y[i, j] >= the k[i]-th largest value of row i (ties at the threshold kept)."""
    n, c = y.shape
    k_row = torch.as_tensor(k, device=y.device).expand(n).long() if not isinstance(k, int) else None
    kmax = k if isinstance(k, int) else (int(k_row.max()) if n else 1)
    top = torch.topk(y, kmax, dim=1).values  # (N, kmax), descending
    if isinstance(k, int):
        thresh = top[:, k - 1]
    else:
        thresh = top.gather(1, (k_row - 1).unsqueeze(1)).squeeze(1)
    return y >= thresh.unsqueeze(1)


def mix(f: Tensor, y: Tensor, alpha, k, normalize: bool = False) -> Tensor:
    """q = alpha f + s (1 - alpha) m (1 - f), s = 1 or 1/(k - 1)."""
    n = f.shape[0]
    a = torch.as_tensor(alpha, dtype=f.dtype, device=f.device).expand(n).unsqueeze(1)
    m = topk_mask(y, k).to(f.dtype)
    if normalize:
        s = 1.0 / (torch.as_tensor(k, dtype=f.dtype, device=f.device).expand(n).unsqueeze(1) - 1.0)
    else:
        s = 1.0
    return a * f + s * (1 - a) * m * (1 - f)


def reduce(rows: Tensor, weight, reduction: str) -> Tensor:
    if weight is not None:
        rows = rows * weight.to(rows.dtype)
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    return rows.sum() / max(rows.shape[0], 1)  # mean over N; 0 rows -> 0


def slam_loss_reference(z: Tensor, y: Tensor, alpha, k, *, normalize=False, temperature=1.0,
                        weight=None, reduction="mean") -> Tensor:
    """-sum_j y_j log q_j with q the SLaM mix of softmax(z / T) (terms with y_j = 0 are 0)."""
    f = torch.softmax(z / temperature, dim=1)
    q = mix(f, y, alpha, k, normalize)
    rows = -torch.where(y > 0, y * torch.log(q), torch.zeros_like(q)).sum(dim=1)
    return reduce(rows, weight, reduction)


def distill_loss_reference(z: Tensor, y: Tensor, *, temperature=1.0, weight=None,
                           reduction="mean") -> Tensor:
    """Soft-label cross-entropy -sum_j y_j log softmax(z / T)_j."""
    logf = torch.log_softmax(z / temperature, dim=1)
    rows = -torch.where(y > 0, y * logf, torch.zeros_like(logf)).sum(dim=1)
    return reduce(rows, weight, reduction)
