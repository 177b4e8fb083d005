"""The top-k mask threshold, found inside the loss kernel's own pass (no pre-pass).

The mask of docs/method.md is m_j = [y_j >= t] with t the k-th largest teacher value of the row,
ties included. Entries with y_j = 0 add nothing to the loss or its gradient, so only positive
entries matter: every function here ignores y <= 0 (zeros, and the padding lanes, which load
as 0) and returns t = 0 when a row has fewer than k positive entries (then `y >= t` and
`y > 0` select every positive entry, exactly as the k-th-largest rule does).

- `kth_largest` (a row tile held in registers): for k <= EXTRACT_K, up to k rounds of "next
  distinct value below the last one, and how many entries hold it" (rounds stop as soon as
  every row has k entries, so ties end them early); for larger k, a bisection on the fp32
  bit pattern (non-negative floats sort like their bits read as int32), one counting round
  per significant bit: 15 rounds for a bf16 teacher, 18 for fp16, 31 for fp32. Both run on
  registers only: no memory traffic.
- `topk_insert` (a streamed row): keeps the row's largest positive entries seen so far, with
  their logits, in KCAP slots, inserting a block's entries largest first, only those above the
  current smallest slot (after the first block, usually none). `dropped` is the largest
  positive value that is not in the slots: when it is below the final threshold, the slots hold
  every mixed entry (the top k and all ties), so the mixed terms are fixed from them at the end
  of the pass. The slots always hold the row's KCAP largest values (as a multiset), so for
  k <= KCAP their k-th largest is the exact threshold even when ties at it overflow them.
- `kth_largest_radix` (the rare fallback for k > KCAP on a streamed row): a radix select on
  the same bit pattern, 8-bit digits, one 256-bin histogram per pass over the row's y: 2
  passes for a bf16 teacher, 3 for fp16, 4 for fp32 (`radix_passes`), exact with ties.

Why not torch: `torch.topk` needs one k for all rows (a per-row k tensor would need max(k) on
the host, a sync) and a pass of its own over y; the selection here rides on the loss pass.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def kth_largest(y, k, EXTRACT_K: tl.constexpr, LOW_BIT: tl.constexpr):
    """y (R, W) fp32, k (R,) int32 (0 on padding rows). Returns t (R,) fp32: the k-th largest
    positive entry of each row, or 0 if the row has fewer than k positive entries. LOW_BIT:
    the lowest fp32 bit that y's source dtype can set (16 bf16, 13 fp16, 0 fp32)."""
    kmax = tl.max(k, axis=0)
    if kmax <= EXTRACT_K:
        yp = tl.where(y > 0, y, 0.0)
        t = tl.full([y.shape[0]], float("inf"), tl.float32)
        cnt = tl.zeros([y.shape[0]], tl.int32)
        need = k > cnt
        while tl.max(need.to(tl.int32), axis=0) > 0:
            v = tl.max(tl.where(yp < t[:, None], yp, 0.0), axis=1)  # next distinct value
            held = tl.sum((yp == v[:, None]).to(tl.int32), axis=1)
            t = tl.where(need, v, t)
            cnt += tl.where(need, held, 0)
            need = need & (cnt < k) & (v > 0)
        t = tl.where(t == float("inf"), 0.0, t)  # rows that needed nothing (padding)
    else:
        bits = tl.where(y > 0, y.to(tl.int32, bitcast=True), 0)
        tb = tl.zeros([y.shape[0]], tl.int32)
        for bit in tl.static_range(30, LOW_BIT - 1, -1):  # bit 31 is the sign: y >= 0
            cand = tb | (1 << bit)
            cnt = tl.sum((bits >= cand[:, None]).to(tl.int32), axis=1)
            tb = tl.where(cnt >= k, cand, tb)
        t = tb.to(tl.float32, bitcast=True)
    return t


@triton.jit
def topk_insert(y, z, cols, buf_y, buf_z, dropped):
    """Insert a streamed tile into the running top slots. y (R, W) fp32 with padding 0, z the
    raw logits there, cols = arange(W); buf_y, buf_z (R, KCAP) the slots (empty slots hold
    y = 0); dropped (R,) the largest positive y not in the slots. Returns the updated
    (buf_y, buf_z, dropped). Each round moves the tile's largest entry above the smallest slot
    into that slot: four reductions, as many rounds as entries enter. (The logit is picked by a
    masked sum, not tl.gather: a gather here sends ptxas past 14 GB for sm_90.)"""
    bmin, slot = tl.min(buf_y, axis=1, return_indices=True)
    v, at = tl.max(tl.where(y > bmin[:, None], y, 0.0), axis=1, return_indices=True)
    has = v > bmin
    while tl.max(has.to(tl.int32), axis=0) > 0:
        zv = tl.sum(tl.where(cols[None, :] == at[:, None], z, 0.0), axis=1)
        kcols = tl.arange(0, buf_y.shape[1])
        put = has[:, None] & (kcols[None, :] == slot[:, None])
        dropped = tl.where(has, tl.maximum(dropped, bmin), dropped)  # the evicted value
        buf_y = tl.where(put, v[:, None], buf_y)
        buf_z = tl.where(put, zv[:, None], buf_z)
        y = tl.where(has[:, None] & (cols[None, :] == at[:, None]), 0.0, y)
        bmin, slot = tl.min(buf_y, axis=1, return_indices=True)
        v, at = tl.max(tl.where(y > bmin[:, None], y, 0.0), axis=1, return_indices=True)
        has = v > bmin
    # What stays behind is at most the smallest slot.
    return buf_y, buf_z, tl.maximum(dropped, tl.max(y, axis=1))


# Radix select over a streamed row: 8-bit digits of the key (the fp32 bit pattern), highest
# first, one 256-bin histogram (one pass over y) per digit.
RADIX_BITS = 8
RADIX_BINS = 1 << RADIX_BITS


def radix_passes(low_bit: int) -> int:
    """Passes over y of `kth_largest_radix` for keys whose lowest settable bit is low_bit:
    2 for bf16 teachers, 3 for fp16, 4 for fp32 (31 - low_bit significant bits, 8 a pass)."""
    return -(-(31 - low_bit) // RADIX_BITS)


@triton.jit
def kth_largest_radix(y_ptr, y_row, n_cols, k, cols, LOW_BIT: tl.constexpr):
    """t (1,) as `kth_largest` for one row too wide for the chip (R == 1): a radix select.

    Key = the fp32 bits of y (non-negative floats sort like their bits as int32), significant
    bits 30 .. LOW_BIT, split into 8-bit digits aligned at LOW_BIT (the top one shorter). Each
    pass reads the row's y once and histograms the next digit of the positive entries whose
    higher digits equal the prefix fixed so far; the digit of the k-th largest is the largest
    bin whose count, plus the counts of the bins above it, reaches the entries still to place.
    Exact with ties (they share a key), bounded: radix_passes(LOW_BIT) passes over y (2 for
    a bf16 teacher, 4 for fp32). A row with fewer than k positive entries gets t = 0.
    y_row (1,) int64 row offset; cols (W,)."""
    tl.static_assert(y_row.shape[0] == 1, "streamed rows: one row per program")
    NPASS: tl.constexpr = (31 - LOW_BIT + 7) // 8
    width = cols.shape[0]
    row = tl.max(y_row, axis=0)
    bins = tl.arange(0, 256)
    krem = tl.max(k, axis=0)  # entries still to place at or below the prefix
    prefix = 0  # the digits fixed so far, as an integer
    found = krem > 0
    for p in tl.static_range(NPASS):
        lo = LOW_BIT + 8 * (NPASS - 1 - p)  # (a constexpr) lowest bit of this pass's digit
        hist = tl.zeros([256], tl.int32)
        for start in range(0, n_cols, width):
            valid = (start + cols) < n_cols
            y = tl.load(y_ptr + row + start + cols, mask=valid, other=0.0).to(tl.float32)
            key = y.to(tl.int32, bitcast=True)
            take = valid & (y > 0)
            if p > 0:  # only the entries that share the digits fixed so far
                take = take & ((key >> (lo + 8)) == prefix)
            hist += tl.histogram((key >> lo) & 255, 256, mask=take)
        # at_least[d]: entries (with this prefix) whose digit is >= d.
        at_least = tl.sum(hist, axis=0) - tl.cumsum(hist, axis=0) + hist
        digit = tl.max(tl.where(at_least >= krem, bins, -1), axis=0)
        found = found & (digit >= 0)  # only the first pass can find too few entries
        krem -= tl.sum(tl.where(bins > digit, hist, 0), axis=0)
        prefix = prefix * 256 + tl.maximum(digit, 0)
    t = tl.where(found, (prefix << LOW_BIT).to(tl.float32, bitcast=True), 0.0)
    return tl.zeros([1], tl.float32) + t


# The lowest fp32 bit each teacher dtype can set once upcast (their mantissas are 7, 10, 23
# bits); the bisection needs no rounds below it.
LOW_BIT = {torch.bfloat16: 16, torch.float16: 13, torch.float32: 0}


@triton.jit
def _threshold_kernel(y_ptr, k_ptr, out_ptr, n_rows, n_cols, stride_y, stride_k,
                      EXTRACT_K: tl.constexpr, LOW_BIT: tl.constexpr, ROWS: tl.constexpr,
                      BLOCK: tl.constexpr, STREAM: tl.constexpr, KCAP: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    y_row = rows.to(tl.int64) * stride_y
    cols = tl.arange(0, BLOCK)
    k = tl.load(k_ptr + rows * stride_k, mask=row_ok, other=0).to(tl.int32)
    k = tl.where(row_ok, tl.minimum(tl.maximum(k, 1), n_cols), 0)  # unchecked k: into [1, C]
    if STREAM:
        buf_y = tl.zeros([ROWS, KCAP], tl.float32)
        buf_z = tl.zeros([ROWS, KCAP], tl.float32)
        dropped = tl.zeros([ROWS], tl.float32)
        for start in range(0, n_cols, BLOCK):
            valid = row_ok[:, None] & ((start + cols) < n_cols)[None, :]
            y = tl.load(y_ptr + y_row[:, None] + (start + cols)[None, :], mask=valid,
                        other=0.0).to(tl.float32)
            buf_y, buf_z, dropped = topk_insert(y, y, cols, buf_y, buf_z, dropped)
        t = kth_largest(buf_y, k, EXTRACT_K, 0)
        if tl.max(((dropped > 0) & (dropped >= t)).to(tl.int32), axis=0) > 0:
            if tl.max(k, axis=0) > KCAP:  # else t is exact: only the ties overflowed
                t = kth_largest_radix(y_ptr, y_row, n_cols, k, cols, LOW_BIT)
    else:
        valid = row_ok[:, None] & (cols < n_cols)[None, :]
        y = tl.load(y_ptr + y_row[:, None] + cols[None, :], mask=valid, other=0.0)
        t = kth_largest(y.to(tl.float32), k, EXTRACT_K, LOW_BIT)
    tl.store(out_ptr + rows, t, mask=row_ok)


def kth_largest_rows(y: torch.Tensor, k: torch.Tensor, *, extract_k: int, stream_block: int = 0,
                     kcap: int = 8) -> torch.Tensor:
    """(N,) fp32: the selection above on its own, for tests. y (N, C) fp16/bf16/fp32 with unit
    column stride; k (N,) int32. stream_block > 0 streams the row in blocks of that width
    through `topk_insert` (with its fallback) instead of holding it in one tile."""
    n, c = y.shape
    out = torch.empty(n, dtype=torch.float32, device=y.device)
    if n == 0:
        return out
    stream = stream_block > 0
    block = stream_block if stream else triton.next_power_of_2(c)
    rows = 1 if stream else max(1, min(16, 4096 // block))
    _threshold_kernel[(triton.cdiv(n, rows),)](
        y, k, out, n, c, y.stride(0), k.stride(0), EXTRACT_K=extract_k, LOW_BIT=LOW_BIT[y.dtype],
        ROWS=rows, BLOCK=block, STREAM=stream, KCAP=kcap)
    return out
