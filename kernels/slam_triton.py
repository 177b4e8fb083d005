"""Triton kernels for the SLaM loss family (docs/method.md section 2) and their launchers.

Design note
-----------
The work's floor is reading z and y once and writing dL/dz once: 6 bytes per element with bf16
z and y (docs/kernels.md). The forward computes the gradient when autograd will need it (the
loss is a terminal reduction, so its upstream gradient is almost always 1) and the backward
only scales it, skipping the pass on the device when grad_output == 1.

Bytes per element moved by each path, bf16 z, y and dz (b_y bytes per teacher entry in general):
    path                                     forward      backward            total
    rows on chip (C <= MAX_SINGLE_BLOCK)     6            0 (go = 1) / 4      6 (the floor)
    streamed rows, SLaM, vanilla             10           0 / 4               10
    streamed rows, k = C or Taylor-CE        12           0 / 4               12
    forward only (evaluation), on chip or
      streamed SLaM / vanilla                4            -                   4
    forward only, streamed k = C or Taylor   6            -                   6
  (+) streamed SLaM rows whose mixed set (the top k and every entry tied at the threshold)
      does not fit the KCAP on-chip slots (config.STREAM_TOPK_*), a row's program only:
      - more than KCAP entries tied at the threshold, k <= KCAP: the slots still give the
        exact threshold; + 4 B (one more pass over z and y for the mixed terms): 14 B;
      - k > KCAP (a scalar k above 64, a per-row k above 16): the threshold by a radix select
        (threshold.kth_largest_radix, one pass over y per 8-bit digit: P = 2 for a bf16
        teacher, 3 fp16, 4 fp32), then the mixed-terms pass: + P b_y + 4 B: 18 B with bf16.
      tests/kernels/test_kernel_traffic.py counts these bytes in the interpreter.
  The default value checks (check_values=True) add nothing per element on any path: the pass
  that reads y (pass 1, or for k = C and Taylor-CE the terms pass; on chip the one load) also
  takes each row's min y, sum y and sum z * 0 (`_check_tile`) and writes them, 12 B per row
  (O(N)), which the host reduces to 4 numbers and reads with one copy. Checked path = the
  table's bytes + 12 B per row; check_values=False writes no stats (CHECK=False).
- Rows on chip: one program loads a tile of rows once, finds each row's top-k threshold in
  registers (threshold.kth_largest), and writes the loss and dz.
- A few streamed rows on a large GPU (N < 2 x SMs): kernels/split_rows.py splits each row over
  several programs (statistics per range, an exact combine per row, gradient per range).
- Streamed rows: pass 1 reads z and y once: the online row max and sum of exp, sum y and
  sum y (z - m) (relative to the running max), and the row's largest teacher entries with their
  logits in KCAP slots (threshold.topk_insert). Outside the mask log q = log alpha + log f, so
      loss = -(sum_j y_j log f_j + log alpha sum_j y_j)
             - sum_{j in M} y_j (log(c f_j + b) - log alpha - log f_j),
  and only the at most k (+ ties) mixed terms need f, which the final max and sum give at the
  end of pass 1. The gradient's row sum sum_j r_j = -sum_j y_j + b sum_{j in M} y_j / q_j comes
  from the same slots, so pass 2 reads z and y again and writes dz (for rows up to ~32k classes
  the re-read mostly hits L2: 132 SMs x a 128 KiB row pair fit the H200's 50 MB).
  With k = C every entry is mixed and with Taylor-CE every term needs f: pass 1 reads only z
  and one more pass over z and y computes the terms before the gradient pass.
- Backward: autograd hands grad_output (a scalar, or (N,) for reduction="none") on the device;
  `_scale_kernel` reads it per row tile and returns at once where it is 1, else scales dz in
  place: no host sync (CUDA-graph safe). The default writes dz into a new buffer (the logits
  stay intact); `overwrite_logits=True` writes it into the logits' own storage (Liger style),
  which is safe because every program reads its rows before writing them.
- Forward-only calls (no grad needed) skip the gradient: 4 B per element.
- Loads: the row strides and C enter the kernel divided by ALIGN (the largest power of two up
  to 16 dividing all of them) and are multiplied back inside, so Triton knows the row starts
  and the column limit are multiples of ALIGN and emits 16-byte vector loads under the mask
  (C = 1000 in bf16: 8 elements; before, any C not a multiple of 16 gave 2-byte loads).
  Streamed rows whose common stride is odd (C = 50257, 32001) peel a head of up to VEC - 1
  elements so that the unmasked body blocks start 16-byte aligned; one masked tail block ends
  the row. On-chip rows with an odd C use scalar loads.

Unchecked input (check_values=False): k is clamped to [1, C] on load; alpha enters only the
arithmetic; every address comes from the row and column masks, so whatever the parameters, no
kernel reads or writes outside its tensors (the result is then unspecified).

Numerics (as slam_bench/torch_backend.py): fp32 math after every load. Outside the top-k mask
(and everywhere when b = s (1 - alpha) = 0) q_j = alpha f_j, so log q_j = log alpha + log f_j
stays finite where f_j underflows; inside, q_j = c_j f_j + b >= min(alpha, b) > 0 with
c = alpha - b. The gradient uses r_j = -y_j c f_j / q_j (exactly -y_j outside the mask),
dz_j = go_i w_i (r_j - f_j sum_i r_i) / (T N_mean). The temperature multiplies (z - m), never
z, so shifted logits cancel exactly. Entries with y_j = 0 contribute nothing (selected away
before any product with log f, since 0 * -inf is NaN).
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import triton
import triton.language as tl

from . import config
from .config import BlockConfig, block_config, launch_layout
from .threshold import LOW_BIT, kth_largest, kth_largest_radix, topk_insert

# On chip, k up to this takes the distinct-value extraction (<= k rounds of two reductions);
# larger k the bit bisection (15-31 rounds of one reduction), cheaper past here.
EXTRACT_K = 16


@triton.jit
def _row_params(alpha_ptr, s_ptr, rows, row_ok, stride_a, stride_s):
    """Per-row b = s (1 - alpha), c = alpha - b and log alpha, fp32 (R,)."""
    a = tl.load(alpha_ptr + rows * stride_a, mask=row_ok, other=1.0).to(tl.float32)
    s = tl.load(s_ptr + rows * stride_s, mask=row_ok, other=1.0).to(tl.float32)
    b = s * (1.0 - a)
    return b, a - b, tl.log(a)


@triton.jit
def _load(z_ptr, y_ptr, z_off, y_off, valid, MASKED: tl.constexpr, LOAD_Y: tl.constexpr = True):
    """z (R, W) fp32 with padding -inf and y with padding 0 (all 0 without LOAD_Y: the
    caller does not read y); offsets (R, W) int64."""
    if MASKED:
        z = tl.load(z_ptr + z_off, mask=valid, other=0.0).to(tl.float32)
        z = tl.where(valid, z, float("-inf"))
    else:
        z = tl.load(z_ptr + z_off).to(tl.float32)
    if LOAD_Y:
        if MASKED:
            y = tl.load(y_ptr + y_off, mask=valid, other=0.0).to(tl.float32)
        else:
            y = tl.load(y_ptr + y_off).to(tl.float32)
    else:
        y = tl.zeros_like(z)
    return z, y


@triton.jit
def _terms(logf, f, y, b, c, log_a, t, MIXING: tl.constexpr, TAYLOR: tl.constexpr):
    """Per element: y_j log q_j (0 where y_j = 0; for Taylor-CE minus its series term) and
    r_j = f_j dloss/df_j. b, c, log_a, t (R,): row parameters and top-k threshold."""
    if TAYLOR > 0:
        # loss_j = y_j sum_{n<=t} (1 - f_j)^n / n, dloss/df_j = -y_j sum_{n<=t} (1 - f_j)^(n-1).
        u = 1.0 - f
        p = f * 0.0 + 1.0
        series = f * 0.0
        d_series = f * 0.0
        for n in tl.static_range(1, TAYLOR + 1):
            d_series += p
            p = p * u
            series += p / n
        return -(y * series), -(y * f * d_series)
    if MIXING:
        mixed = (y >= t[:, None]) & (y > 0) & (b[:, None] > 0)
        cf = c[:, None] * f
        q = tl.where(mixed, cf + b[:, None], 1.0)
        logq = tl.where(mixed, tl.log(q), log_a[:, None] + logf)
        r = tl.where(mixed, -y * cf / q, -y)
    else:
        logq = logf
        r = -y
    return y * tl.where(y > 0, logq, 0.0), r


@triton.jit
def _mixed_sums(z, y, m, log_l, b, c, log_a, t, inv_t):
    """Over the mixed entries (y >= t, y > 0, b > 0) of tiles z, y (R, W): the loss correction
    sum y (log q - log alpha - log f) and sum y b / q, each (R,)."""
    sel = (y >= t[:, None]) & (y > 0) & (b[:, None] > 0)
    # Unselected lanes (padding: z = -inf) get log f = -log l: no inf reaches the products.
    logf = (tl.where(sel, z, m[:, None]) - m[:, None]) * inv_t - log_l[:, None]
    q = tl.where(sel, c[:, None] * tl.exp(logf) + b[:, None], 1.0)
    corr = tl.sum(tl.where(sel, y * (tl.log(q) - log_a[:, None] - logf), 0.0), axis=1)
    return corr, tl.sum(tl.where(sel, y * b[:, None] / q, 0.0), axis=1)


@triton.jit
def _mixed_sums_row(z_ptr, y_ptr, z_row, y_row, row_ok, cols, n_cols, m, log_l, b, c, log_a, t,
                    inv_t):
    """`_mixed_sums` over whole streamed rows (R,), one more pass over z and y in tiles as
    wide as cols: the fallback when a row's mixed set did not fit its top-k slots."""
    corr = tl.zeros(m.shape, tl.float32)
    sbm = tl.zeros(m.shape, tl.float32)
    for start in range(0, n_cols, cols.shape[0]):
        valid = row_ok[:, None] & ((start + cols) < n_cols)[None, :]
        z, y = _load(z_ptr, y_ptr, z_row[:, None] + start + cols[None, :],
                     y_row[:, None] + start + cols[None, :], valid, True)
        dc, ds = _mixed_sums(z, y, m, log_l, b, c, log_a, t, inv_t)
        corr += dc
        sbm += ds
    return corr, sbm


@triton.jit
def _pass1_tile(z_ptr, y_ptr, z_off, y_off, valid, cols, m, se, sy, syz, buf_y, buf_z, dropped,
                ymin, znf, inv_t, MASKED: tl.constexpr, SUMS: tl.constexpr, TOPK: tl.constexpr,
                CHECK: tl.constexpr):
    """Pass 1 over one streamed tile (offsets (R, W)): online update of the row max m, the sum
    of exp((z - m) / T), (SUMS) sum y and sum y (z - m) relative to the running max, and
    (TOPK) the top slots; (CHECK, with SUMS) the value-check stats ymin and znf (`_check_tile`).
    One function per tile: the interpreter pays per nested call."""
    # With neither SUMS nor TOPK (k = C, Taylor-CE) pass 1 reads only z.
    z, y = _load(z_ptr, y_ptr, z_off, y_off, valid, MASKED, SUMS or TOPK)
    if CHECK and SUMS:
        ymin, znf = _check_tile(z, y, valid, ymin, znf, MASKED)
    m_new = tl.maximum(m, tl.max(z, axis=1))
    d = z - m_new[:, None]
    se = se * tl.exp((m - m_new) * inv_t) + tl.sum(tl.exp(d * inv_t), axis=1)
    if SUMS:
        # sy = 0 means nothing accumulated yet (m may still be -inf): no rescale.
        syz = syz - tl.where(sy > 0, m_new - m, 0.0) * sy
        syz += tl.sum(y * tl.where(y > 0, d, 0.0), axis=1)
        sy += tl.sum(y, axis=1)
    if TOPK:
        buf_y, buf_z, dropped = topk_insert(y, z, cols, buf_y, buf_z, dropped)
    return m_new, se, sy, syz, buf_y, buf_z, dropped, ymin, znf


@triton.jit
def _check_tile(z, y, valid, ymin, znf, MASKED: tl.constexpr):
    """The value checks' per-row numbers (slam_bench/checks.py), updated from a loaded tile:
    ymin, the row's smallest teacher entry, and znf, the row sum of z * 0, which is 0 when
    every logit is finite and NaN otherwise (inf * 0 is NaN, and NaN propagates through a sum
    whatever the hardware's min/max do with NaN). The teacher's row sum is the caller's sum y."""
    if MASKED:
        ymin = tl.minimum(ymin, tl.min(tl.where(valid, y, float("inf")), axis=1))
        znf += tl.sum(tl.where(valid, z * 0.0, 0.0), axis=1)
    else:
        ymin = tl.minimum(ymin, tl.min(y, axis=1))
        znf += tl.sum(z * 0.0, axis=1)
    return ymin, znf


@triton.jit
def _grad_tile(z_ptr, y_ptr, dz_ptr, z_off, y_off, dz_off, valid, m, log_l, b, c, log_a, t,
               sumr, gsc, inv_t, MASKED: tl.constexpr, MIXING: tl.constexpr,
               TAYLOR: tl.constexpr):
    """Pass 2 over one streamed tile: dz = gsc (r - f sum_r), gsc (R,) = go w / (T N_mean)."""
    z, y = _load(z_ptr, y_ptr, z_off, y_off, valid, MASKED)
    logf = (z - m[:, None]) * inv_t - log_l[:, None]
    f = tl.exp(logf)
    _, r = _terms(logf, f, y, b, c, log_a, t, MIXING, TAYLOR)
    dz = ((r - f * sumr[:, None]) * gsc[:, None]).to(dz_ptr.dtype.element_ty)
    if MASKED:
        tl.store(dz_ptr + dz_off, dz, mask=valid)
    else:
        tl.store(dz_ptr + dz_off, dz)


@triton.jit
def _store_stats(st_ptr, rows, row_ok, ymin, ysum, znf):
    """Row i's value-check numbers at st[i, 0:3]: min y, sum y, sum z * 0 (see _check_tile)."""
    tl.store(st_ptr + rows * 3, ymin, mask=row_ok)
    tl.store(st_ptr + rows * 3 + 1, ysum, mask=row_ok)
    tl.store(st_ptr + rows * 3 + 2, znf, mask=row_ok)


@triton.jit
def _slam_kernel(z_ptr, y_ptr, dz_ptr, alpha_ptr, s_ptr, k_ptr, gs_ptr, loss_ptr, st_ptr,
                 n_rows, nc_div, sz_div, sy_div, sdz_div, stride_a, stride_s, stride_k,
                 stride_gs, inv_t,
                 MIXING: tl.constexpr, ALL_MIXED: tl.constexpr, TAYLOR: tl.constexpr,
                 WRITE_GRAD: tl.constexpr, CHECK: tl.constexpr, SINGLE: tl.constexpr,
                 ROWS: tl.constexpr, BLOCK: tl.constexpr, ALIGN: tl.constexpr, PEEL: tl.constexpr,
                 VEC: tl.constexpr, KCAP: tl.constexpr, EXTRACT_K: tl.constexpr,
                 LOW_BIT: tl.constexpr):
    # Sizes arrive divided by ALIGN: multiplied back here, Triton knows their divisibility.
    n_cols = nc_div * ALIGN
    stride_z = sz_div * ALIGN
    stride_y = sy_div * ALIGN
    stride_dz = sdz_div * ALIGN
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)  # int64: N C >= 2**31
    row_ok = rows < n_rows
    z_row = rows * stride_z
    y_row = rows * stride_y
    dz_row = rows * stride_dz
    cols = tl.arange(0, BLOCK)
    if MIXING:
        b, c, log_a = _row_params(alpha_ptr, s_ptr, rows, row_ok, stride_a, stride_s)
        k = tl.load(k_ptr + rows * stride_k, mask=row_ok, other=0).to(tl.int32)
        # Unchecked input (check_values=False): k clamped to [1, C] (0 on padding rows).
        k = tl.where(row_ok, tl.minimum(tl.maximum(k, 1), n_cols), 0)
    else:
        b = tl.zeros([ROWS], tl.float32)
        c = b + 1.0
        log_a = b
        k = tl.zeros([ROWS], tl.int32)
    if WRITE_GRAD:
        gsc = tl.load(gs_ptr + rows * stride_gs, mask=row_ok, other=0.0).to(tl.float32) * inv_t

    if SINGLE:
        # The whole row tile on chip: read once, write once.
        valid = row_ok[:, None] & (cols < n_cols)[None, :]
        z, y = _load(z_ptr, y_ptr, z_row[:, None] + cols[None, :], y_row[:, None] + cols[None, :],
                     valid, True)
        if CHECK:
            ymin, znf = _check_tile(z, y, valid, tl.full([ROWS], float("inf"), tl.float32),
                                    tl.zeros([ROWS], tl.float32), True)
            _store_stats(st_ptr, rows, row_ok, ymin, tl.sum(y, axis=1), znf)
        m = tl.where(row_ok, tl.max(z, axis=1), 0.0)
        d = (z - m[:, None]) * inv_t  # z - m is exact for nearby values: shift-invariant
        e = tl.exp(d)
        se = tl.where(row_ok, tl.sum(e, axis=1), 1.0)
        log_l = tl.log(se)
        t = tl.zeros([ROWS], tl.float32)  # ALL_MIXED: every positive entry is in the mask
        if MIXING and not ALL_MIXED:
            t = kth_largest(y, k, EXTRACT_K, LOW_BIT)
        ylogq, r = _terms(d - log_l[:, None], e * (1.0 / se)[:, None], y, b, c, log_a, t,
                          MIXING, TAYLOR)
        tl.store(loss_ptr + rows, -tl.sum(ylogq, axis=1), mask=row_ok)
        if WRITE_GRAD:
            f = e * (1.0 / se)[:, None]
            dz = (r - f * tl.sum(r, axis=1)[:, None]) * gsc[:, None]
            tl.store(dz_ptr + dz_row[:, None] + cols[None, :], dz.to(dz_ptr.dtype.element_ty),
                     mask=valid)
    else:
        # One row per program (ROWS == 1), streamed in BLOCK-wide tiles: an optional masked
        # head of VEC lanes (PEEL: the strides are equal and odd, so the head brings the body
        # to a 16-byte boundary), unmasked body blocks, one masked tail.
        if PEEL:
            head = (VEC - (tl.program_id(0).to(tl.int64) * stride_z) % VEC) % VEC
        else:
            head = 0  # a constant: the body offsets keep their known divisibility
        n_full = (n_cols - head) // BLOCK
        tail = head + n_full * BLOCK
        hcols = tl.arange(0, VEC)
        hvalid = row_ok[:, None] & (hcols < head)[None, :]
        tvalid = row_ok[:, None] & ((tail + cols) < n_cols)[None, :]
        SUMS: tl.constexpr = TAYLOR == 0 and not ALL_MIXED
        TOPK: tl.constexpr = MIXING and not ALL_MIXED

        m = tl.full([ROWS], float("-inf"), tl.float32)
        se = tl.zeros([ROWS], tl.float32)
        sy = tl.zeros([ROWS], tl.float32)
        syz = tl.zeros([ROWS], tl.float32)
        buf_y = tl.zeros([ROWS, KCAP], tl.float32)
        buf_z = tl.zeros([ROWS, KCAP], tl.float32)
        dropped = tl.zeros([ROWS], tl.float32)
        ymin = tl.full([ROWS], float("inf"), tl.float32)
        znf = tl.zeros([ROWS], tl.float32)
        # Pass 1: statistics and the top slots.
        if head > 0:
            m, se, sy, syz, buf_y, buf_z, dropped, ymin, znf = _pass1_tile(
                z_ptr, y_ptr, z_row[:, None] + hcols[None, :], y_row[:, None] + hcols[None, :],
                hvalid, hcols, m, se, sy, syz, buf_y, buf_z, dropped, ymin, znf, inv_t, True, SUMS,
                TOPK, CHECK)
        for i in range(0, n_full):
            zo = z_row + head + i * BLOCK
            yo = y_row + head + i * BLOCK
            if PEEL:  # multiples of VEC by construction, which Triton cannot see by itself
                zo = tl.multiple_of(zo, VEC)
                yo = tl.multiple_of(yo, VEC)
            m, se, sy, syz, buf_y, buf_z, dropped, ymin, znf = _pass1_tile(
                z_ptr, y_ptr, zo[:, None] + cols[None, :], yo[:, None] + cols[None, :], tvalid,
                cols, m, se, sy, syz, buf_y, buf_z, dropped, ymin, znf, inv_t, False, SUMS,
                TOPK, CHECK)
        if tail < n_cols:
            m, se, sy, syz, buf_y, buf_z, dropped, ymin, znf = _pass1_tile(
                z_ptr, y_ptr, z_row[:, None] + tail + cols[None, :],
                y_row[:, None] + tail + cols[None, :], tvalid, cols, m, se, sy, syz, buf_y,
                buf_z, dropped, ymin, znf, inv_t, True, SUMS, TOPK, CHECK)
        log_l = tl.log(se)

        t = tl.zeros([ROWS], tl.float32)
        if SUMS:
            loss = sy * log_l - syz * inv_t  # -sum_j y_j ((z_j - m) / T - log l)
            sumr = -sy
            if TOPK:
                t = kth_largest(buf_y, k, EXTRACT_K, 0)
                if tl.max(((dropped > 0) & (dropped >= t)).to(tl.int32), axis=0) > 0:
                    # Rare: the mixed set did not fit the slots. With k <= KCAP the slots still
                    # hold the k largest values, so t is exact and only ties at t overflowed;
                    # with k > KCAP a radix select finds t from y. Then the mixed terms in
                    # one more pass over z and y.
                    if tl.max(k, axis=0) > KCAP:
                        t = kth_largest_radix(y_ptr, y_row, n_cols, k, cols, LOW_BIT)
                    corr, sbm = _mixed_sums_row(z_ptr, y_ptr, z_row, y_row, row_ok, cols,
                                                n_cols, m, log_l, b, c, log_a, t, inv_t)
                else:
                    corr, sbm = _mixed_sums(buf_z, buf_y, m, log_l, b, c, log_a, t, inv_t)
                loss -= log_a * sy + corr
                sumr += sbm
            if CHECK:
                _store_stats(st_ptr, rows, row_ok, ymin, sy, znf)
        else:
            # Every term needs f (Taylor-CE, or k = C: every entry mixed): a pass of its own.
            loss = tl.zeros([ROWS], tl.float32)
            sumr = tl.zeros([ROWS], tl.float32)
            for start in range(0, n_cols, BLOCK):
                valid = row_ok[:, None] & ((start + cols) < n_cols)[None, :]
                z, y = _load(z_ptr, y_ptr, z_row[:, None] + start + cols[None, :],
                             y_row[:, None] + start + cols[None, :], valid, True)
                logf = (z - m[:, None]) * inv_t - log_l[:, None]
                ylogq, r = _terms(logf, tl.exp(logf), y, b, c, log_a, t, MIXING, TAYLOR)
                loss -= tl.sum(ylogq, axis=1)
                sumr += tl.sum(r, axis=1)
                if CHECK:  # the pass that reads y: pass 1 read only z
                    ymin, znf = _check_tile(z, y, valid, ymin, znf, True)
                    sy += tl.sum(y, axis=1)
            if CHECK:
                _store_stats(st_ptr, rows, row_ok, ymin, sy, znf)
        tl.store(loss_ptr + rows, loss, mask=row_ok)

        if WRITE_GRAD:
            # Pass 2: the gradient, head / body / tail as in pass 1.
            if head > 0:
                _grad_tile(z_ptr, y_ptr, dz_ptr, z_row[:, None] + hcols[None, :],
                           y_row[:, None] + hcols[None, :], dz_row[:, None] + hcols[None, :],
                           hvalid, m, log_l, b, c, log_a, t, sumr, gsc, inv_t, True, MIXING,
                           TAYLOR)
            for i in range(0, n_full):
                zo = z_row + head + i * BLOCK
                yo = y_row + head + i * BLOCK
                do = dz_row + head + i * BLOCK
                if PEEL:
                    zo = tl.multiple_of(zo, VEC)
                    yo = tl.multiple_of(yo, VEC)
                    do = tl.multiple_of(do, VEC)
                _grad_tile(z_ptr, y_ptr, dz_ptr, zo[:, None] + cols[None, :],
                           yo[:, None] + cols[None, :], do[:, None] + cols[None, :], tvalid, m,
                           log_l, b, c, log_a, t, sumr, gsc, inv_t, False, MIXING, TAYLOR)
            if tail < n_cols:
                _grad_tile(z_ptr, y_ptr, dz_ptr, z_row[:, None] + tail + cols[None, :],
                           y_row[:, None] + tail + cols[None, :],
                           dz_row[:, None] + tail + cols[None, :], tvalid, m, log_l, b, c,
                           log_a, t, sumr, gsc, inv_t, True, MIXING, TAYLOR)


@triton.jit
def _scale_kernel(dz_ptr, out_ptr, go_ptr, n_rows, nc_div, sdz_div, sout_div, stride_go,
                  ROWS: tl.constexpr, BLOCK: tl.constexpr, ALIGN: tl.constexpr,
                  IN_PLACE: tl.constexpr):
    """out[i, :] = dz[i, :] go[i]. IN_PLACE (out is dz): row tiles whose go are all 1 return
    at once, having read only go."""
    n_cols = nc_div * ALIGN
    stride_dz = sdz_div * ALIGN
    stride_out = sout_div * ALIGN
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    g = tl.load(go_ptr + rows * stride_go, mask=row_ok, other=1.0).to(tl.float32)
    if IN_PLACE:
        todo = tl.max((g != 1.0).to(tl.int32), axis=0) > 0  # NaN != 1 too: NaN propagates
    else:
        todo = True
    if todo:
        cols = tl.arange(0, BLOCK)
        for start in range(0, n_cols, BLOCK):
            valid = row_ok[:, None] & ((start + cols) < n_cols)[None, :]
            dz = tl.load(dz_ptr + rows[:, None] * stride_dz + start + cols[None, :], mask=valid,
                         other=0.0).to(tl.float32)
            tl.store(out_ptr + rows[:, None] * stride_out + start + cols[None, :],
                     (dz * g[:, None]).to(out_ptr.dtype.element_ty), mask=valid)


def slam_launch(z: torch.Tensor, y: torch.Tensor, alpha: torch.Tensor, s: torch.Tensor,
                k: torch.Tensor, gscale: torch.Tensor, inv_t: float, mixing: bool,
                taylor_order: int, k_hint: int, dz: Optional[torch.Tensor],
                stats: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Launch the loss kernel. Returns the row losses (N,) fp32; writes dL/dz into `dz`
    unless it is None (forward only).

    z, y (N, C) with unit column stride (any row stride); alpha, s (N,) fp32 and k (N,) int32
    (any stride, 0 for a broadcast scalar); gscale (N,) fp32: each row's factor of dz (weight,
    1/N of "mean"), 1/T applied here; taylor_order > 0 selects Taylor-CE of that order
    (mixing must be False); k_hint: the scalar k, or 0 when k is a per-row tensor; dz (N, C)
    in z's dtype with unit column stride, or z itself (written in place, rows read first);
    stats None, or an (N, 3) fp32 contiguous tensor that receives each row's value-check
    numbers (min y, sum y, sum z * 0: `_check_tile`), from the loads the loss makes anyway."""
    n, c = z.shape
    loss = torch.empty(n, dtype=torch.float32, device=z.device)
    if n == 0:
        return loss
    cfg: BlockConfig = block_config(c)
    strides = [z.stride(0), y.stride(0)] + ([dz.stride(0)] if dz is not None else [])
    lay = launch_layout(c, strides, z.element_size(), cfg.single, k_hint)
    all_mixed = bool(mixing and k_hint >= c)
    if not cfg.single and taylor_order == 0 and not all_mixed:
        parts, span = config.split_parts(n, c, cfg.block, sm_count(z.device))
        if parts > 1:  # a few wide rows: each over several programs (kernels/split_rows.py)
            from .split_rows import split_launch
            return split_launch(z, y, alpha, s, k, gscale, inv_t, mixing, dz, stats, parts,
                                span, cfg.block, lay.align, lay.kcap, LOW_BIT[y.dtype],
                                cfg.num_warps)
    dz_arg = dz if dz is not None else z  # never written when WRITE_GRAD is False
    st_arg = stats if stats is not None else loss  # never written when CHECK is False
    grid = (triton.cdiv(n, cfg.rows),)
    _slam_kernel[grid](
        z, y, dz_arg, alpha, s, k, gscale, loss, st_arg, n, c // lay.align,
        z.stride(0) // lay.align, y.stride(0) // lay.align, dz_arg.stride(0) // lay.align,
        alpha.stride(0), s.stride(0), k.stride(0), gscale.stride(0), inv_t,
        MIXING=mixing, ALL_MIXED=all_mixed, TAYLOR=taylor_order,
        WRITE_GRAD=dz is not None, CHECK=stats is not None, SINGLE=cfg.single, ROWS=cfg.rows,
        BLOCK=cfg.block, ALIGN=lay.align, PEEL=lay.peel, VEC=lay.vec, KCAP=lay.kcap,
        EXTRACT_K=EXTRACT_K, LOW_BIT=LOW_BIT[y.dtype], num_warps=cfg.num_warps)
    return loss


def sm_count(device: torch.device):
    """The SM count that decides whether streamed rows are split: the CUDA device's own, or
    config.SM_COUNT_OVERRIDE where set (tests), or None (CPU: no split)."""
    if config.SM_COUNT_OVERRIDE is not None:
        return config.SM_COUNT_OVERRIDE
    if device.type != "cuda":
        return None
    return _cuda_sm_count(device.index if device.index is not None else torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def scale_launch(dz: torch.Tensor, go: torch.Tensor, out: Optional[torch.Tensor] = None) -> None:
    """out = dz go, or (out None) dz *= go in place, skipped on the device where go == 1.
    dz, out (N, C) with unit column stride; go a 0-dim tensor or (N,) (any stride), read on
    the device."""
    n, c = dz.shape
    if n == 0:
        return
    dst = dz if out is None else out
    cfg = block_config(c)
    lay = launch_layout(c, [dz.stride(0), dst.stride(0)], dz.element_size(), True, 0)
    go_rows = go.reshape(1).expand(n) if go.dim() == 0 else go
    _scale_kernel[(triton.cdiv(n, cfg.rows),)](
        dz, dst, go_rows, n, c // lay.align, dz.stride(0) // lay.align,
        dst.stride(0) // lay.align, go_rows.stride(0), ROWS=cfg.rows, BLOCK=cfg.block,
        ALIGN=lay.align, IN_PLACE=out is None, num_warps=cfg.num_warps)
