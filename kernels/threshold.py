"""Per-row k-th largest teacher value (the top-k mask threshold) by bisection on float bits.

For non-negative floats the IEEE-754 bit patterns, read as int32, sort like the values. The
threshold is the largest t with count(y >= t) >= k: exactly the k-th largest value, so
`y >= t` keeps every entry tied with it. Built greedily from the most significant bit: 31
counting passes over the row. A row that fits one block is loaded once and the passes run
on chip; a streamed row is re-read per pass (from L2 for all but the largest rows).

Why not torch: `torch.topk` needs one k for all rows (a per-row k tensor would need
max(k) on the host, a sync), and `torch.sort` + gather allocates N x C values plus int64
indices, five gradient buffers' worth in bf16. This kernel allocates only the (N,) result.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .config import block_config


@triton.jit
def _count_at_least(y_ptr, rows64, row_ok, cols, n_cols, stride_y, cand, y_bits,
                    SINGLE: tl.constexpr, BLOCK: tl.constexpr):
    """(ROWS,) int32: how many entries of each row have bits >= cand."""
    if SINGLE:
        cnt = tl.sum((y_bits >= cand[:, None]).to(tl.int32), axis=1)
    else:
        cnt = cand * 0
        for start in range(0, n_cols, BLOCK):
            bits = _load_bits(y_ptr, rows64, row_ok, start + cols, n_cols, stride_y)
            cnt += tl.sum((bits >= cand[:, None]).to(tl.int32), axis=1)
    return cnt


@triton.jit
def _load_bits(y_ptr, rows64, row_ok, cols, n_cols, stride_y):
    """fp32 bits of y as int32; padding, zeros and (invalid) negatives map to -1 / 0."""
    valid = row_ok[:, None] & (cols[None, :] < n_cols)
    y = tl.load(y_ptr + rows64[:, None] * stride_y + cols[None, :], mask=valid, other=0.0)
    y = y.to(tl.float32)
    bits = tl.where(y > 0, y.to(tl.int32, bitcast=True), 0)
    return tl.where(valid, bits, -1)  # padding never counts: every candidate is >= 0


@triton.jit
def _topk_threshold_kernel(y_ptr, k_ptr, out_ptr, n_rows, n_cols, stride_y, stride_k,
                           ROWS: tl.constexpr, BLOCK: tl.constexpr, SINGLE: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    cols = tl.arange(0, BLOCK)
    k = tl.load(k_ptr + rows64 * stride_k, mask=row_ok, other=1).to(tl.int32)
    if SINGLE:
        y_bits = _load_bits(y_ptr, rows64, row_ok, cols, n_cols, stride_y)
    else:
        y_bits = tl.zeros([ROWS, BLOCK], tl.int32)  # unused: streamed rows are re-read
    t = tl.zeros([ROWS], tl.int32)
    for bit in tl.static_range(30, -1, -1):  # bit 31 is the sign: y >= 0
        cand = t | (1 << bit)
        cnt = _count_at_least(y_ptr, rows64, row_ok, cols, n_cols, stride_y, cand, y_bits,
                              SINGLE, BLOCK)
        t = tl.where(cnt >= k, cand, t)
    tl.store(out_ptr + rows64, t.to(tl.float32, bitcast=True), mask=row_ok)


def topk_threshold_bisect(y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(N,) fp32 k-th largest value of each row. y: (N, C) non-negative fp16/bf16/fp32 with
    unit column stride; k: (N,) integers in [1, C] (any row stride, 0 for a scalar k)."""
    n, c = y.shape
    out = torch.empty(n, dtype=torch.float32, device=y.device)
    if n == 0:
        return out
    cfg = block_config(c)
    grid = (triton.cdiv(n, cfg.rows),)
    _topk_threshold_kernel[grid](y, k, out, n, c, y.stride(0), k.stride(0), ROWS=cfg.rows,
                                 BLOCK=cfg.block, SINGLE=cfg.single, num_warps=cfg.num_warps)
    return out
