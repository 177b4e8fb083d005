"""Streamed rows split over several programs, for a few wide rows (small N, large C).

Why: a streamed row (C > config.MAX_SINGLE_BLOCK) gets one program of its own, so N rows keep
N SMs busy; at N = 8 and C = 128k an H100 would run 8 of its 132 SMs while the rest idle. When
N is below config.SPLIT_ROWS_PER_SM x the SM count, each row is cut into P column ranges (whole
STREAM_BLOCK tiles each, `config.split_parts`) and three launches replace the one:

1. `_split_stats_kernel`, grid (N, P): pass 1 of `slam_triton._slam_kernel` over one range (the
   same `_pass1_tile`): the range's max m_p, sum of exp((z - m_p) / T), sum y, sum y (z - m_p),
   its top-KCAP teacher entries with their logits and the largest entry it dropped, and the
   value-check numbers; written to a small workspace (N x P x (8 + 2 KCAP) fp32).
2. `_split_combine_kernel`, grid (N,): merges a row's P partials exactly (the max; the sums
   rescaled to it), finds the top-k threshold among the P x KCAP merged slots, and writes the
   row's loss, value-check numbers and (m, log l, t, sum r) for the gradient. A range that
   dropped an entry at or above the threshold (ties, or k > KCAP) sends the row to the unsplit
   kernel's fallback: a radix select over y for k > KCAP, then one pass over z and y for the
   mixed terms, in this row's single program (rare, as in the unsplit kernel).
3. `_split_grad_kernel`, grid (N, P): pass 2 (`_grad_tile`) over one range.

Bytes per element are the unsplit streamed path's (10 B with bf16: pass 1 reads z and y,
pass 2 reads them again and writes dz) plus O(N P KCAP) for the workspace. Register use per
program is the streamed kernel's pass 1 or pass 2 alone, never both (codegen reports each).
Only the paths whose pass 1 yields the loss (SLaM with k < C, distillation) are split: k = C
and Taylor-CE need a terms pass after the statistics and stay unsplit.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .threshold import kth_largest, kth_largest_radix
from .slam_triton import (EXTRACT_K, _grad_tile, _mixed_sums, _mixed_sums_row, _pass1_tile,
                          _row_params, _store_stats)

# Floats per (row, part) in the statistics workspace: m, sum exp, sum y, sum y (z - m), the
# largest dropped entry, min y, sum z * 0, and one pad to keep rows 32-byte aligned.
STATS = 8
# Floats per row handed from the combine step to the gradient pass: m, log l, t, sum r.
ROW_STATE = 4


@triton.jit
def _range(n_cols, span_div, BLOCK: tl.constexpr):
    """This program's row (1,) and column range [start, end): whole BLOCK tiles from `start`
    (n_full of them, unmasked) and a masked tail from `tail` (tvalid (1, BLOCK) its lanes)."""
    rows = tl.program_id(0).to(tl.int64) + tl.arange(0, 1)
    row_ok = rows >= 0
    start = tl.program_id(1).to(tl.int64) * (span_div * BLOCK)
    end = tl.minimum(start + span_div * BLOCK, n_cols)
    n_full = (end - start) // BLOCK
    tail = start + n_full * BLOCK
    cols = tl.arange(0, BLOCK)
    tvalid = row_ok[:, None] & ((tail + cols) < end)[None, :]
    return rows, row_ok, start, end, n_full, tail, cols, tvalid


@triton.jit
def _split_stats_kernel(z_ptr, y_ptr, ps_ptr, py_ptr, pz_ptr, nc_div, sz_div, sy_div, span_div,
                        inv_t, SUMS_ONLY: tl.constexpr, TOPK: tl.constexpr, CHECK: tl.constexpr,
                        BLOCK: tl.constexpr, ALIGN: tl.constexpr, KCAP: tl.constexpr):
    n_cols = nc_div * ALIGN
    stride_z = sz_div * ALIGN
    stride_y = sy_div * ALIGN
    rows, row_ok, start, end, n_full, tail, cols, tvalid = _range(n_cols, span_div, BLOCK)
    n_parts = tl.num_programs(1)
    part = tl.program_id(1)
    z_row = rows * stride_z
    y_row = rows * stride_y

    m = tl.full([1], float("-inf"), tl.float32)
    se = tl.zeros([1], tl.float32)
    sy = tl.zeros([1], tl.float32)
    syz = tl.zeros([1], tl.float32)
    buf_y = tl.zeros([1, KCAP], tl.float32)
    buf_z = tl.zeros([1, KCAP], tl.float32)
    dropped = tl.zeros([1], tl.float32)
    ymin = tl.full([1], float("inf"), tl.float32)
    znf = tl.zeros([1], tl.float32)
    for i in range(0, n_full):
        zo = z_row + start + i * BLOCK
        yo = y_row + start + i * BLOCK
        m, se, sy, syz, buf_y, buf_z, dropped, ymin, znf = _pass1_tile(
            z_ptr, y_ptr, zo[:, None] + cols[None, :], yo[:, None] + cols[None, :], tvalid, cols,
            m, se, sy, syz, buf_y, buf_z, dropped, ymin, znf, inv_t, False, SUMS_ONLY, TOPK,
            CHECK)
    if tail < end:
        m, se, sy, syz, buf_y, buf_z, dropped, ymin, znf = _pass1_tile(
            z_ptr, y_ptr, z_row[:, None] + tail + cols[None, :],
            y_row[:, None] + tail + cols[None, :], tvalid, cols, m, se, sy, syz, buf_y, buf_z,
            dropped, ymin, znf, inv_t, True, SUMS_ONLY, TOPK, CHECK)
    slot = rows * n_parts + part  # (1,)
    base = ps_ptr + slot * 8
    tl.store(base, m)
    tl.store(base + 1, se)
    tl.store(base + 2, sy)
    tl.store(base + 3, syz)
    tl.store(base + 4, dropped)
    tl.store(base + 5, ymin)
    tl.store(base + 6, znf)
    if TOPK:
        kcols = tl.arange(0, KCAP)
        off = slot[:, None] * KCAP + kcols[None, :]
        tl.store(py_ptr + off, buf_y)
        tl.store(pz_ptr + off, buf_z)


@triton.jit
def _split_combine_kernel(y_ptr, z_ptr, ps_ptr, py_ptr, pz_ptr, rs_ptr, alpha_ptr, s_ptr, k_ptr,
                          loss_ptr, st_ptr, n_parts, nc_div, sz_div, sy_div, stride_a, stride_s,
                          stride_k, inv_t, MIXING: tl.constexpr, CHECK: tl.constexpr,
                          P2: tl.constexpr, BLOCK: tl.constexpr, ALIGN: tl.constexpr,
                          KCAP: tl.constexpr, EXTRACT_K_: tl.constexpr, LOW_BIT: tl.constexpr):
    n_cols = nc_div * ALIGN
    stride_z = sz_div * ALIGN
    stride_y = sy_div * ALIGN
    rows = tl.program_id(0).to(tl.int64) + tl.arange(0, 1)
    row_ok = rows >= 0
    parts = tl.arange(0, P2)
    pok = row_ok[:, None] & (parts < n_parts)[None, :]
    base = ps_ptr + (rows[:, None] * n_parts + parts[None, :]) * 8  # (1, P2)
    pm = tl.load(base, mask=pok, other=float("-inf"))
    pse = tl.load(base + 1, mask=pok, other=0.0)
    psy = tl.load(base + 2, mask=pok, other=0.0)
    psyz = tl.load(base + 3, mask=pok, other=0.0)
    # The exact merge: each range's sums were taken relative to its own max m_p.
    m = tl.max(pm, axis=1)
    se = tl.sum(tl.where(pok, pse * tl.exp((pm - m[:, None]) * inv_t), 0.0), axis=1)
    sy = tl.sum(psy, axis=1)
    # sum y (z - m) = sum_p (sum y (z - m_p) - sum y_p (m - m_p)); a range with no teacher mass
    # (sum y_p = 0) adds nothing, whatever its max.
    syz = tl.sum(psyz - tl.where(psy > 0, m[:, None] - pm, 0.0) * psy, axis=1)
    log_l = tl.log(se)
    loss = sy * log_l - syz * inv_t
    sumr = -sy
    t = tl.zeros([1], tl.float32)
    if MIXING:
        b, c, log_a = _row_params(alpha_ptr, s_ptr, rows, row_ok, stride_a, stride_s)
        k = tl.load(k_ptr + rows * stride_k).to(tl.int32)
        k = tl.minimum(tl.maximum(k, 1), n_cols)  # unchecked input: k clamped to [1, C]
        kcols = tl.arange(0, P2 * KCAP)
        kok = row_ok[:, None] & (kcols < n_parts * KCAP)[None, :]
        koff = rows[:, None] * (n_parts * KCAP) + kcols[None, :]
        buf_y = tl.load(py_ptr + koff, mask=kok, other=0.0)
        buf_z = tl.load(pz_ptr + koff, mask=kok, other=0.0)
        dropped = tl.max(tl.load(base + 4, mask=pok, other=0.0), axis=1)
        t = kth_largest(buf_y, k, EXTRACT_K_, 0)
        if tl.max(((dropped > 0) & (dropped >= t)).to(tl.int32), axis=0) > 0:
            # A range dropped an entry at or above the threshold: as the unsplit kernel does,
            # the threshold from y itself when k > KCAP, then the mixed terms in a pass over
            # the whole row (this row's program only).
            y_row = rows * stride_y
            z_row = rows * stride_z
            cols = tl.arange(0, BLOCK)
            if tl.max(k, axis=0) > KCAP:
                t = kth_largest_radix(y_ptr, y_row, n_cols, k, cols, LOW_BIT)
            corr, sbm = _mixed_sums_row(z_ptr, y_ptr, z_row, y_row, row_ok, cols, n_cols, m,
                                        log_l, b, c, log_a, t, inv_t)
        else:
            corr, sbm = _mixed_sums(buf_z, buf_y, m, log_l, b, c, log_a, t, inv_t)
        loss -= log_a * sy + corr
        sumr += sbm
    tl.store(loss_ptr + rows, loss)
    tl.store(rs_ptr + rows * 4, m)
    tl.store(rs_ptr + rows * 4 + 1, log_l)
    tl.store(rs_ptr + rows * 4 + 2, t)
    tl.store(rs_ptr + rows * 4 + 3, sumr)
    if CHECK:
        ymin = tl.min(tl.load(base + 5, mask=pok, other=float("inf")), axis=1)
        znf = tl.sum(tl.load(base + 6, mask=pok, other=0.0), axis=1)
        _store_stats(st_ptr, rows, row_ok, ymin, sy, znf)


@triton.jit
def _split_grad_kernel(z_ptr, y_ptr, dz_ptr, rs_ptr, alpha_ptr, s_ptr, gs_ptr, nc_div, sz_div,
                       sy_div, sdz_div, span_div, stride_a, stride_s, stride_gs, inv_t,
                       MIXING: tl.constexpr, BLOCK: tl.constexpr, ALIGN: tl.constexpr):
    n_cols = nc_div * ALIGN
    stride_z = sz_div * ALIGN
    stride_y = sy_div * ALIGN
    stride_dz = sdz_div * ALIGN
    rows, row_ok, start, end, n_full, tail, cols, tvalid = _range(n_cols, span_div, BLOCK)
    z_row = rows * stride_z
    y_row = rows * stride_y
    dz_row = rows * stride_dz
    m = tl.load(rs_ptr + rows * 4)
    log_l = tl.load(rs_ptr + rows * 4 + 1)
    t = tl.load(rs_ptr + rows * 4 + 2)
    sumr = tl.load(rs_ptr + rows * 4 + 3)
    if MIXING:
        b, c, log_a = _row_params(alpha_ptr, s_ptr, rows, row_ok, stride_a, stride_s)
    else:
        b = tl.zeros([1], tl.float32)
        c = b + 1.0
        log_a = b
    gsc = tl.load(gs_ptr + rows * stride_gs).to(tl.float32) * inv_t
    for i in range(0, n_full):
        off = start + i * BLOCK
        _grad_tile(z_ptr, y_ptr, dz_ptr, (z_row + off)[:, None] + cols[None, :],
                   (y_row + off)[:, None] + cols[None, :], (dz_row + off)[:, None] + cols[None, :],
                   tvalid, m, log_l, b, c, log_a, t, sumr, gsc, inv_t, False, MIXING, 0)
    if tail < end:
        _grad_tile(z_ptr, y_ptr, dz_ptr, z_row[:, None] + tail + cols[None, :],
                   y_row[:, None] + tail + cols[None, :], dz_row[:, None] + tail + cols[None, :],
                   tvalid, m, log_l, b, c, log_a, t, sumr, gsc, inv_t, True, MIXING, 0)


def split_launch(z: torch.Tensor, y: torch.Tensor, alpha: torch.Tensor, s: torch.Tensor,
                 k: torch.Tensor, gscale: torch.Tensor, inv_t: float, mixing: bool,
                 dz, stats, parts: int, span_blocks: int, block: int, align: int, kcap: int,
                 low_bit: int, num_warps: int) -> torch.Tensor:
    """The three launches for rows split into `parts` ranges of `span_blocks` tiles of `block`
    columns (config.split_parts); arguments and result as slam_triton.slam_launch (the caller
    checked that this path applies: a streamed row, k < C, no Taylor-CE). Returns the row
    losses (N,) fp32."""
    n, c = z.shape
    dev = z.device
    loss = torch.empty(n, dtype=torch.float32, device=dev)
    ps = torch.empty(n * parts * STATS, dtype=torch.float32, device=dev)
    pyz = torch.empty(2, n * parts * kcap if mixing else 1, dtype=torch.float32, device=dev)
    rs = torch.empty(n * ROW_STATE, dtype=torch.float32, device=dev)
    st_arg = stats if stats is not None else loss  # never written when CHECK is False
    _split_stats_kernel[(n, parts)](
        z, y, ps, pyz[0], pyz[1], c // align, z.stride(0) // align, y.stride(0) // align,
        span_blocks, inv_t, SUMS_ONLY=True, TOPK=mixing, CHECK=stats is not None, BLOCK=block,
        ALIGN=align, KCAP=kcap, num_warps=num_warps)
    _split_combine_kernel[(n,)](
        y, z, ps, pyz[0], pyz[1], rs, alpha, s, k, loss, st_arg, parts, c // align,
        z.stride(0) // align, y.stride(0) // align, alpha.stride(0), s.stride(0), k.stride(0),
        inv_t, MIXING=mixing, CHECK=stats is not None, P2=triton.next_power_of_2(parts),
        BLOCK=block, ALIGN=align, KCAP=kcap, EXTRACT_K_=EXTRACT_K, LOW_BIT=low_bit,
        num_warps=num_warps)  # its rare fallback streams BLOCK-wide tiles like pass 1
    if dz is not None:
        _split_grad_kernel[(n, parts)](
            z, y, dz, rs, alpha, s, gscale, c // align, z.stride(0) // align,
            y.stride(0) // align, dz.stride(0) // align, span_blocks, alpha.stride(0),
            s.stride(0), gscale.stride(0), inv_t, MIXING=mixing, BLOCK=block, ALIGN=align,
            num_warps=num_warps)
    return loss
