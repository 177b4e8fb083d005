"""`slam_loss_triton`: the Triton kernels as `torch.library` custom ops, and their autograd.

Ops (each with a fake implementation, so torch.compile traces them as opaque nodes):
- `slam_bench::slam_rows`: per-row losses only (forward-only calls, e.g. evaluation).
- `slam_bench::slam_rows_grad`: per-row losses and dL/dz (new buffer), from one kernel.
- `slam_bench::slam_rows_grad_into_logits`: the same, dL/dz written into the logits' storage.
- `slam_bench::scale_grad_` (in place, skipped on the device where grad_output == 1) and
  `slam_bench::scale_grad` (functional, used while torch.compile traces the backward).

`_SLaMFunction` links them: its forward computes the gradient with the weights, the
reduction's 1/N and 1/T already folded in, and its backward only applies grad_output. That
works because the gradient is computed for the reduced loss (the output of this function),
whose upstream gradient is 1 in the common `loss.backward()`. Everything outside the kernels
is sync-free torch on (N,) vectors: scalar parameters are stride-0 views, never N-sized copies.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from .slam_triton import scale_launch, slam_launch

KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# Each loss op takes an optional `stats` (N, 3) fp32 buffer: given, the kernel writes every
# row's value-check numbers into it from the loads the loss makes anyway (slam_launch), so the
# default checks cost no pass of their own; None (check_values=False) writes nothing.
@torch.library.custom_op("slam_bench::slam_rows", mutates_args=("stats",))
def slam_rows(z: Tensor, y: Tensor, alpha: Tensor, s: Tensor, k: Tensor, inv_t: float,
              mixing: bool, taylor_order: int, k_hint: int,
              stats: Optional[Tensor] = None) -> Tensor:
    """(N,) fp32 per-row losses, no gradient; see slam_triton.slam_launch."""
    return slam_launch(z, y, alpha, s, k, alpha, inv_t, mixing, taylor_order, k_hint, None,
                       stats)


@slam_rows.register_fake
def _slam_rows_fake(z, y, alpha, s, k, inv_t, mixing, taylor_order, k_hint, stats=None):
    return z.new_empty(z.shape[0], dtype=torch.float32)


@torch.library.custom_op("slam_bench::slam_rows_grad", mutates_args=("stats",))
def slam_rows_grad(z: Tensor, y: Tensor, alpha: Tensor, s: Tensor, k: Tensor, gscale: Tensor,
                   inv_t: float, mixing: bool, taylor_order: int, k_hint: int,
                   stats: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """(N,) fp32 per-row losses and dL/dz (N, C) in z's dtype, row i scaled by gscale[i] / T."""
    dz = torch.empty(z.shape, dtype=z.dtype, device=z.device)
    rows = slam_launch(z, y, alpha, s, k, gscale, inv_t, mixing, taylor_order, k_hint, dz,
                       stats)
    return rows, dz


@slam_rows_grad.register_fake
def _slam_rows_grad_fake(z, y, alpha, s, k, gscale, inv_t, mixing, taylor_order, k_hint,
                         stats=None):
    return z.new_empty(z.shape[0], dtype=torch.float32), z.new_empty(z.shape)


@torch.library.custom_op("slam_bench::slam_rows_grad_into_logits", mutates_args=("z", "stats"))
def slam_rows_grad_into_logits(z: Tensor, y: Tensor, alpha: Tensor, s: Tensor, k: Tensor,
                               gscale: Tensor, inv_t: float, mixing: bool, taylor_order: int,
                               k_hint: int, stats: Optional[Tensor] = None) -> Tensor:
    """As slam_rows_grad, with dL/dz written over z (each row is read before it is written)."""
    return slam_launch(z, y, alpha, s, k, gscale, inv_t, mixing, taylor_order, k_hint, z,
                       stats)


@slam_rows_grad_into_logits.register_fake
def _slam_rows_grad_into_logits_fake(z, y, alpha, s, k, gscale, inv_t, mixing, taylor_order,
                                     k_hint, stats=None):
    return z.new_empty(z.shape[0], dtype=torch.float32)


@torch.library.custom_op("slam_bench::scale_grad_", mutates_args=("dz",))
def scale_grad_(dz: Tensor, go: Tensor) -> None:
    """dz *= go (a 0-dim or (N,) tensor) in place; row tiles where go == 1 are not touched."""
    scale_launch(dz, go)


@scale_grad_.register_fake
def _scale_grad__fake(dz, go):
    return None


@torch.library.custom_op("slam_bench::scale_grad", mutates_args=())
def scale_grad(dz: Tensor, go: Tensor) -> Tensor:
    """dz * go as a new tensor (0-dim or (N,) go)."""
    out = torch.empty_like(dz, memory_format=torch.contiguous_format)
    scale_launch(dz, go, out)
    return out


@scale_grad.register_fake
def _scale_grad_fake(dz, go):
    return torch.empty_like(dz, memory_format=torch.contiguous_format)


class _SLaMFunction(torch.autograd.Function):
    """Forward: the loss and its gradient in one kernel. Backward: grad_output applied to the
    saved gradient, in place (eager; autograd then adopts the buffer as .grad without a copy)
    or into a new buffer (while torch.compile traces: a compiled graph may be replayed)."""

    @staticmethod
    def forward(ctx, z, y, alpha, s, k, weight, inv_t, mixing, taylor_order, k_hint, reduction,
                into_logits, stats):
        gscale = _grad_scale(weight, reduction, z.shape[0], z.device)
        args = (y, alpha, s, k, gscale, inv_t, mixing, taylor_order, k_hint, stats)
        if into_logits:
            rows = slam_rows_grad_into_logits(z, *args)
            dz = z
        else:
            rows, dz = slam_rows_grad(z, *args)
        ctx.save_for_backward(dz)
        return _reduce(rows, weight, reduction)

    @staticmethod
    def backward(ctx, grad_out):
        refuse_create_graph("the fused SLaM loss (backend='triton')")
        try:
            (dz,) = ctx.saved_tensors
        except RuntimeError as e:  # autograd's version check on the saved gradient
            raise RuntimeError(
                "the fused (backend='triton') SLaM loss computes its gradient in the forward "
                "and scales it in place in the first backward: a second backward through the "
                "same loss (retain_graph=True) is not supported, nor, with "
                "overwrite_logits=True, changing the logits before the backward; recompute "
                "the loss, or use backend='torch'") from e
        if torch.compiler.is_compiling():
            return (scale_grad(dz, grad_out),) + (None,) * 12
        scale_grad_(dz, grad_out)  # bumps dz's version: a second backward is refused above
        return (dz,) + (None,) * 12


def refuse_create_graph(loss: str) -> None:
    """Call first in a backward whose gradient was computed by a kernel: with create_graph=True
    (grad mode on in backward) that gradient has no graph, so a second-order term built on it
    would be silently wrong. (slam_bench.torch_backend has the same guard; kernels/ imports
    nothing from slam_bench.)"""
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"{loss}: second-order gradients (create_graph=True, double backward) are not "
            f"supported: the kernels compute the first-order gradient only. Use the plain "
            f"PyTorch formula (slam_bench.reference) for higher-order terms.")


def _grad_scale(weight: Optional[Tensor], reduction: str, n: int, device) -> Tensor:
    """(N,) fp32: the factor the reduction puts on each row's gradient (weight, 1/N)."""
    inv_n = 1.0 / n if (reduction == "mean" and n) else 1.0
    if weight is None:
        return torch.full((1,), inv_n, dtype=torch.float32, device=device).expand(n)
    return weight.to(torch.float32) * inv_n


def _reduce(rows: Tensor, weight: Optional[Tensor], reduction: str) -> Tensor:
    # The public reduction (slam_bench.losses._common.reduce_rows); kernels/ imports nothing
    # from slam_bench, so it is restated here.
    if weight is not None:
        rows = rows * weight.to(torch.float32)
    if reduction == "none":
        return rows
    total = rows.sum()
    return total / max(rows.shape[0], 1) if reduction == "mean" else total


def _distinct(first: Tensor, *rest: Optional[Tensor]):
    """`rest`, with any tensor already seen (e.g. weight passed as alpha too) replaced by a view
    of itself: torch.compile cannot trace one tensor given to two inputs of a Function.
    (Compared with `is`, not id(): Dynamo guards an id() on the tensor object itself, so every
    new batch's tensors would compile the step again. slam_bench.torch_backend.distinct does
    the same for the torch backend; kernels/ imports nothing from slam_bench.)"""
    seen = [first]
    out = []
    for t in rest:
        if t is not None and any(t is u for u in seen):
            t = t.view_as(t)
        if t is not None:
            seen.append(t)
        out.append(t)
    return out


def _row_vector(x: Union[float, int, Tensor], n: int, device, dtype=torch.float32) -> Tensor:
    """(N,): a tensor converted, a scalar as a stride-0 view of one filled element."""
    if isinstance(x, Tensor):
        return x.to(device=device, dtype=dtype)
    return torch.full((1,), x, dtype=dtype, device=device).expand(n)


def _unit_column_stride(t: Tensor) -> Tensor:
    # The kernels honour any row stride (views into larger buffers are read in place) but
    # index columns densely; anything else is copied rather than misread.
    return t if t.stride(1) == 1 else t.contiguous()


def _loss(z: Tensor, y: Tensor, alpha, s, k, weight, inv_t: float, mixing: bool,
          taylor_order: int, k_hint: int, reduction: str, overwrite_logits: bool,
          stats: Optional[Tensor] = None) -> Tensor:
    if torch.is_grad_enabled() and z.requires_grad:
        y, alpha, s, k, weight = _distinct(z, y, alpha, s, k, weight)
        return _SLaMFunction.apply(z, y, alpha, s, k, weight, inv_t, mixing, taylor_order,
                                   k_hint, reduction, overwrite_logits, stats)
    rows = slam_rows(z, y, alpha, s, k, inv_t, mixing, taylor_order, k_hint, stats)
    return _reduce(rows, weight, reduction)


def _stats_buffer(z: Tensor, value_stats: bool) -> Optional[Tensor]:
    """The (N, 3) per-row value-check buffer the loss kernel fills, or None."""
    if not value_stats or z.shape[0] == 0:
        return None
    return torch.empty((z.shape[0], 3), dtype=torch.float32, device=z.device)


def combine_row_stats(stats: Tensor) -> Tensor:
    """(4,) float64 on the device, in slam_bench.checks.value_stats' order, from the kernel's
    per-row numbers (N, 3) [min y, sum y, sum z * 0]: [min of y, max over rows |sum y - 1|,
    the logits' finiteness twice (0 when all finite, else NaN)]. Reads only the O(N) stats;
    torch's amin/amax propagate NaN. The caller reads it with one device-to-host copy."""
    znf = stats[:, 2].sum()
    return torch.stack([stats[:, 0].amin(), (stats[:, 1] - 1).abs().amax(), znf, znf]).double()


def slam_loss_triton(z: Tensor, y: Tensor, alpha: Union[float, Tensor], k: Union[int, Tensor], *,
                     normalize: bool, temperature: float, weight: Optional[Tensor],
                     reduction: str, mixing: bool = True, overwrite_logits: bool = False,
                     value_stats: bool = False):
    """SLaM (mixing=True) or vanilla distillation (mixing=False: alpha = 1, k ignored) loss.

    Inputs are validated by slam_bench.functional. z: (N, C) float16/bfloat16/float32 logits
    (float64 is rejected: the kernels compute in fp32, which would silently break the float64
    result promised by the torch backend; use backend="torch"). y: (N, C) teacher probabilities,
    float16/bfloat16/float32 (float64 is cast to float32, as the torch backend does). alpha a
    float or (N,) float tensor; k an int or (N,) integer tensor; weight None or (N,).
    overwrite_logits: write dL/dz into z's storage (z must have unit column stride; its values
    are gone after the forward). Returns float32: (N,) for reduction="none", else a scalar
    ("mean" = weighted sum / N, and 0.0 when N = 0). Gradients flow to z only.
    value_stats: return (loss, stats) instead, stats the (4,) float64 device tensor of
    `combine_row_stats` (None when N = 0), which the loss kernel computes from the loads it
    makes anyway: the caller's value checks (slam_bench.checks.raise_loss_value_errors) then
    need no pass over z or y, only one small device-to-host copy.
    """
    z, y = _prepare(z, y, overwrite_logits)
    n = z.shape[0]
    stats = _stats_buffer(z, value_stats)
    out = _slam_loss(z, y, alpha, k, normalize, temperature, weight, reduction, mixing,
                     overwrite_logits, stats)
    if not value_stats:
        return out
    return out, (combine_row_stats(stats) if stats is not None else None)


def _slam_loss(z, y, alpha, k, normalize, temperature, weight, reduction, mixing,
               overwrite_logits, stats):
    n = z.shape[0]
    # A scalar alpha of 1 is vanilla distillation exactly (b = 0 everywhere): no top-k.
    if mixing and not isinstance(alpha, Tensor) and float(alpha) == 1.0:
        mixing = False
    one = _row_vector(1.0, n, z.device)
    if not mixing:
        return _loss(z, y, one, one, _row_vector(1, n, z.device, torch.int32), weight,
                     1.0 / float(temperature), False, 0, 1, reduction, overwrite_logits, stats)
    a = _row_vector(alpha, n, z.device)
    if not normalize:
        s = one
    elif isinstance(k, Tensor):
        s = 1.0 / (k.to(device=z.device, dtype=torch.float32) - 1.0)
    else:
        s = _row_vector(1.0 / (k - 1), n, z.device)
    k_hint = 0 if isinstance(k, Tensor) else int(k)
    return _loss(z, y, a, s, _row_vector(k, n, z.device, torch.int32), weight,
                 1.0 / float(temperature), True, 0, k_hint, reduction, overwrite_logits, stats)


# Taylor-CE's series is unrolled at compile time; orders past this gain nothing (the terms
# (1 - f)^n / n vanish) and only lengthen compilation.
MAX_TAYLOR_ORDER = 16


def taylor_ce_triton(z: Tensor, y: Tensor, order: int = 2, *, temperature: float = 1.0,
                     weight: Optional[Tensor] = None, reduction: str = "mean") -> Tensor:
    """Taylor-CE (Feng et al., IJCAI 2020): sum_j y_j sum_{n=1..order} (1 - f_j)^n / n with
    f = softmax(z / T), from the same kernel (TAYLOR = order). z, y, weight, reduction and
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
    z, y = _prepare(z, y, False)
    n = z.shape[0]
    one = _row_vector(1.0, n, z.device)
    return _loss(z, y, one, one, _row_vector(1, n, z.device, torch.int32), weight,
                 1.0 / float(temperature), False, order, 1, reduction, False)


def _prepare(z: Tensor, y: Tensor, overwrite_logits: bool) -> Tuple[Tensor, Tensor]:
    if z.dtype not in KERNEL_DTYPES:
        raise TypeError(f"student_logits must be float16/bfloat16/float32 for backend='triton' "
                        f"(the kernel computes in fp32), got {z.dtype}; use backend='torch'")
    if y.dtype == torch.float64:
        y = y.float()
    elif y.dtype not in KERNEL_DTYPES:
        raise TypeError(
            f"teacher_probs must be a float16/bfloat16/float32/float64 tensor, got {y.dtype}")
    if overwrite_logits and z.shape[0] and z.stride(1) != 1:
        raise ValueError("overwrite_logits=True needs student_logits with unit column stride "
                         "(the gradient is written into its storage); got strides "
                         f"{tuple(z.stride())}")
    return _unit_column_stride(z), _unit_column_stride(y)
