"""Torch backend of the sparse top-K SLaM loss: the CPU path of `slam_loss_topk` and the chunk
step of `fused_linear_slam_loss`'s torch backend.

The teacher of a row is K (id, probability) pairs; the loss is restricted to them (the mass
outside the K ids is dropped, not renormalised):

    loss_i = -sum_{j in K} y_j log q_j,  q = SLaM mix of f = softmax(z / T) over all V,
    outside the mask log q_j = log alpha + log f_j,  inside q_j = c f_j + b,
    b = s (1 - alpha), c = alpha - b,  mask: y_j >= thresh_i (the k-th largest of the K).

Gradient: with r_j = f_j dloss/df_j = -y_j c f_j / q_j (exactly -y_j outside the mask), zero
off the K ids, and R = sum_j r_j: dz_v = (r_v - f_v R) / T. So a row needs its max and sum of
exp over V, the K gathered logits, and then one pass writing -f_v R / T plus r at K places.

`topk_rows` does exactly that in place on an (n, V) buffer of logits (no temporaries of
size n x V): the chunk step the Triton kernel (kernels/topk_triton.py) performs, in eager torch
ops, over row chunks that stay in cache, which on CPU run on the worker threads of
slam_bench.chunks (each op single-threaded: at small N x V, per-op thread barriers would cost
far more than the ops). The mixing of the K gathered entries and the backward's grad_output
are slam_bench.torch_backend's. Inputs are checked by slam_bench.vocab.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from slam_bench import checks, cpu_fused
from slam_bench.chunks import for_each_chunk, row_step
from slam_bench.torch_backend import (apply_grad_output, distinct, fake_rows, fake_rows_grad,
                                      mix_terms, refuse_create_graph, work_dtype)


def k_terms(logf: Tensor, p: Tensor, alpha: Tensor, s: Tensor, thresh: Tensor, mixing: bool):
    """The K teacher entries of n rows. logf, p (n, K): log f and y at the ids; alpha, s,
    thresh (n,). Returns (row losses (n,), r (n, K))."""
    if not mixing:
        return -(p * logf).sum(dim=1), -p
    a = alpha[:, None]
    b = s[:, None] * (1 - a)
    ylogq, r = mix_terms(p, logf, logf.exp(), a, b, (b > 0) & (p >= thresh[:, None]))
    return -ylogq, r


def _chunk_(buf: Tensor, ids: Tensor, p: Tensor, alpha: Tensor, s: Tensor, thresh: Tensor,
            scale: Optional[Tensor], inv_t: float, ignore_index: int, mixing: bool) -> Tensor:
    """Row losses (n,) of the logits in `buf` (n, V), float32/float64, which it overwrites:
    with scale_i * dloss_i/dz when `scale` (n,) is given, else with scratch values.

    ids (n, K) int, p (n, K) float; alpha, s, thresh (n,) in buf's dtype. Rows with
    ids[i, 0] == ignore_index get loss 0 and gradient 0."""
    wd = buf.dtype
    keep = (ids[:, 0] != ignore_index)[:, None]
    idx = ids.masked_fill(~keep, 0).long()
    pk = p.to(wd).masked_fill(~keep, 0.0)  # ignored rows: y = 0, so loss, r and R are 0
    m = buf.amax(dim=1, keepdim=True)
    zg = buf.gather(1, idx)
    buf.sub_(m)
    if inv_t != 1.0:
        buf.mul_(inv_t)
    buf.exp_()
    se = buf.sum(dim=1)
    logf = (zg - m) * inv_t - se.log()[:, None]
    rows, r = k_terms(logf, pk, alpha, s, thresh, mixing)
    if scale is not None:
        sc = scale.to(wd) * inv_t
        buf.mul_((-r.sum(dim=1) * sc / se)[:, None])  # buf holds exp(x - max): f = buf / se
        buf.scatter_add_(1, idx, r * sc[:, None])
    return rows


def topk_rows(z: Tensor, ids: Tensor, p: Tensor, alpha: Tensor, s: Tensor, thresh: Tensor,
              scale: Optional[Tensor], inv_t: float, ignore_index: int, mixing: bool,
              out: Optional[Tensor] = None, value_checks: bool = False) -> Tensor:
    """Row losses (n,) in the work dtype of logits z (n, V): in one call of the compiled body
    (slam_bench/cpu_topk.cpp) where `compiled_body_for(z)`, else row chunk by row chunk.

    out: None (each chunk works on a copy of its own), or an (n, V) buffer in the work dtype
    (z itself to work in place) that ends up holding scale_i * dloss_i/dz where `scale` (n,)
    is given, scratch values otherwise. float16/bfloat16 z run the compiled body after an
    upcast to float32 (`_upcast_then_compiled`). value_checks (compiled bodies only,
    `checks_logits_in_body`): raise the API's error when z holds a NaN or inf, from the min
    and max the body's first pass keeps. Other arguments as in `_chunk_`."""
    n, v = z.shape
    wd = work_dtype(z.dtype)
    own = out is None or (out.dtype == wd and out.is_contiguous())
    if compiled_body_for(z) and own:
        return _compiled(z, ids, p, alpha, s, thresh, scale, inv_t, ignore_index, mixing,
                         value_checks, out)
    if _compiled_after_upcast(z) and own:
        return _upcast_then_compiled(z, ids, p, alpha, s, thresh, scale, inv_t, ignore_index,
                                     mixing, value_checks, out)
    if value_checks:  # a caller that asked for the body's check got the eager chunks instead
        checks.check_finite("student_logits", z)
    rows = torch.empty(n, dtype=wd, device=z.device)
    step = row_step(n, v, z.device)

    def run(i):
        j = min(i + step, n)
        if out is None:
            buf = z[i:j].to(wd, copy=True)
        else:
            buf = out[i:j]
            if out is not z:
                buf.copy_(z[i:j])
        rows[i:j] = _chunk_(buf, ids[i:j], p[i:j], alpha[i:j], s[i:j], thresh[i:j],
                            None if scale is None else scale[i:j], inv_t, ignore_index, mixing)

    for_each_chunk(run, range(0, n, step), z.device)
    return rows


def _compiled(z, ids, p, alpha, s, thresh, scale, inv_t, ignore_index, mixing, value_checks,
              out):
    """One call of the compiled body on float32/float64 z (cpu_fused.topk_rows): row losses
    (n,), after raising the API's error for non-finite logits (value_checks)."""
    wd = z.dtype
    rows, stats = cpu_fused.topk_rows(
        cpu_fused.library(), z, ids.to(torch.int64).contiguous(), p.to(wd).contiguous(),
        alpha.contiguous(), s.contiguous(), thresh.contiguous(),
        None if scale is None else scale.to(wd).contiguous(), inv_t, ignore_index, mixing,
        value_checks, out)
    if value_checks and not all(math.isfinite(x) for x in stats):
        raise checks.finite_error("student_logits")
    return rows


# Rows of 16-bit logits upcast at a time for a forward-only call: 2**22 float32 values, 16 MiB.
UPCAST_CHUNK_ELEMENTS = 1 << 22


def _compiled_after_upcast(z: Tensor) -> bool:
    """float16/bfloat16 CPU logits that the compiled body can take once upcast to float32."""
    return (z.device.type == "cpu" and z.dtype in (torch.float16, torch.bfloat16)
            and z.numel() > 0 and cpu_fused.library() is not None)


def _upcast_then_compiled(z, ids, p, alpha, s, thresh, scale, inv_t, ignore_index, mixing,
                          value_checks, out):
    """`topk_rows` for float16/bfloat16 z (n, V): the logits upcast to float32 and the
    compiled body run on them in place. With `out` (an (n, V) float32 buffer, the gradient's)
    the whole of z is copied into it first, one pass and no other buffer; forward-only calls
    (out None) upcast row chunks of UPCAST_CHUNK_ELEMENTS into one scratch buffer, so the
    extra memory stays bounded as the eager chunks' does. Row losses (n,) float32."""
    if out is not None:
        out.copy_(z)
        return _compiled(out, ids, p, alpha, s, thresh, scale, inv_t, ignore_index, mixing,
                         value_checks, out)
    n, v = z.shape
    step = max(1, UPCAST_CHUNK_ELEMENTS // v)
    scratch = torch.empty((min(step, n), v), dtype=torch.float32)
    rows = torch.empty(n, dtype=torch.float32)
    for i in range(0, n, step):
        j = min(i + step, n)
        buf = scratch[: j - i]
        buf.copy_(z[i:j])
        rows[i:j] = _compiled(buf, ids[i:j], p[i:j], alpha[i:j], s[i:j], thresh[i:j], None,
                              inv_t, ignore_index, mixing, value_checks, None)
    return rows


def compiled_body_for(z: Tensor) -> bool:
    """Whether the compiled top-K body (slam_bench.cpu_fused) takes these logits as they are:
    contiguous float32/float64 CPU rows, and a library that could be built here."""
    return (z.device.type == "cpu" and z.dtype in (torch.float32, torch.float64)
            and z.is_contiguous() and z.numel() > 0 and cpu_fused.library() is not None)


def checks_logits_in_body(z: Tensor) -> bool:
    """Whether `topk_rows` on z (with a work-dtype `out` or none) runs a compiled body, which
    then finds non-finite logits in its own first pass (value_checks): float32/float64 as they
    are, float16/bfloat16 after the upcast."""
    return compiled_body_for(z) or _compiled_after_upcast(z)


def topk_chunk_inplace(logits: Tensor, ids: Tensor, p: Tensor, alpha: Tensor, s: Tensor,
                       thresh: Tensor, scale: Optional[Tensor], inv_t: float, ignore_index: int,
                       mixing: bool) -> Tensor:
    """The fused-linear chunk step on this backend (the Triton one is
    slam_bench.kernels.topk_chunk_inplace): row losses of `logits` (n, V), float32/float64,
    overwritten with scale_i * dloss_i/dz when `scale` is given."""
    return topk_rows(logits, ids, p, alpha, s, thresh, scale, inv_t, ignore_index, mixing,
                     out=logits)


def _forward_body(z: Tensor, ids: Tensor, p: Tensor, alpha: Tensor, s: Tensor, thresh: Tensor,
                  scale: Tensor, inv_t: float, ignore_index: int, mixing: bool,
                  value_checks: bool, want_grad: bool):
    """(row losses (N,), dL/dz (N, V) with row i scaled by scale_i, or None), both in the work
    dtype (arguments: `topk_rows`)."""
    n, v = z.shape
    grad = torch.empty((n, v), dtype=work_dtype(z.dtype), device=z.device) if want_grad else None
    rows = topk_rows(z, ids, p, alpha, s, thresh, scale if want_grad else None, inv_t,
                     ignore_index, mixing, out=grad, value_checks=value_checks)
    return rows, grad


# As custom ops for torch.compile (slam_bench.torch_backend says why); eager calls run the
# body directly.
@torch.library.custom_op("slam_bench::torch_topk_rows", mutates_args=(),
                         tags=checks.HOST_READS)
def torch_topk_rows(z: Tensor, ids: Tensor, p: Tensor, alpha: Tensor, s: Tensor,
                    thresh: Tensor, scale: Tensor, inv_t: float, ignore_index: int,
                    mixing: bool, value_checks: bool) -> Tensor:
    """Row losses (N,) in the work dtype."""
    return _forward_body(z, ids, p, alpha, s, thresh, scale, inv_t, ignore_index, mixing,
                         value_checks, False)[0]


torch_topk_rows.register_fake(fake_rows)


@torch.library.custom_op("slam_bench::torch_topk_rows_grad", mutates_args=(),
                         tags=checks.HOST_READS)
def torch_topk_rows_grad(z: Tensor, ids: Tensor, p: Tensor, alpha: Tensor, s: Tensor,
                         thresh: Tensor, scale: Tensor, inv_t: float, ignore_index: int,
                         mixing: bool, value_checks: bool) -> Tuple[Tensor, Tensor]:
    """(row losses (N,), scale_i * dloss_i/dz (N, V)), both in the work dtype."""
    return _forward_body(z, ids, p, alpha, s, thresh, scale, inv_t, ignore_index, mixing,
                         value_checks, True)


torch_topk_rows_grad.register_fake(fake_rows_grad)


class _TopKFunction(torch.autograd.Function):
    """Loss and gradient in one pass over the rows (as slam_bench/torch_backend.py does for
    the dense loss): the gradient buffer, with the row factors folded in, is the only n x V
    allocation; backward applies grad_output (torch_backend.apply_grad_output)."""

    @staticmethod
    def forward(ctx, z, ids, p, alpha, s, thresh, scale, inv_t, ignore_index, mixing, reduction,
                value_checks):
        want = ctx.needs_input_grad[0]
        args = (z, ids, p, alpha, s, thresh, scale, inv_t, ignore_index, mixing, value_checks)
        if torch.compiler.is_compiling():
            rows, grad = torch_topk_rows_grad(*args) if want else (torch_topk_rows(*args), None)
        else:
            rows, grad = _forward_body(*args, want)
        if want:
            ctx.save_for_backward(grad)
            ctx.z_dtype, ctx.reduction = z.dtype, reduction
        out = rows * scale
        return out if reduction == "none" else out.sum()

    @staticmethod
    def backward(ctx, grad_out):
        refuse_create_graph("slam_loss_topk")
        (grad,) = ctx.saved_tensors
        dz = apply_grad_output(grad, grad_out, ctx.reduction)
        return (dz.to(ctx.z_dtype),) + (None,) * 11


def slam_loss_topk_torch(z: Tensor, ids: Tensor, p: Tensor, alpha: Tensor, s: Tensor,
                         thresh: Tensor, scale: Tensor, inv_t: float, ignore_index: int,
                         mixing: bool, reduction: str, value_checks: bool = False) -> Tensor:
    """z (N, V); ids, p (N, K); alpha, s, thresh (N,) in the work dtype; scale (N,): row i's
    factor in the result (w_i, over the rows not ignored for "mean"). Returns sum_i scale_i
    loss_i, or the (N,) products for reduction="none"; float32 (float64 for float64 z).
    value_checks: z's finiteness checked inside the compiled body (see topk_rows)."""
    # (alpha is thresh itself for alpha = 1, and weight may be alpha: one object each.)
    z, ids, p, alpha, s, thresh, scale = distinct(z, ids, p, alpha, s, thresh, scale)
    return _TopKFunction.apply(z, ids, p, alpha, s, thresh, scale, inv_t, ignore_index, mixing,
                               reduction, value_checks)
