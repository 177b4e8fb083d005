"""The torch backend: SLaM loss and its analytic gradient in one autograd.Function.

Why not autograd on the formula: autograd keeps softmax, mask, mix, log and product
temporaries alive until backward (several N x C buffers) and replays them. Here one pass
over row chunks computes the row losses and dL/dz together (spec/slam.md section 2), keeping
only the gradient, with 1/T, the weight and the 1/N of "mean" already folded in. Backward is
one multiply by grad_output, skipped on CPU when grad_output is exactly 1 (`loss.backward()`),
in which case autograd adopts the saved buffer as `.grad` without a copy (it copies when the
graph is retained). Peak extra memory: the gradient buffer (plus the product buffer when
grad_output != 1) and the temporaries of the chunks in flight (one per worker thread, about
2 MiB each).

Numerics (the Triton kernel does the same):
- Entries outside the top-k mask, and every entry when alpha = 1, have q_j = alpha f_j, so
  log q_j = log alpha + log_softmax(z)_j stays finite even where f_j underflows to 0.
- Inside the mask with b = s (1 - alpha) > 0, q_j = c_j f_j + b with c_j = alpha - b, which is
  at least min(alpha, b) > 0.
- The gradient is written with r_j = f_j g_j = -y_j c_j f_j / q_j, which is exactly -y_j
  outside the mask (no 0/0), so dz_j = (r_j - f_j sum_i r_i) / T.
- log f_j = (z_j - max) - log(sum_i exp(z_i - max)), with the shifted logits kept, so shifting
  the logits changes nothing. Logits must be finite (the public API checks this): y_j log f_j
  is a plain product, and y_j = 0 contributes exactly 0.

Speed (CPU, eager ops only). exp is the costliest op, so it runs once per element: the
shifted logits are written into the gradient buffer, the loss's linear part sum_j y_j xs_j is
taken from them as one row dot product, and exp then overwrites them in place; both the loss
and f come from those exponentials and their row sums. The top-k mask touches k entries per row, so those entries are
gathered and the other C - k are handled by whole-row ops with no mask. Rows whose threshold
value is tied with entries past position k (and is > 0: ties at 0 change nothing, y_j = 0
terms vanish), and k = C, take the dense-mask fallback, which computes the same quantities
through an N x C mask.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from slam_bench.chunks import for_each_chunk, row_step
from slam_bench.reference import topk_mask

def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype this backend computes in for inputs of `dtype`: float64 stays, the rest float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _ties_past_k(top_vals: Tensor, k) -> bool:
    """top_vals (n, kmax + 1) descending. True when some row's k-th largest value (> 0) is
    repeated just past position k, so the mask holds more than k entries."""
    if isinstance(k, int):
        kth, nxt = top_vals[:, k - 1], top_vals[:, k]
    else:
        kl = k.long().unsqueeze(1)
        kth = top_vals.gather(1, kl - 1).squeeze(1)
        nxt = top_vals.gather(1, kl).squeeze(1)
    return bool(((nxt == kth) & (kth > 0)).any())


def _mask_plan(yv: Tensor, k, kmax: int):
    """How to find the mixed entries of a chunk: ("gather", top_idx (n, kmax), valid (n, kmax)
    bool or None) when each row's mask is exactly its top k_i entries, else ("dense", mask)."""
    c = yv.shape[1]
    if kmax < c:
        top = torch.topk(yv, kmax + 1, dim=1)
        if not _ties_past_k(top.values, k):
            valid = None
            if not isinstance(k, int):
                valid = torch.arange(kmax, device=yv.device).unsqueeze(0) < k.unsqueeze(1)
            return "gather", top.indices[:, :kmax], valid
    return "dense", topk_mask(yv, k), None


def gathered_terms(y_g, logf_g, a, b, valid):
    """Mixing on gathered entries (here the top k of a row; the K ids of a sparse teacher in
    slam_bench.topk_backend): y_g (n, kk) their teacher values, logf_g (n, kk) their log f,
    a, b (n, 1) alpha and s (1 - alpha), valid (n, kk) bool or None: which are in the row's
    mask. Returns (sum of y_j log q_j over them (n,), f there (n, kk), r_j = f_j g_j there
    (n, kk), exactly -y_j outside the mask)."""
    f_g = logf_g.exp()
    mixed = b > 0  # (n, 1): alpha = 1 rows have q = alpha f everywhere
    if valid is not None:
        mixed = mixed & valid
    q = (a - b) * f_g + b
    logq = torch.where(mixed, torch.log(q), torch.log(a) + logf_g)
    r = torch.where(mixed, -y_g * (a - b) * f_g / q, -y_g)
    return (y_g * logq).sum(dim=1), f_g, r


def _chunk(z, y, a, k, s, kmax, inv_t, mixing, grad_out_buf, scale):
    """One chunk of rows. z, y (n, C); a, s (n, 1) in the work dtype; k int or (n,) int tensor
    with max kmax; scale (n, 1) tensor or float: the per-row factor of dL/dz (weight, 1/N).
    Writes dL/dz * scale into grad_out_buf (n, C) when it is not None. Returns rows (n,)."""
    wd = a.dtype
    yv = y if y.dtype == wd else y.to(wd)
    x = z if z.dtype == wd else z.to(wd)
    if inv_t != 1.0:
        x = x * inv_t
    m = x.amax(dim=1, keepdim=True)
    b = s * (1 - a) if mixing else None
    if mixing and not bool((b > 0).any()):
        mixing = False  # alpha = 1 on every row of the chunk: plain soft cross-entropy
    plan = _mask_plan(yv, k, kmax) if mixing else ("none", None, None)
    if plan[0] == "dense":
        xs = x - m
        e = torch.exp(xs, out=grad_out_buf) if grad_out_buf is not None else torch.exp(xs)
        se = e.sum(dim=1)
        return _dense_mask_chunk(yv, xs, torch.log(se), e / se[:, None], a, b, plan[1], inv_t,
                                 grad_out_buf, scale)
    # Shifted logits xs (exact for nearby values: shift-invariant), written where exp(xs)
    # will go: the gradient buffer, or x itself when x is already a copy of our own.
    if grad_out_buf is not None:
        xs = torch.sub(x, m, out=grad_out_buf)
    else:
        xs = x.sub_(m) if x is not z else x - m
    del x
    # sum_j y_j xs_j, the loss's linear part, before xs turns into exp(xs) in place.
    yxs = torch.linalg.vecdot(xs, yv)
    if mixing:
        idx, valid = plan[1], plan[2]
        y_g, xs_g = yv.gather(1, idx), xs.gather(1, idx)
    e = xs.exp_()
    se = e.sum(dim=1)
    lse = torch.log(se)  # log f = xs - lse, f = e / se
    sy = yv.sum(dim=1)
    ylogf = yxs - lse * sy  # sum_j y_j log f_j
    if mixing:
        # The gathered top entries: replace their y (log alpha + log f) by y log q.
        logf_g = xs_g - lse[:, None]
        logq_g, f_g, r_g = gathered_terms(y_g, logf_g, a, b, valid)
        y_rest_sum = sy - y_g.sum(dim=1)
        rows = -(ylogf - (y_g * logf_g).sum(dim=1) + torch.log(a).squeeze(1) * y_rest_sum
                 + logq_g)
        u = y_rest_sum - r_g.sum(dim=1)
    else:
        rows = -ylogf
        u = sy
    if grad_out_buf is None:
        return rows

    # dz = (r - f sum_i r_i) / T with r = -y on the entries not gathered, f = e / sum(e).
    sc = scale * inv_t
    g = e
    g.mul_((u / se).unsqueeze(1) * sc)
    if isinstance(sc, float):
        g.sub_(yv, alpha=sc)
    else:
        g.addcmul_(yv, -sc)
    if mixing:  # overwrite (not add -y_j + ...): the two would nearly cancel
        g.scatter_(1, idx, (f_g * u.unsqueeze(1) + r_g) * sc)
    return rows


def _dense_mask_chunk(yv, xs, lse, f, a, b, mask, inv_t, grad_out_buf, scale):
    """Fallback of `_chunk` for chunks with ties past k or k = C: the same quantities through
    an (n, C) mask (slower, rare). f = softmax (n, C), a buffer of its own."""
    mixed = mask & (b > 0)
    logf = xs - lse[:, None]
    # q > 0 wherever b > 0 (at least alpha where c < 0, else b); the where keeps log(0) and
    # 0/0 of underflowed f out of the unmixed entries.
    q = (a - b) * f + b
    logq = torch.where(mixed, torch.log(q), torch.log(a) + logf)
    rows = -(yv * logq).sum(dim=1)
    if grad_out_buf is None:
        return rows
    r = torch.where(mixed, -yv * (a - b) * f / q, -yv)
    grad_out_buf.copy_((r - f * r.sum(dim=1, keepdim=True)) * (scale * inv_t))
    return rows


class _SLaMFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, y, alpha, k, s, weight, temperature, reduction, mixing):
        n, c = z.shape
        wd = work_dtype(z.dtype)
        want_grad = ctx.needs_input_grad[0]
        rows = torch.empty(n, dtype=wd, device=z.device)
        grad = torch.empty((n, c), dtype=wd, device=z.device) if want_grad else None
        step = row_step(n, c, z.device)
        inv_t = 1.0 / temperature
        kmax = k if isinstance(k, int) else (int(k.max()) if n else 1)
        # The per-row factor that the reduction applies to dL/dz: weight and 1/N.
        inv_n = 1.0 / n if (reduction == "mean" and n) else 1.0
        w = weight.to(wd) if weight is not None else None

        def run(i):
            j = min(i + step, n)
            k_i = k if isinstance(k, int) else k[i:j]
            sc = inv_n if w is None else (w[i:j] * inv_n).unsqueeze(1)
            rows[i:j] = _chunk(z[i:j], y[i:j], alpha[i:j, None], k_i, s[i:j, None], kmax,
                               inv_t, mixing, grad[i:j] if want_grad else None, sc)

        for_each_chunk(run, range(0, n, step), z.device)
        if want_grad:
            ctx.save_for_backward(grad)
            ctx.z_dtype = z.dtype
        ctx.reduction = reduction
        out = rows if w is None else rows * w
        if reduction == "none":
            return out
        total = out.sum()
        return total * inv_n if reduction == "mean" else total

    @staticmethod
    def backward(ctx, grad_out):
        (grad,) = ctx.saved_tensors
        dz = apply_grad_output(grad, grad_out, ctx.reduction)
        return dz.to(ctx.z_dtype), None, None, None, None, None, None, None, None


def apply_grad_output(grad: Tensor, grad_out: Tensor, reduction: str) -> Tensor:
    """dL/dz from a gradient computed in the forward for grad_output = 1: grad (N, C), scaled
    by grad_out (0-dim, or (N,) for reduction="none"). On CPU the check for 1 is free, and
    `loss.backward()` passes exactly 1: returning the saved buffer unscaled lets autograd
    adopt it as .grad with no N x C pass. On a GPU it multiplies (no host sync)."""
    g = grad_out.to(grad.dtype)
    if grad.device.type == "cpu" and bool((g == 1).all()):
        return grad
    return grad * (g[:, None] if reduction == "none" else g)


def slam_loss_torch(z: Tensor, y: Tensor, alpha: Union[float, Tensor], k: Union[int, Tensor], *,
                    normalize: bool, temperature: float, weight: Optional[Tensor],
                    reduction: str, mixing: bool = True) -> Tensor:
    """Checked inputs (see slam_bench.functional). z, y (N, C); returns float32/float64."""
    n = z.shape[0]
    wd = work_dtype(z.dtype)
    a = torch.as_tensor(alpha, dtype=wd, device=z.device).expand(n).contiguous()
    if normalize:
        s = 1.0 / (torch.as_tensor(k, dtype=wd, device=z.device).expand(n) - 1.0)
    else:
        s = torch.ones(n, dtype=wd, device=z.device)
    return _SLaMFunction.apply(z, y, a, k, s, weight, float(temperature), reduction, mixing)
