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

`topk_chunk_` does exactly that in place on an (n, V) buffer of logits (no temporaries of
size n x V): the same chunk step the Triton kernel (kernels/topk_triton.py) performs, in
eager torch ops. Inputs are checked by slam_bench.topk.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

# A chunk of rows spans about this many logits (4 MiB of fp32 temporaries for the
# forward-only path), so row chunks stay in cache across the few passes over them.
CHUNK_ELEMENTS = 1 << 20


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def k_terms(logf: Tensor, p: Tensor, alpha: Tensor, s: Tensor, thresh: Tensor, mixing: bool):
    """The K teacher entries of n rows. logf, p (n, K): log f and y at the ids; alpha, s,
    thresh (n,). Returns (row losses (n,), r (n, K))."""
    if mixing:
        a = alpha[:, None]
        b = s[:, None] * (1 - a)
        c = a - b
        mixed = (p >= thresh[:, None]) & (b > 0)
        f = logf.exp()
        q = c * f + b  # >= min(alpha, b) > 0 where mixed; unused elsewhere
        logq = torch.where(mixed, torch.log(q), torch.log(a) + logf)
        r = torch.where(mixed, -p * c * f / q, -p)
    else:
        logq, r = logf, -p
    # Select before multiplying: y_j = 0 with log q_j = -inf must give 0, not NaN.
    rows = -torch.where(p > 0, p * logq, torch.zeros_like(p)).sum(dim=1)
    return rows, r


def topk_chunk_(buf: Tensor, ids: Tensor, p: Tensor, alpha: Tensor, s: Tensor, thresh: Tensor,
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


def rows_per_chunk(v: int, elements: int = CHUNK_ELEMENTS) -> int:
    return max(1, elements // v)


class _TopKFunction(torch.autograd.Function):
    """Loss and gradient in one pass over row chunks (as slam_bench/torch_backend.py does for
    the dense loss): the gradient buffer, with the row factors folded in, is the only n x V
    allocation; backward multiplies it by grad_output (skipped on CPU when that is 1)."""

    @staticmethod
    def forward(ctx, z, ids, p, alpha, s, thresh, scale, inv_t, ignore_index, mixing, reduction):
        n, v = z.shape
        wd = work_dtype(z.dtype)
        want = ctx.needs_input_grad[0]
        rows = torch.empty(n, dtype=wd, device=z.device)
        grad = torch.empty((n, v), dtype=wd, device=z.device) if want else None
        step = rows_per_chunk(v)
        scratch = None if want else torch.empty((min(step, n), v), dtype=wd, device=z.device)
        for i in range(0, n, step):
            j = min(i + step, n)
            buf = grad[i:j] if want else scratch[: j - i]
            buf.copy_(z[i:j])
            rows[i:j] = topk_chunk_(buf, ids[i:j], p[i:j], alpha[i:j], s[i:j], thresh[i:j],
                                    scale[i:j] if want else None, inv_t, ignore_index, mixing)
        if want:
            ctx.save_for_backward(grad)
            ctx.z_dtype, ctx.reduction = z.dtype, reduction
        out = rows * scale
        return out if reduction == "none" else out.sum()

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        g = grad_out.to(grad.dtype)
        # On CPU the check is free; `loss.backward()` passes exactly 1.
        if grad.device.type == "cpu" and bool((g == 1).all()):
            dz = grad
        else:
            dz = grad * (g[:, None] if ctx.reduction == "none" else g)
        return (dz.to(ctx.z_dtype),) + (None,) * 10


def slam_loss_topk_torch(z: Tensor, ids: Tensor, p: Tensor, alpha: Tensor, s: Tensor,
                         thresh: Tensor, scale: Tensor, inv_t: float, ignore_index: int,
                         mixing: bool, reduction: str) -> Tensor:
    """z (N, V); ids, p (N, K); alpha, s, thresh (N,) in the work dtype; scale (N,): row i's
    factor in the result (w_i, over the rows not ignored for "mean"). Returns sum_i scale_i
    loss_i, or the (N,) products for reduction="none"; float32 (float64 for float64 z)."""
    return _TopKFunction.apply(z, ids, p, alpha, s, thresh, scale, inv_t, ignore_index, mixing,
                               reduction)
