"""The torch backend: SLaM loss and its analytic gradient in one autograd.Function.

Why not autograd on the formula: autograd keeps softmax, mask, mix, log and product
temporaries alive until backward (several N x C buffers) and replays them. Here one pass
over row chunks computes the row losses and dL/dz together (spec/slam.md section 2), keeping
only the gradient, with the weight and the 1/N of "mean" already folded in. Backward is one
multiply by grad_output. Peak extra memory: the saved gradient, the returned gradient and one
chunk's temporaries.

Numerics (the Triton kernel does the same):
- Entries outside the top-k mask, and every entry when alpha = 1, have q_j = alpha f_j, so
  log q_j = log alpha + log_softmax(z)_j stays finite even where f_j underflows to 0.
- Inside the mask with b = s (1 - alpha) > 0, q_j = c_j f_j + b with c_j = alpha - b, which is
  at least min(alpha, b) > 0.
- The gradient is written with r_j = f_j g_j = -y_j c_j f_j / q_j, which is exactly -y_j
  outside the mask (no 0/0), so dz_j = (r_j - f_j sum_i r_i) / T.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from slam_bench.reference import topk_mask

# Row chunks of about this many elements keep temporaries cache-sized and bounded.
CHUNK_ELEMENTS = 1 << 18


def _work_dtype(z: Tensor) -> torch.dtype:
    return torch.float64 if z.dtype == torch.float64 else torch.float32


def _chunk_rows_and_grad(z: Tensor, y: Tensor, a: Tensor, k, s: Tensor, inv_t: float,
                         mixing: bool, want_grad: bool):
    """One chunk: z, y (n, C); a, s (n, 1) in the work dtype. Returns rows (n,), dz or None."""
    wd = a.dtype
    logf = torch.log_softmax(z.to(wd) * inv_t, dim=1)
    f = logf.exp()
    yv = y.to(wd)
    pos = yv > 0
    if mixing:
        b = s * (1 - a)  # (n, 1): the floor s (1 - alpha) of a masked entry
        mixed = topk_mask(yv, k) & (b > 0)
        c = torch.where(mixed, a - b, a)
        cf = c * f
        q_mixed = cf + b
        logq = torch.where(mixed, torch.log(q_mixed), torch.log(a) + logf)
    else:
        mixed = None
        logq = logf
    rows = -torch.where(pos, yv * logq, 0.0).sum(dim=1)
    if not want_grad:
        return rows, None
    r = -yv
    if mixed is not None:
        r = torch.where(mixed, -yv * cf / q_mixed, r)
    dz = (r - f * r.sum(dim=1, keepdim=True)) * inv_t
    return rows, dz


class _SLaMFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, y, alpha, k, s, weight, temperature, reduction, mixing):
        n, c = z.shape
        wd = _work_dtype(z)
        want_grad = ctx.needs_input_grad[0]
        rows = torch.empty(n, dtype=wd, device=z.device)
        grad = torch.empty((n, c), dtype=wd, device=z.device) if want_grad else None
        step = max(1, CHUNK_ELEMENTS // c)
        inv_t = 1.0 / temperature
        for i in range(0, n, step):
            j = min(i + step, n)
            k_i = k if isinstance(k, int) else k[i:j]
            rows[i:j], dz = _chunk_rows_and_grad(
                z[i:j], y[i:j], alpha[i:j, None], k_i, s[i:j, None], inv_t, mixing, want_grad)
            if want_grad:
                grad[i:j] = dz
        # Fold the per-row factor of the reduction into the saved gradient.
        scale = weight.to(wd) if weight is not None else None
        if reduction == "mean" and n:
            scale = (scale if scale is not None else torch.ones(n, dtype=wd, device=z.device)) / n
        if want_grad:
            if scale is not None:
                grad.mul_(scale[:, None])
            ctx.save_for_backward(grad)
            ctx.z_dtype = z.dtype
        ctx.reduction = reduction
        out = rows if weight is None else rows * weight.to(wd)
        if reduction == "none":
            return out
        total = out.sum()
        return total / n if (reduction == "mean" and n) else total

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        g = grad_out.to(grad.dtype)
        g = g[:, None] if ctx.reduction == "none" else g
        dz = (grad * g).to(ctx.z_dtype)
        return dz, None, None, None, None, None, None, None, None


def slam_loss_torch(z: Tensor, y: Tensor, alpha: Union[float, Tensor], k: Union[int, Tensor], *,
                    normalize: bool, temperature: float, weight: Optional[Tensor],
                    reduction: str, mixing: bool = True) -> Tensor:
    """Checked inputs (see slam_bench.functional). z, y (N, C); returns float32/float64."""
    n = z.shape[0]
    wd = _work_dtype(z)
    a = torch.as_tensor(alpha, dtype=wd, device=z.device).expand(n).contiguous()
    if normalize:
        s = 1.0 / (torch.as_tensor(k, dtype=wd, device=z.device).expand(n) - 1.0)
    else:
        s = torch.ones(n, dtype=wd, device=z.device)
    return _SLaMFunction.apply(z, y, a, k, s, weight, float(temperature), reduction, mixing)
