"""The torch backend: SLaM loss and its analytic gradient in one autograd.Function.

Why not autograd on the formula: autograd keeps softmax, mask, mix, log and product
temporaries alive until backward (several N x C buffers) and replays them. Here one pass
over row chunks computes the row losses and dL/dz together (docs/method.md section 2), keeping
only the gradient, with 1/T, the weight and the 1/N of "mean" already folded in. Backward is
one multiply by grad_output, skipped on CPU when grad_output is exactly 1 (`loss.backward()`),
in which case autograd adopts the saved buffer as `.grad` without a copy (it copies when the
graph is retained). Peak extra memory: the gradient buffer (plus the product buffer when
grad_output != 1), one scratch chunk, and the temporaries of the chunk in flight (chunks run
one at a time, each op on torch's own threads: slam_bench.chunks says why; about 2 MiB per
fp32 chunk buffer).

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

On CPU the forward runs the compiled body of slam_bench.cpu_fused when it can be built
(one parallel region over row blocks, the value checks in the same pass, at most a few dozen
aten ops per call; docs/cpu_backend.md): the eager body below is its fallback, and the code
path for other devices. While torch.compile traces, the whole forward is one custom op
(`torch_slam_rows[_grad]`), opaque to the compiler.

Speed (eager body). exp is the costliest op, so it runs once per element: the
shifted logits are written into the gradient buffer, the loss's linear part sum_j y_j xs_j is
taken from them as one row dot product, and f comes from torch's softmax kernel (its
vectorised exp is cheaper than torch.exp) into the scratch chunk; log sum exp is -log of the
row's largest f (f = 1 / sum exp at the row maximum). With default arguments the public API's
value checks read their numbers from each chunk here, while it is in cache (no separate pass).
The top-k mask touches k entries per row, so those entries are
gathered and the other C - k are handled by whole-row ops with no mask. Rows whose threshold
value is tied with entries past position k (and is > 0: ties at 0 change nothing, y_j = 0
terms vanish), and k = C, take the dense-mask fallback, which computes the same quantities
through an N x C mask.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor

from slam_bench import checks, cpu_fused
from slam_bench.chunks import op_row_step
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
    return bool(((nxt == kth) & (nxt > 0)).any())


# Non-negative floats sort like their bit patterns read as integers of the same width, and
# torch.topk compares integers about 10% faster than floats (no NaN handling).
_BITS = {torch.float32: torch.int32, torch.float64: torch.int64}


def top_entries(y: Tensor, kk: int):
    """torch.topk(y, kk, dim=1) for y (n, C) >= 0: (values (n, kk) descending, indices).
    Other y raise no error (entries below 0 just rank wrongly: the public API checks y or the
    caller vouched for it)."""
    bits = _BITS.get(y.dtype)
    if bits is None or not y.is_contiguous():
        return torch.topk(y, kk, dim=1)
    top = torch.topk(y.view(bits), kk, dim=1)
    return top.values.view(y.dtype), top.indices


def _mask_plan(yv: Tensor, k, kmax: int):
    """How to find the mixed entries of a chunk: ("gather", y_g (n, kmax) their teacher values,
    idx (n, kmax), valid (n, kmax) bool or None) when each row's mask is exactly its top k_i
    entries, else ("dense", mask (n, C), None, None)."""
    c = yv.shape[1]
    if kmax < c:
        vals, idx = top_entries(yv, kmax + 1)
        if not _ties_past_k(vals, k):
            valid = None
            if not isinstance(k, int):
                valid = torch.arange(kmax, device=yv.device).unsqueeze(0) < k.unsqueeze(1)
            return "gather", vals[:, :kmax], idx[:, :kmax], valid
    return "dense", topk_mask(yv, k), None, None


def mix_terms(y, logf, f, a, b, mixed, want_r: bool = True):
    """The SLaM mix on a set of entries: y, logf, f (n, m) their teacher values, log f and f;
    a, b (n, 1) alpha and s (1 - alpha); mixed (n, m) bool: the entries in the row's mask with
    b > 0 (q = c f + b there, c = alpha - b; q = alpha f elsewhere). Returns (sum_j y_j log q_j
    (n,), r (n, m) with r_j = f_j g_j = -y_j c f_j / q_j, exactly -y_j outside the mask; None
    unless want_r). Used on a whole row through an (n, C) mask (`_dense_mask_chunk`) and on
    the K ids of a sparse teacher (slam_bench.vocab.torch_backend)."""
    # q > 0 wherever mixed (at least alpha where c < 0, else b); the where keeps log(0) and
    # 0/0 of underflowed f out of the unmixed entries.
    q = (a - b) * f + b
    logq = torch.where(mixed, torch.log(q), torch.log(a) + logf)
    r = torch.where(mixed, -y * (a - b) * f / q, -y) if want_r else None
    return (y * logq).sum(dim=1), r


class RowParams(NamedTuple):
    """Per-row mixing parameters, (n, 1) in the work dtype: alpha, b = s (1 - alpha) and
    c = alpha - b; all_mixed: every row has b > 0 (no row is plain distillation), so the
    mixed entries need no mask beyond the top k."""
    a: Tensor
    b: Tensor
    c: Tensor
    all_mixed: bool

    def rows(self, i: int, j: int) -> "RowParams":
        return RowParams(self.a[i:j], self.b[i:j], self.c[i:j], self.all_mixed)


def row_params(alpha: Tensor, s: Tensor) -> RowParams:
    """alpha, s (N,) in the work dtype."""
    a = alpha.unsqueeze(1)
    b = s.unsqueeze(1) * (1 - a)
    return RowParams(a, b, a - b, bool((b > 0).all()))


def _mixed_terms(y_g, logf_g, rp: RowParams, valid, sy):
    """The top-k entries of each row (gathered: y_g, logf_g (n, kk); valid (n, kk) or None)
    against plain distillation with log alpha added. Returns (the loss's change there,
    sum_j y_j b / q_j over them (n,), a function u -> dL/dz there for the row factor u)."""
    f_g = logf_g.exp()
    q = torch.addcmul(rp.b, rp.c, f_g)  # c f + b on the mixed entries
    log_a = rp.a.log()
    # Mixed entries replace y (log alpha + log f) by y log q; q > 0 there (see the note).
    delta = q.log().sub_(logf_g).sub_(log_a)
    ybq = torch.mul(y_g, rp.b).div_(q)
    mixed = None
    if valid is not None or not rp.all_mixed:
        mixed = (rp.b > 0) if valid is None else (rp.b > 0) & valid
        delta.masked_fill_(~mixed, 0.0)
        ybq.masked_fill_(~mixed, 0.0)
    change = torch.linalg.vecdot(delta, y_g) + log_a.squeeze(1) * sy

    def grad_at(u):
        # r_j - f_j sum_i r_i = f_j (u - y_j c / q_j) on mixed entries (the product form keeps
        # the precision where f_j is tiny); f_j u - y_j on the others, as elsewhere in the row.
        u = u.unsqueeze(1)
        out = torch.addcdiv(u, torch.mul(y_g, rp.c), q, value=-1.0).mul_(f_g)
        if mixed is not None:
            out = torch.where(mixed, out, torch.addcmul(-y_g, f_g, u))
        return out
    return change, ybq.sum(dim=1), grad_at


def _chunk(z, y, rp: RowParams, k, kmax, inv_t, mixing, grad_out_buf, scale, scratch,
           stats=None):
    """One chunk of rows. z, y (n, C); rp the chunk's RowParams; k int or (n,) int tensor
    with max kmax; scale (n, 1) tensor or float: the per-row factor of dL/dz (weight, 1/N).
    Writes dL/dz * scale into grad_out_buf (n, C) when it is not None; scratch (n, C) work
    dtype is overwritten. stats: None, or a (4,) float64 tensor that receives this chunk's
    value-check numbers (checks.value_stats: min of y, max |row sum of y - 1|, min and max of
    z), read from the data while it is in cache. Returns rows (n,)."""
    wd = rp.a.dtype
    yv = y if y.dtype == wd else y.to(wd)
    zmax = z.amax(dim=1, keepdim=True)
    # (torch.aminmax with a dim is many times slower on CPU than amax and amin apart.)
    zmin = z.amin() if stats is not None else None
    m = zmax.to(wd)
    plan = _mask_plan(yv, k, kmax) if mixing else ("none", None, None, None)
    if plan[0] == "dense":
        xs = torch.sub(z, m)
        if inv_t != 1.0:
            xs.mul_(inv_t)
        e = torch.exp(xs, out=grad_out_buf) if grad_out_buf is not None else torch.exp(xs)
        se = e.sum(dim=1)
        rows = _dense_mask_chunk(yv, xs, torch.log(se), e / se[:, None], rp, plan[1], inv_t,
                                 grad_out_buf, scale)
        if stats is not None:
            stats.copy_(checks.chunk_stats(y, zmin, zmax.max(), row_sums=yv.sum(dim=1)))
        return rows
    # Shifted logits xs = (z - m) / T (z - m is exact for nearby values: shift-invariant),
    # in the gradient buffer until the gradient overwrites them.
    xs = torch.sub(z, m, out=grad_out_buf) if grad_out_buf is not None else torch.sub(z, m)
    if inv_t != 1.0:
        xs.mul_(inv_t)
    yxs = row_dot(xs, yv)  # sum_j y_j xs_j, the loss's linear part
    if mixing:
        y_g, idx, valid = plan[1], plan[2], plan[3]
        xs_g = xs.gather(1, idx)
    # f = softmax(xs) by torch's softmax kernel, whose vectorised exp costs about two thirds
    # of torch.exp's (relative error ~1e-6). At the row maximum xs = 0 and f = 1 / sum_i
    # exp(xs_i), so log f = xs - lse with lse = -log(max f).
    f = torch._softmax(xs, 1, False, out=scratch)
    lse = f.amax(dim=1).log_().neg_()
    sy = yv.sum(dim=1)
    if stats is not None:
        stats.copy_(checks.chunk_stats(y, zmin, zmax.max(), row_sums=sy))
    rows = lse * sy - yxs  # -sum_j y_j log f_j
    if mixing:
        change, sbm, grad_at = _mixed_terms(y_g, xs_g.sub_(lse.unsqueeze(1)), rp, valid, sy)
        rows.sub_(change)
        u = sy - sbm  # -sum_j r_j
    else:
        u = sy
    if grad_out_buf is None:
        return rows

    # dz = (r - f sum_i r_i) / T with r = -y off the top k.
    sc = scale * inv_t
    g = torch.mul(f, u.unsqueeze(1) * sc, out=grad_out_buf)
    if isinstance(sc, float):
        g.sub_(yv, alpha=sc)
    else:
        g.addcmul_(yv, sc, value=-1.0)
    if mixing:  # overwrite (not add -y_j + ...): the two would nearly cancel
        g.scatter_(1, idx, grad_at(u) * sc)
    return rows


def row_dot(a: Tensor, b: Tensor) -> Tensor:
    """sum_j a_ij b_ij (n,) of two (n, C) tensors. (linalg.vecdot multiplies into an (n, C)
    temporary and sums it; on CPU that is still 4-5x faster than a batched bmm.)"""
    return torch.linalg.vecdot(a, b)


def _dense_mask_chunk(yv, xs, lse, f, rp, mask, inv_t, grad_out_buf, scale):
    """Fallback of `_chunk` for chunks with ties past k or k = C: the same quantities through
    an (n, C) mask (slower, rare). f = softmax (n, C), a buffer of its own."""
    want_grad = grad_out_buf is not None
    ylogq, r = mix_terms(yv, xs - lse[:, None], f, rp.a, rp.b, mask & (rp.b > 0),
                         want_r=want_grad)
    if want_grad:
        grad_out_buf.copy_((r - f * r.sum(dim=1, keepdim=True)) * (scale * inv_t))
    return -ylogq


def _forward_body(z: Tensor, y: Tensor, alpha: Tensor, s: Tensor, k_rows: Optional[Tensor],
                  k_all: int, weight: Optional[Tensor], inv_t: float, reduction: str,
                  mixing: bool, value_checks: bool, want_grad: bool):
    """The whole forward: (weighted rows (N,), dL/dz (N, C) for grad_output = 1 or None), both
    in the work dtype. z, y (N, C); alpha, s (N,) in the work dtype; k is k_rows (N,) int when
    given, else k_all; reduction "mean", "sum" or "none" (only its 1/N on dL/dz matters here:
    the op computes it from N, so a compiled graph does not specialise on N). Raises the value
    checks' errors (value_checks) before returning anything."""
    n, c = z.shape
    inv_n = 1.0 / n if (reduction == "mean" and n) else 1.0
    wd = work_dtype(z.dtype)
    k = k_all if k_rows is None else k_rows
    lib = cpu_fused.library() if z.device.type == "cpu" and n and c else None
    if lib is not None:
        return _compiled_forward(lib, z, y, alpha, k, s, weight, inv_t, inv_n, mixing,
                                 value_checks, want_grad)
    rows = torch.empty(n, dtype=wd, device=z.device)
    grad = torch.empty((n, c), dtype=wd, device=z.device) if want_grad else None
    step = op_row_step(n, c)
    starts = range(0, n, step)
    kmax = k if isinstance(k, int) else (int(k.max()) if n else 1)
    rp = row_params(alpha, s)
    if mixing and n and not bool((rp.b > 0).any()):
        mixing = False  # alpha = 1 on every row: plain soft cross-entropy
    w = weight.to(wd) if weight is not None else None
    stats = torch.empty((len(starts), 4), dtype=torch.float64) if value_checks else None
    scratch = torch.empty((min(step, n), c), dtype=wd, device=z.device)

    # One chunk at a time, each op on torch's own threads (slam_bench.chunks says why).
    for i in starts:
        j = min(i + step, n)
        k_i = k if isinstance(k, int) else k[i:j]
        # The per-row factor that the reduction applies to dL/dz: weight and 1/N.
        sc = inv_n if w is None else (w[i:j] * inv_n).unsqueeze(1)
        rows[i:j] = _chunk(z[i:j], y[i:j], rp.rows(i, j), k_i, kmax, inv_t, mixing,
                           grad[i:j] if want_grad else None, sc, scratch[:j - i],
                           stats[i // step] if value_checks else None)
    if value_checks and n:
        checks.raise_loss_value_errors(checks.combine_stats(stats), y.dtype)
    return (rows if w is None else rows * w), grad


# The forward as custom ops, for torch.compile: Dynamo cannot trace the compiled body's ctypes
# call, the chunk loop's data-dependent branches or the value checks' raise, so a compiled
# graph holds the whole forward as one opaque node (fullgraph=True traces), and the checks
# still raise when the graph runs. Eager calls skip the dispatcher (about 20 us a call in a
# probe on a 2-core Xeon: 13% of slam_loss's forward + backward at N = 128, C = 10) and run the
# same body directly.
# The bodies read values on the host (k's maximum, the checks' numbers): checks.HOST_READS.
@torch.library.custom_op("slam_bench::torch_slam_rows", mutates_args=(),
                         tags=checks.HOST_READS)
def torch_slam_rows(z: Tensor, y: Tensor, alpha: Tensor, s: Tensor, k_rows: Optional[Tensor],
                    k_all: int, weight: Optional[Tensor], inv_t: float, reduction: str,
                    mixing: bool, value_checks: bool) -> Tensor:
    """Weighted row losses (N,) in the work dtype (arguments: `_forward_body`)."""
    return _forward_body(z, y, alpha, s, k_rows, k_all, weight, inv_t, reduction, mixing,
                         value_checks, False)[0]


def fake_rows(z: Tensor, *_, **__) -> Tensor:
    """The fake of a forward-only loss op on logits z (N, C): row losses (N,) in the work
    dtype (this op's and slam_bench.vocab.torch_backend's)."""
    return z.new_empty(z.shape[0], dtype=work_dtype(z.dtype))


def fake_rows_grad(z: Tensor, *_, **__) -> Tuple[Tensor, Tensor]:
    """The fake of a loss-and-gradient op on logits z (N, C): (row losses (N,), dL/dz (N, C)),
    both in the work dtype."""
    return fake_rows(z), z.new_empty(z.shape, dtype=work_dtype(z.dtype))


torch_slam_rows.register_fake(fake_rows)


@torch.library.custom_op("slam_bench::torch_slam_rows_grad", mutates_args=(),
                         tags=checks.HOST_READS)
def torch_slam_rows_grad(z: Tensor, y: Tensor, alpha: Tensor, s: Tensor,
                         k_rows: Optional[Tensor], k_all: int, weight: Optional[Tensor],
                         inv_t: float, reduction: str, mixing: bool,
                         value_checks: bool) -> Tuple[Tensor, Tensor]:
    """(weighted row losses (N,), dL/dz (N, C)), both in the work dtype."""
    return _forward_body(z, y, alpha, s, k_rows, k_all, weight, inv_t, reduction, mixing,
                         value_checks, True)


torch_slam_rows_grad.register_fake(fake_rows_grad)


class _SLaMFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, y, alpha, k, s, weight, temperature, reduction, mixing, value_checks):
        n = z.shape[0]
        want_grad = ctx.needs_input_grad[0]
        args = (z, y, alpha, s, None if isinstance(k, int) else k,
                k if isinstance(k, int) else 0, weight, 1.0 / temperature, reduction, mixing,
                value_checks)
        if torch.compiler.is_compiling():
            if want_grad:
                rows, grad = torch_slam_rows_grad(*args)
            else:
                rows, grad = torch_slam_rows(*args), None
        else:
            rows, grad = _forward_body(*args, want_grad)
        return _finish(ctx, rows, grad, z.dtype, reduction, n)

    @staticmethod
    def backward(ctx, grad_out):
        refuse_create_graph("slam_loss / distill_loss")
        (grad,) = ctx.saved_tensors
        dz = apply_grad_output(grad, grad_out, ctx.reduction)
        return dz.to(ctx.z_dtype), None, None, None, None, None, None, None, None, None


def _finish(ctx, out, grad, z_dtype, reduction, n):
    """The reduction of the weighted rows out (N,); saves grad (N, C) or None for backward."""
    if grad is not None:
        ctx.save_for_backward(grad)
        ctx.z_dtype = z_dtype
    ctx.reduction = reduction
    if reduction == "none":
        return out
    total = out.sum()
    return total * (1.0 / n) if (reduction == "mean" and n) else total


def _compiled_forward(lib, z, y, alpha, k, s, weight, inv_t, inv_n, mixing, value_checks,
                      want_grad):
    """The forward through slam_bench.cpu_fused: (weighted rows (N,), grad (N, C) or None).
    Inputs go to the work dtype and contiguous first (no copy when they already are)."""
    wd = work_dtype(z.dtype)
    zc = z.to(wd).contiguous()
    yc = y.to(wd).contiguous()
    w = weight.to(wd).contiguous() if weight is not None else None
    kk = k if isinstance(k, int) else k.to(torch.int64).contiguous()
    a = alpha.contiguous() if mixing else None
    ss = s.contiguous() if mixing else None
    rows, grad, stats = cpu_fused.fused_rows(lib, zc, yc, a, ss, kk, w, inv_t, inv_n, mixing,
                                             value_checks, want_grad)
    if value_checks:
        checks.raise_loss_value_errors(stats, y.dtype)
    return rows, grad


def distinct(*ts):
    """The tensors `ts`, each one already given earlier in the list (e.g. one tensor as
    alpha and weight) replaced by a view of itself: torch.compile cannot trace one tensor given
    to two inputs of an autograd.Function. (Compared with `is`, never id(): Dynamo would guard
    the id on each new batch's tensor and compile again.)"""
    out = []
    for t in ts:
        if isinstance(t, Tensor) and any(t is u for u in out):
            t = t.view_as(t)
        out.append(t)
    return out


def refuse_create_graph(loss: str) -> None:
    """Call first in a backward whose gradient was computed in the forward: with
    create_graph=True (grad mode on in backward) that gradient has no graph, so a second-order
    term built on it would be silently wrong (it would miss d(grad)/dz). Raise instead."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"{loss}: second-order gradients (create_graph=True, double backward) are not "
            f"supported: the gradient is computed in the forward pass and carries no graph. "
            f"Use the plain PyTorch formula (slam_bench.reference) for higher-order terms.")


def apply_grad_output(grad: Tensor, grad_out: Tensor, reduction: str) -> Tensor:
    """dL/dz from a gradient computed in the forward for grad_output = 1: grad (N, C), scaled
    by grad_out (0-dim, or (N,) for reduction="none"). On CPU the check for 1 is free, and
    `loss.backward()` passes exactly 1: returning the saved buffer unscaled lets autograd
    adopt it as .grad with no N x C pass. On a GPU it multiplies (no host sync)."""
    g = grad_out.to(grad.dtype)
    # (While torch.compile traces, the test would be a data-dependent branch: always multiply.)
    if (grad.device.type == "cpu" and not torch.compiler.is_compiling()
            and bool((g == 1).all())):
        return grad
    return grad * (g[:, None] if reduction == "none" else g)


def slam_loss_torch(z: Tensor, y: Tensor, alpha: Union[float, Tensor], k: Union[int, Tensor], *,
                    normalize: bool, temperature: float, weight: Optional[Tensor],
                    reduction: str, mixing: bool = True, value_checks: bool = False) -> Tensor:
    """Checked inputs (see slam_bench.functional). z, y (N, C); returns float32/float64.
    value_checks: run the (N, C) value checks of checks.check_logits_and_probs inside the
    loss pass (the other arguments must be checked already); they raise before any result
    or gradient is returned."""
    n = z.shape[0]
    wd = work_dtype(z.dtype)
    a = torch.as_tensor(alpha, dtype=wd, device=z.device).expand(n).contiguous()
    if normalize:
        s = 1.0 / (torch.as_tensor(k, dtype=wd, device=z.device).expand(n) - 1.0)
    else:
        s = torch.ones(n, dtype=wd, device=z.device)
    z, y, a, k, s, weight = distinct(z, y, a, k, s, weight)
    return _SLaMFunction.apply(z, y, a, k, s, weight, float(temperature), reduction, mixing,
                               value_checks)
