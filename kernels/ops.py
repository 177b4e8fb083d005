"""`slam_loss_triton`: the Triton kernels as `torch.library` custom ops with autograd.

Ops: `slam_bench::slam_fwd` (per-row loss and saved statistics), `slam_bench::slam_bwd`
(dL/dz) and `slam_bench::topk_threshold` (the mask threshold pre-step), each with a fake
implementation, and an autograd formula linking the first two, so that torch.compile traces a
model using the loss without graph breaks (the ops are opaque nodes in its graph).

Everything outside the ops is plain, sync-free torch on (N,) vectors: broadcasting scalar
parameters (stride-0 views, no N-sized copies), the top-k threshold pre-step, the weights and
the reduction. The weights and the reduction therefore reach the backward kernel through the
per-row upstream gradient that autograd computes, which the kernel reads on device.

Top-k threshold (the k-th largest teacher value of each row, ties included by `y >= thresh`;
exact, since y's dtype upcasts exactly to fp32), a small sync-free pre-step:
- scalar k = 1 or k = C: a row max / min.
- scalar k <= TOPK_MAX_K: `torch.topk(y, k).values.amin(1)` (N x k temporaries).
- larger scalar k, and a per-row k tensor: the bisection kernel of kernels/threshold.py, its own
  custom op, allocating only the (N,) result. (`torch.topk` with a per-row k would need max(k)
  on the host, a sync; `torch.sort` + gather would allocate N x C values and int64 indices.)
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from .slam_triton import slam_backward, slam_forward
from .threshold import topk_threshold_bisect

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Scalar k up to this uses torch.topk, whose N x k temporaries stay small; larger k uses the
# bisection kernel, whose cost (31 counting passes) does not depend on k.
TOPK_MAX_K = 64


@torch.library.custom_op("slam_bench::topk_threshold", mutates_args=())
def topk_threshold_op(y: Tensor, k: Tensor) -> Tensor:
    """(N,) fp32 k-th largest value per row; see threshold.topk_threshold_bisect."""
    return topk_threshold_bisect(y, k)


@topk_threshold_op.register_fake
def _topk_threshold_fake(y, k):
    return y.new_empty(y.shape[0], dtype=torch.float32)


@torch.library.custom_op("slam_bench::slam_fwd", mutates_args=())
def slam_fwd(z: Tensor, y: Tensor, alpha: Tensor, s: Tensor, thresh: Tensor, inv_t: float,
             mixing: bool, taylor_order: int) -> Tuple[Tensor, Tensor]:
    """Per-row loss (N,) and statistics (3, N), fp32; see slam_triton.slam_forward."""
    return slam_forward(z, y, alpha, s, thresh, inv_t, mixing, taylor_order)


@slam_fwd.register_fake
def _slam_fwd_fake(z, y, alpha, s, thresh, inv_t, mixing, taylor_order):
    n = z.shape[0]
    return z.new_empty(n, dtype=torch.float32), z.new_empty((3, n), dtype=torch.float32)


@torch.library.custom_op("slam_bench::slam_bwd", mutates_args=())
def slam_bwd(grad_rows: Tensor, z: Tensor, y: Tensor, alpha: Tensor, s: Tensor, thresh: Tensor,
             stats: Tensor, inv_t: float, mixing: bool, taylor_order: int) -> Tensor:
    """dL/dz (N, C) contiguous in z's dtype; see slam_triton.slam_backward."""
    return slam_backward(grad_rows, z, y, alpha, s, thresh, stats, inv_t, mixing, taylor_order)


@slam_bwd.register_fake
def _slam_bwd_fake(grad_rows, z, y, alpha, s, thresh, stats, inv_t, mixing, taylor_order):
    return z.new_empty(z.shape, dtype=z.dtype)


def _setup_context(ctx, inputs, output):
    z, y, alpha, s, thresh, inv_t, mixing, taylor_order = inputs
    _, stats = output
    ctx.save_for_backward(z, y, alpha, s, thresh, stats)
    ctx.inv_t, ctx.mixing, ctx.taylor_order = inv_t, mixing, taylor_order
    ctx.mark_non_differentiable(stats)


def _backward(ctx, grad_rows, _grad_stats):
    z, y, alpha, s, thresh, stats = ctx.saved_tensors
    dz = None
    if ctx.needs_input_grad[0] and grad_rows is not None:
        dz = slam_bwd(grad_rows, z, y, alpha, s, thresh, stats, ctx.inv_t, ctx.mixing,
                      ctx.taylor_order)
    return dz, None, None, None, None, None, None, None


slam_fwd.register_autograd(_backward, setup_context=_setup_context)


def _row_vector(x: Union[float, int, Tensor], n: int, device) -> Tensor:
    """(N,) fp32: a tensor converted, a scalar as a stride-0 view of one filled element."""
    if isinstance(x, Tensor):
        return x.to(dtype=torch.float32)
    return torch.full((1,), float(x), dtype=torch.float32, device=device).expand(n)


def topk_threshold(y: Tensor, k: Union[int, Tensor]) -> Tensor:
    """(N,) fp32: the k-th largest value of each row of y (N, C), non-negative
    fp16/bf16/fp32; k an int or (N,) integer tensor in [1, C] (unchecked here)."""
    n, c = y.shape
    if isinstance(k, Tensor):
        return topk_threshold_op(_unit_column_stride(y), k.to(device=y.device, dtype=torch.int32))
    if k == 1:
        return y.amax(dim=1).float()
    if k == c:
        return y.amin(dim=1).float()
    if k <= TOPK_MAX_K:
        return torch.topk(y, k, dim=1, sorted=False).values.amin(dim=1).float()
    k_rows = torch.full((1,), k, dtype=torch.int32, device=y.device).expand(n)
    return topk_threshold_op(_unit_column_stride(y), k_rows)


def _unit_column_stride(t: Tensor) -> Tensor:
    # The kernels honour any row stride (views into larger buffers are read in place) but
    # index columns densely; anything else is copied rather than misread.
    return t if t.stride(1) == 1 else t.contiguous()


def slam_loss_triton(z: Tensor, y: Tensor, alpha: Union[float, Tensor], k: Union[int, Tensor], *,
                     normalize: bool, temperature: float, weight: Optional[Tensor],
                     reduction: str, mixing: bool = True) -> Tensor:
    """SLaM (mixing=True) or vanilla distillation (mixing=False: alpha = 1, k ignored) loss.

    Inputs are validated by slam_bench.functional. z: (N, C) float16/bfloat16/float32 logits
    (float64 is rejected: the kernels compute in fp32, which would silently break the float64
    result promised by the torch backend; use backend="torch"). y: (N, C) teacher probabilities,
    float16/bfloat16/float32 (float64 is cast to float32, as the torch backend does). alpha a
    float or (N,) float tensor; k an int or (N,) integer tensor; weight None or (N,).
    Returns float32: (N,) for reduction="none", else a scalar ("mean" = weighted sum / N, and
    0.0 when N = 0). Gradients flow to z only.
    """
    z, y = _prepare(z, y)
    n = z.shape[0]
    # A scalar alpha of 1 is vanilla distillation exactly (b = 0 everywhere): skip the top-k.
    if mixing and not isinstance(alpha, Tensor) and float(alpha) == 1.0:
        mixing = False
    if mixing:
        a = _row_vector(alpha, n, z.device)
        if not normalize:
            s = _row_vector(1.0, n, z.device)
        elif isinstance(k, Tensor):
            s = 1.0 / (k.to(device=z.device, dtype=torch.float32) - 1.0)
        else:
            s = _row_vector(1.0 / (k - 1), n, z.device)
        thresh = topk_threshold(y, k)
    else:
        a = s = thresh = _row_vector(1.0, n, z.device)  # unread by the MIXING=False kernels
    rows, _ = slam_fwd(z, y, a, s, thresh, 1.0 / float(temperature), bool(mixing), 0)
    return _reduce(rows, weight, reduction)


# Taylor-CE's series is unrolled at compile time; orders past this gain nothing (the terms
# (1 - f)^n / n vanish) and only lengthen compilation.
MAX_TAYLOR_ORDER = 16


def taylor_ce_triton(z: Tensor, y: Tensor, order: int = 2, *, temperature: float = 1.0,
                     weight: Optional[Tensor] = None, reduction: str = "mean") -> Tensor:
    """Taylor-CE (Feng et al., IJCAI 2020): sum_j y_j sum_{n=1..order} (1 - f_j)^n / n with
    f = softmax(z / T), from the same kernels (TAYLOR = order). z, y, weight, reduction and
    the result as in `slam_loss_triton`; callers validate y's values (slam_bench.checks)."""
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= MAX_TAYLOR_ORDER:
        raise ValueError(f"order must be an int in [1, {MAX_TAYLOR_ORDER}], got {order!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not temperature > 0:
        raise ValueError(f"temperature must be a positive float, got {temperature!r}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none'; got {reduction!r}")
    for name, t in (("student_logits", z), ("teacher_probs", y)):
        if not isinstance(t, Tensor) or t.dim() != 2:
            raise ValueError(f"{name} must be an (N, C) tensor")
    if z.shape != y.shape:
        raise ValueError(f"teacher_probs must have the shape of student_logits "
                         f"{tuple(z.shape)}, got {tuple(y.shape)}")
    if weight is not None and (not isinstance(weight, Tensor) or weight.shape != (z.shape[0],)):
        raise ValueError(f"weight must be None or a tensor of shape ({z.shape[0]},)")
    z, y = _prepare(z, y)
    one = _row_vector(1.0, z.shape[0], z.device)
    rows, _ = slam_fwd(z, y, one, one, one, 1.0 / float(temperature), False, order)
    return _reduce(rows, weight, reduction)


def _prepare(z: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]:
    if z.dtype not in KERNEL_DTYPES:
        raise TypeError(f"student_logits must be float16/bfloat16/float32 for backend='triton' "
                        f"(the kernel computes in fp32), got {z.dtype}; use backend='torch'")
    if y.dtype == torch.float64:
        y = y.float()
    elif y.dtype not in KERNEL_DTYPES:
        raise TypeError(
            f"teacher_probs must be a float16/bfloat16/float32/float64 tensor, got {y.dtype}")
    return _unit_column_stride(z), _unit_column_stride(y)


def _reduce(rows: Tensor, weight: Optional[Tensor], reduction: str) -> Tensor:
    if weight is not None:
        rows = rows * weight.to(torch.float32)
    if reduction == "none":
        return rows
    total = rows.sum()
    return total / max(rows.shape[0], 1) if reduction == "mean" else total
