"""Triton kernels for the SLaM loss family (spec/slam.md section 2) and their launchers.

Design note
-----------
Choice: the forward saves per-row fp32 statistics and a backward kernel recomputes the
softmax, instead of computing the gradient in the forward (Liger style).

- Forward: per row, the loss and three fp32 statistics: the row max m of z, log l with
  l = sum_j exp((z_j - m) / T), and sum_r = sum_j r_j (r_j = f_j dloss/df_j, see below).
  Saved for backward: references to z and y (no copy), the (3, N) statistics (12 bytes a
  row), and the (N,) alpha, s and top-k threshold vectors (stride-0 views for scalars).
  m and log l are kept apart rather than as lse = m / T + log l: at |z| ~ 1e3, rounding lse
  costs 3e-5 absolute in every log f_j; (z_j - m) is exact for nearby values.
- Backward: one pass over the row: reads z and y, writes dz = go_i (r - f sum_r) / T once,
  in the logits' dtype; the per-row upstream gradient go_i (where the weights and the
  reduction's 1/N arrive, as a stride-0 view for mean/sum) is read from device memory.
- Passes over memory (bytes per element with bf16 z and y; floor 6 = read z, y, write dz):
    * C <= MAX_SINGLE_BLOCK (row kept on chip): forward 1 read of z and y (4 B), backward
      1 read of z and y + 1 write of dz (6 B): 10 B in all.
    * wider rows, SLaM (MIXING): forward pass 1 streams z (online max / sum of exp), pass 2
      streams z and y (the mixed entries need f, hence the final log l): 6 B; backward 6 B:
      12 B in all (pass 2's re-read of z mostly hits L2).
    * wider rows, vanilla (MIXING=False): the loss is linear in log f, so one online pass over
      z and y computes it (4 B); backward 6 B: 10 B in all.
    * Taylor-CE (TAYLOR = order t > 0, Feng et al. 2020, spec/slam.md section 4) is the same
      family with another per-element function of (f_j, y_j); like SLaM it needs f, so wide
      rows take the two-pass forward.
  Liger style (gradient written in the forward) needs the row sum of r before any gradient
  element, so streamed rows take 3 passes (2 + 4 + 6 B), and the backward must still multiply
  the saved gradient by grad_output (+4 B: skipping it needs a host-side `grad_output == 1`
  test, a sync that CUDA graphs forbid): 10 B on chip, 16 B streamed. The recompute design
  moves no more bytes, fewer for wide rows, and: forward-only calls (evaluation) never touch
  an N x C output; the only N x C allocation is the returned gradient (peak extra memory: one
  gradient buffer); grad_output is folded into the single gradient write. Reaching the 6 B
  floor would need grad_output known in the forward, which autograd does not offer.

Numerics (as slam_bench/torch_backend.py): fp32 math after every load. Outside the top-k mask
(and everywhere when b = s (1 - alpha) = 0) q_j = alpha f_j, so log q_j = log alpha + log f_j
stays finite where f_j underflows; inside, q_j = c_j f_j + b >= min(alpha, b) > 0 with
c_j = alpha - b. The gradient uses r_j = -y_j c_j f_j / q_j (exactly -y_j outside the mask),
dz_j = (r_j - f_j sum_i r_i) / T. The temperature multiplies (z - m), never z, so shifted
logits cancel exactly. Vanilla streaming accumulates sum y and sum y (z - m) relative to the
running max m, rescaled as m moves.

Top-k mask: m_j = y_j >= thresh_i with thresh_i the k-th largest y of row i, computed by the
caller (kernels/ops.py) before the launch; both kernels only compare against it.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .config import block_config


@triton.jit
def _row_params(alpha_ptr, s_ptr, th_ptr, rows64, row_ok, stride_a, stride_s, stride_th):
    """Per-row alpha, b = s (1 - alpha), c = alpha - b, log alpha and threshold, fp32 (ROWS,)."""
    a = tl.load(alpha_ptr + rows64 * stride_a, mask=row_ok, other=1.0).to(tl.float32)
    s = tl.load(s_ptr + rows64 * stride_s, mask=row_ok, other=1.0).to(tl.float32)
    th = tl.load(th_ptr + rows64 * stride_th, mask=row_ok, other=0.0).to(tl.float32)
    b = s * (1.0 - a)
    return b, a - b, tl.log(a), th


@triton.jit
def _load_tile(z_ptr, y_ptr, rows64, row_ok, cols, n_cols, stride_z, stride_y):
    """Raw logits z (padding -inf) and y (padding 0), fp32 (ROWS, BLOCK), and the valid mask."""
    valid = row_ok[:, None] & (cols[None, :] < n_cols)
    z = tl.load(z_ptr + rows64[:, None] * stride_z + cols[None, :], mask=valid, other=0.0)
    y = tl.load(y_ptr + rows64[:, None] * stride_y + cols[None, :], mask=valid, other=0.0)
    z = tl.where(valid, z.to(tl.float32), float("-inf"))
    return z, tl.where(valid, y.to(tl.float32), 0.0), valid


@triton.jit
def _mix_terms(logf, y, valid, b, c, log_a, th, MIXING: tl.constexpr, TAYLOR: tl.constexpr):
    """Per element: -loss_j (y_j log q_j, 0 where y_j = 0), r_j = f_j dloss/df_j, and f_j."""
    f = tl.exp(logf)
    if TAYLOR > 0:
        # Taylor-CE of order TAYLOR: loss_j = y_j sum_{n<=t} (1 - f_j)^n / n, hence
        # dloss/df_j = -y_j sum_{n<=t} (1 - f_j)^(n-1). Padding has f = 0, y = 0: terms 0.
        u = 1.0 - f
        p = f * 0.0 + 1.0
        series = f * 0.0
        d_series = f * 0.0
        for n in tl.static_range(1, TAYLOR + 1):
            d_series += p
            p = p * u
            series += p / n
        neg_loss = -(y * series)
        r = -(y * f * d_series)
    else:
        if MIXING:
            mixed = valid & (y >= th[:, None]) & (b[:, None] > 0)
            cf = c[:, None] * f
            q = tl.where(mixed, cf + b[:, None], 1.0)
            logq = tl.where(mixed, tl.log(q), log_a[:, None] + logf)
            r = tl.where(mixed, -y * cf / q, -y)
        else:
            logq = logf
            r = -y
        # Select before multiplying: 0 * -inf (padding, underflow) would be NaN.
        neg_loss = y * tl.where(y > 0, logq, 0.0)
    return neg_loss, r, f


@triton.jit
def _no_mix_params(ROWS: tl.constexpr):
    b = tl.zeros([ROWS], tl.float32)
    return b, b + 1.0, b, b


@triton.jit
def _slam_fwd_kernel(z_ptr, y_ptr, alpha_ptr, s_ptr, th_ptr, loss_ptr, stats_ptr,
                     n_rows, n_cols, stride_z, stride_y, stride_a, stride_s, stride_th, inv_t,
                     MIXING: tl.constexpr, TAYLOR: tl.constexpr, TWO_PASS: tl.constexpr,
                     ROWS: tl.constexpr, BLOCK: tl.constexpr, SINGLE: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)  # row offsets in int64: N x C may exceed 2**31
    cols = tl.arange(0, BLOCK)
    if MIXING:
        b, c, log_a, th = _row_params(alpha_ptr, s_ptr, th_ptr, rows64, row_ok,
                                      stride_a, stride_s, stride_th)
    else:
        b, c, log_a, th = _no_mix_params(ROWS)
    if SINGLE:
        z, y, valid = _load_tile(z_ptr, y_ptr, rows64, row_ok, cols, n_cols, stride_z, stride_y)
        m = tl.where(row_ok, tl.max(z, axis=1), 0.0)
        d = (z - m[:, None]) * inv_t  # z - m is exact for nearby values: shift-invariant
        log_l = tl.log(tl.where(row_ok, tl.sum(tl.exp(d), axis=1), 1.0))
        logf = d - log_l[:, None]
        ylogq, r, f = _mix_terms(logf, y, valid, b, c, log_a, th, MIXING, TAYLOR)
        loss = -tl.sum(ylogq, axis=1)
        sumr = tl.sum(r, axis=1)
    else:
        m = tl.full([ROWS], float("-inf"), tl.float32)
        sum_e = tl.zeros([ROWS], tl.float32)  # sum of exp((z - m) / T)
        sy = tl.zeros([ROWS], tl.float32)
        syz = tl.zeros([ROWS], tl.float32)  # sum_j y_j (z_j - m), relative to the running max
        for start in range(0, n_cols, BLOCK):
            z, y, valid = _load_tile(z_ptr, y_ptr, rows64, row_ok, start + cols, n_cols,
                                     stride_z, stride_y)
            m_new = tl.where(row_ok, tl.maximum(m, tl.max(z, axis=1)), 0.0)
            d = z - m_new[:, None]
            sum_e = sum_e * tl.exp((m - m_new) * inv_t) + tl.sum(tl.exp(d * inv_t), axis=1)
            if not TWO_PASS:
                # sy = 0 means nothing accumulated yet (m may still be -inf): no rescale.
                syz = syz - tl.where(sy > 0, m_new - m, 0.0) * sy
                syz += tl.sum(y * tl.where(y > 0, d, 0.0), axis=1)
                sy += tl.sum(y, axis=1)
            m = m_new
        log_l = tl.log(tl.where(row_ok, sum_e, 1.0))
        if TWO_PASS:
            loss = tl.zeros([ROWS], tl.float32)
            sumr = tl.zeros([ROWS], tl.float32)
            for start in range(0, n_cols, BLOCK):
                z, y, valid = _load_tile(z_ptr, y_ptr, rows64, row_ok, start + cols, n_cols,
                                         stride_z, stride_y)
                logf = (z - m[:, None]) * inv_t - log_l[:, None]
                ylogq, r, f = _mix_terms(logf, y, valid, b, c, log_a, th, MIXING, TAYLOR)
                loss -= tl.sum(ylogq, axis=1)
                sumr += tl.sum(r, axis=1)
        else:
            loss = sy * log_l - syz * inv_t  # -sum_j y_j ((z_j - m) / T - log l)
            sumr = -sy
    tl.store(loss_ptr + rows64, loss, mask=row_ok)
    tl.store(stats_ptr + rows64, m, mask=row_ok)
    tl.store(stats_ptr + n_rows + rows64, log_l, mask=row_ok)
    tl.store(stats_ptr + 2 * n_rows + rows64, sumr, mask=row_ok)


@triton.jit
def _slam_bwd_kernel(z_ptr, y_ptr, alpha_ptr, s_ptr, th_ptr, stats_ptr, go_ptr, dz_ptr,
                     n_rows, n_cols, stride_z, stride_y, stride_dz, stride_a, stride_s,
                     stride_th, stride_go, inv_t, MIXING: tl.constexpr, TAYLOR: tl.constexpr,
                     ROWS: tl.constexpr, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    cols = tl.arange(0, BLOCK)
    if MIXING:
        b, c, log_a, th = _row_params(alpha_ptr, s_ptr, th_ptr, rows64, row_ok,
                                      stride_a, stride_s, stride_th)
    else:
        b, c, log_a, th = _no_mix_params(ROWS)
    m = tl.load(stats_ptr + rows64, mask=row_ok, other=0.0)
    log_l = tl.load(stats_ptr + n_rows + rows64, mask=row_ok, other=0.0)
    sumr = tl.load(stats_ptr + 2 * n_rows + rows64, mask=row_ok, other=0.0)
    # Upstream gradient per row (stride 0 for a broadcast scalar): read on device, no sync.
    scale = tl.load(go_ptr + rows64 * stride_go, mask=row_ok, other=0.0).to(tl.float32) * inv_t
    for start in range(0, n_cols, BLOCK):
        z, y, valid = _load_tile(z_ptr, y_ptr, rows64, row_ok, start + cols, n_cols,
                                 stride_z, stride_y)
        logf = (z - m[:, None]) * inv_t - log_l[:, None]
        ylogq, r, f = _mix_terms(logf, y, valid, b, c, log_a, th, MIXING, TAYLOR)
        dz = (r - f * sumr[:, None]) * scale[:, None]
        tl.store(dz_ptr + rows64[:, None] * stride_dz + (start + cols)[None, :],
                 dz.to(dz_ptr.dtype.element_ty), mask=valid)


def slam_forward(z: torch.Tensor, y: torch.Tensor, alpha: torch.Tensor, s: torch.Tensor,
                 thresh: torch.Tensor, inv_t: float, mixing: bool, taylor_order: int = 0):
    """Launch the forward. z, y (N, C) with unit column stride; alpha, s, thresh (N,) fp32
    (any row stride, 0 for a broadcast scalar); taylor_order > 0 selects Taylor-CE of that
    order instead of the log loss (mixing must then be False). Returns the row losses (N,)
    fp32 and the statistics (3, N) fp32 the backward needs: row max m of z,
    log sum_j exp((z_j - m) / T) and sum_r."""
    n, c = z.shape
    loss = torch.empty(n, dtype=torch.float32, device=z.device)
    stats = torch.empty((3, n), dtype=torch.float32, device=z.device)
    if n == 0:
        return loss, stats
    cfg = block_config(c)
    grid = (triton.cdiv(n, cfg.rows),)
    _slam_fwd_kernel[grid](
        z, y, alpha, s, thresh, loss, stats, n, c, z.stride(0), y.stride(0),
        alpha.stride(0), s.stride(0), thresh.stride(0), inv_t,
        MIXING=mixing, TAYLOR=taylor_order, TWO_PASS=mixing or taylor_order > 0,
        ROWS=cfg.rows, BLOCK=cfg.block, SINGLE=cfg.single, num_warps=cfg.num_warps)
    return loss, stats


def slam_backward(grad_rows: torch.Tensor, z: torch.Tensor, y: torch.Tensor, alpha: torch.Tensor,
                  s: torch.Tensor, thresh: torch.Tensor, stats: torch.Tensor, inv_t: float,
                  mixing: bool, taylor_order: int = 0) -> torch.Tensor:
    """Launch the backward: dL/dz (N, C) contiguous, z's dtype, for the upstream gradient
    grad_rows (N,) of the per-row losses (any row stride). Other arguments as the forward's."""
    n, c = z.shape
    dz = torch.empty((n, c), dtype=z.dtype, device=z.device)
    if n == 0:
        return dz
    # The forward streams only when the row does not fit; the backward is one pass either way.
    cfg = block_config(c)
    grid = (triton.cdiv(n, cfg.rows),)
    _slam_bwd_kernel[grid](
        z, y, alpha, s, thresh, stats, grad_rows, dz, n, c, z.stride(0), y.stride(0),
        dz.stride(0), alpha.stride(0), s.stride(0), thresh.stride(0), grad_rows.stride(0), inv_t,
        MIXING=mixing, TAYLOR=taylor_order, ROWS=cfg.rows, BLOCK=cfg.block,
        num_warps=cfg.num_warps)
    return dz
