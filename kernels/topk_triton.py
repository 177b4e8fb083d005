"""Triton kernels of the sparse top-K SLaM loss (slam_bench.vocab) and its fused-linear chunk step.

Math (docs/method.md section 2 restricted to the teacher's K ids; slam_bench/vocab/torch_backend.py is
the same in torch): row i has logits z (V,), teacher ids and probabilities (K,), and
per-row alpha, s and the mask threshold (the k-th largest of the K probabilities, computed by
the caller). With f = softmax(z / T):

    loss = -sum_{j in K} y_j log q_j;  outside the mask log q_j = log alpha + log f_j,
    inside q_j = c f_j + b  (b = s (1 - alpha), c = alpha - b);
    r_j = -y_j c f_j / q_j (exactly -y_j outside the mask), R = sum_j r_j,
    dz_v = (r_v - f_v R) / T  with r_v = 0 off the K ids.

One program per row. Pass 1 streams the row for its max m and l = sum exp((z - m) / T) (the
online softmax); then the K logits are gathered and give the loss, r and R. A gradient pass
writes -f_v R / T * scale over the row, and after a barrier the K gathered places are
overwritten with (r_j - f_j R) / T * scale (a scatter, instead of comparing every element
with the K ids).

Kernels and bytes per logit element (b = bytes of one logit: 2 for bf16/fp16, 4 for fp32;
per row also K x (id + probability + one gathered logit) and a few fp32 scalars):
- `_topk_loss_kernel`, WRITE_GRAD=False (the forward of `slam_loss_topk`; also its
  forward-only/evaluation path): reads the row once: b. Saves (m, log l) per row (8 bytes).
- `_topk_grad_kernel` (its backward): reads z once, writes dz once: 2b, with grad_output read
  on device and folded into the single write. `slam_loss_topk` fwd + bwd: 3b (6 B in bf16,
  12 B in fp32), over a floor of 2b (read z, write dz). Reaching 2b would mean writing the
  gradient in the forward, which then needs another pass in backward to apply grad_output.
- `_topk_loss_kernel`, WRITE_GRAD=True (the fused-linear chunk step, in place on the
  chunk's logits): rows up to MAX_SINGLE_BLOCK stay on chip: read once, write once: 2b;
  wider rows stream twice: 3b. Around it the chunk's matmuls write the logits (b) and read the
  gradient twice (d(hidden), d(lm_weight): 2b), so `fused_linear_slam_loss` moves 5b (6b
  streamed) per logit through a chunk_size x V buffer, never an N x V one.

Numerics: fp32 after every load; z - m is exact for nearby values, so shifting the logits
changes nothing; masked lanes load 0 and are selected away (0 * -inf would be NaN). Rows with
teacher_ids[i, 0] == ignore_index load nothing and get loss 0 and a zero gradient row.

Unchecked input (check_values=False): an id outside [0, V) is masked out of every load and of
the scatter, so no kernel reads or writes outside its tensors; the loss of such a row is then
unspecified (today: the row without that entry). tests/kernels/test_kernel_memory_safety.py.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# Rows whose padded width fits in this many logits are loaded once and kept on chip (16 fp32
# values a thread per live tile over 16 warps); wider rows stream in STREAM_BLOCK blocks
# (docs/kernels.md: at most 32k elements a block), 8 values a thread: one 16-byte bf16 load.
# One warp per 256 elements, 4 to 16: with 8 warps a streamed block spilled registers on
# sm_90 (tests/kernels/test_kernel_topk_sm90.py compiles every variant and checks).
MAX_SINGLE_BLOCK = 8192
STREAM_BLOCK = 4096
# Teacher entries are padded to a power of two of at least this (fewer recompilations).
MIN_K_PAD = 16


def launch_config(n_cols: int, n_k: int):
    """(BLOCK, SINGLE, K_PAD, num_warps) for rows of n_cols logits and K teacher ids."""
    width = triton.next_power_of_2(n_cols)
    single = width <= MAX_SINGLE_BLOCK
    block = width if single else STREAM_BLOCK
    k_pad = max(MIN_K_PAD, triton.next_power_of_2(n_k))
    return block, single, k_pad, max(4, min(16, block // 256))


@triton.jit
def _row_params(alpha_ptr, s_ptr, th_ptr, row, stride_a, stride_s, stride_th,
                MIXING: tl.constexpr):
    """b = s (1 - alpha), c = alpha - b, log alpha and the mask threshold of the row (fp32)."""
    if MIXING:
        a = tl.load(alpha_ptr + row * stride_a).to(tl.float32)
        s = tl.load(s_ptr + row * stride_s).to(tl.float32)
        th = tl.load(th_ptr + row * stride_th).to(tl.float32)
        b = s * (1.0 - a)
        return b, a - b, tl.log(a), th
    else:
        return 0.0, 1.0, 0.0, 0.0


@triton.jit
def _row_stats(z_ptr, row_off, n_cols, keep, inv_t, BLOCK: tl.constexpr, SINGLE: tl.constexpr):
    """Row max m of z, log l with l = sum_v exp((z_v - m) / T), and (SINGLE) the row itself."""
    cols = tl.arange(0, BLOCK)
    # An ignored row reads nothing: its column limit is 0. (A scalar bool `&` a vector mask
    # fails in Triton 3.9's interpreter, "mask has unsupported dtype"; a select does not.)
    n_live = tl.where(keep, n_cols, 0)
    if SINGLE:
        ok = cols < n_live
        z = tl.load(z_ptr + row_off + cols, mask=ok, other=0.0).to(tl.float32)
        z = tl.where(ok, z, float("-inf"))
        m = tl.where(keep, tl.max(z, axis=0), 0.0)
        sum_e = tl.sum(tl.exp((z - m) * inv_t), axis=0)
    else:
        z = tl.zeros([BLOCK], tl.float32)  # unused: streamed rows are re-read
        m = tl.max(z, axis=0) - float("inf")
        sum_e = tl.sum(z, axis=0)
        for start in range(0, n_cols, BLOCK):
            ok = (start + cols) < n_live
            zb = tl.load(z_ptr + row_off + start + cols, mask=ok, other=0.0).to(tl.float32)
            zb = tl.where(ok, zb, float("-inf"))
            m_new = tl.where(keep, tl.maximum(m, tl.max(zb, axis=0)), 0.0)
            sum_e = (sum_e * tl.exp((m - m_new) * inv_t)
                     + tl.sum(tl.exp((zb - m_new) * inv_t), axis=0))
            m = m_new
    log_l = tl.log(tl.where(keep, sum_e, 1.0))
    return m, log_l, z


@triton.jit
def _teacher_terms(z_ptr, row_off, ids_ptr, p_ptr, row, stride_ids, stride_p, n_k, n_cols, keep,
                   m, log_l, b, c, log_a, th, inv_t, MIXING: tl.constexpr, K_PAD: tl.constexpr):
    """The K teacher entries: (loss, r (K_PAD,), f at the ids, ids (int64), valid lanes)."""
    kk = tl.arange(0, K_PAD)
    valid = kk < tl.where(keep, n_k, 0)
    ids = tl.load(ids_ptr + row * stride_ids + kk, mask=valid, other=0).to(tl.int64)
    # Memory safety with unchecked input: an id outside [0, V) is dropped (never read, never
    # written: this mask also guards the gradient's scatter); the result is then unspecified.
    valid = valid & (ids >= 0) & (ids < n_cols)
    p = tl.load(p_ptr + row * stride_p + kk, mask=valid, other=0.0).to(tl.float32)
    p = tl.where(valid, p, 0.0)
    zg = tl.load(z_ptr + row_off + ids, mask=valid, other=0.0).to(tl.float32)
    logf = (zg - m) * inv_t - log_l
    f = tl.exp(logf)
    if MIXING:
        # b > 0 as a select: the interpreter cannot `&` a vector with a scalar float compare.
        mixed = tl.where(b > 0, valid & (p >= th), False)
        cf = c * f
        q = tl.where(mixed, cf + b, 1.0)
        logq = tl.where(mixed, tl.log(q), log_a + logf)
        r = tl.where(mixed, -p * cf / q, -p)
    else:
        logq = logf
        r = -p
    # Select before multiplying: y_j = 0 (padding, ignored rows) must give 0 even at -inf.
    loss = -tl.sum(p * tl.where(p > 0, logq, 0.0), axis=0)
    return loss, r, f, ids, valid


@triton.jit
def _stream_grad(src_ptr, dst_ptr, src_off, dst_off, n_cols, keep, m, log_l, rs, inv_t,
                 BLOCK: tl.constexpr):
    """dst_v = -f_v * rs over the row (0 for an ignored row), f recomputed from src."""
    cols = tl.arange(0, BLOCK)
    n_live = tl.where(keep, n_cols, 0)  # an ignored row reads nothing
    for start in range(0, n_cols, BLOCK):
        inb = (start + cols) < n_cols
        z = tl.load(src_ptr + src_off + start + cols, mask=(start + cols) < n_live, other=0.0)
        z = z.to(tl.float32)
        f = tl.exp((z - m) * inv_t - log_l)
        dz = tl.where(keep, -f * rs, 0.0)
        tl.store(dst_ptr + dst_off + start + cols, dz.to(dst_ptr.dtype.element_ty), mask=inb)


@triton.jit
def _topk_loss_kernel(z_ptr, ids_ptr, p_ptr, alpha_ptr, s_ptr, th_ptr, scale_ptr, loss_ptr,
                      stats_ptr, n_rows, n_cols, n_k, stride_z, stride_ids, stride_p, stride_a,
                      stride_s, stride_th, stride_sc, inv_t, ignore_index,
                      MIXING: tl.constexpr, WRITE_GRAD: tl.constexpr, K_PAD: tl.constexpr,
                      BLOCK: tl.constexpr, SINGLE: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # int64 offsets: N x V may exceed 2**31
    row_off = row * stride_z
    keep = tl.load(ids_ptr + row * stride_ids) != ignore_index
    b, c, log_a, th = _row_params(alpha_ptr, s_ptr, th_ptr, row, stride_a, stride_s, stride_th,
                                  MIXING)
    m, log_l, z = _row_stats(z_ptr, row_off, n_cols, keep, inv_t, BLOCK, SINGLE)
    loss, r, f_g, ids, valid = _teacher_terms(z_ptr, row_off, ids_ptr, p_ptr, row, stride_ids,
                                              stride_p, n_k, n_cols, keep, m, log_l, b, c, log_a,
                                              th, inv_t, MIXING, K_PAD)
    tl.store(loss_ptr + row, tl.where(keep, loss, 0.0))
    if WRITE_GRAD:
        # In place: the K logits were gathered above, before any element is overwritten.
        sumr = tl.sum(r, axis=0)
        sc = tl.load(scale_ptr + row * stride_sc).to(tl.float32) * inv_t
        if SINGLE:
            cols = tl.arange(0, BLOCK)
            f = tl.exp((z - m) * inv_t - log_l)
            dz = tl.where(keep, -f * (sumr * sc), 0.0)
            tl.store(z_ptr + row_off + cols, dz.to(z_ptr.dtype.element_ty), mask=cols < n_cols)
        else:
            _stream_grad(z_ptr, z_ptr, row_off, row_off, n_cols, keep, m, log_l, sumr * sc,
                         inv_t, BLOCK)
        tl.debug_barrier()  # the row's writes land before the K places are overwritten
        tl.store(z_ptr + row_off + ids, ((r - f_g * sumr) * sc).to(z_ptr.dtype.element_ty),
                 mask=valid)
    else:
        tl.store(stats_ptr + row, m)
        tl.store(stats_ptr + n_rows + row, log_l)


@triton.jit
def _topk_grad_kernel(z_ptr, dz_ptr, ids_ptr, p_ptr, alpha_ptr, s_ptr, th_ptr, stats_ptr, go_ptr,
                      n_rows, n_cols, n_k, stride_z, stride_dz, stride_ids, stride_p, stride_a,
                      stride_s, stride_th, stride_go, inv_t, ignore_index,
                      MIXING: tl.constexpr, K_PAD: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    keep = tl.load(ids_ptr + row * stride_ids) != ignore_index
    b, c, log_a, th = _row_params(alpha_ptr, s_ptr, th_ptr, row, stride_a, stride_s, stride_th,
                                  MIXING)
    m = tl.load(stats_ptr + row)
    log_l = tl.load(stats_ptr + n_rows + row)
    _, r, f_g, ids, valid = _teacher_terms(z_ptr, row * stride_z, ids_ptr, p_ptr, row,
                                           stride_ids, stride_p, n_k, n_cols, keep, m, log_l,
                                           b, c, log_a, th, inv_t, MIXING, K_PAD)
    sumr = tl.sum(r, axis=0)
    # Upstream gradient of the row (weights and the mean's 1/N arrive here), read on device.
    sc = tl.load(go_ptr + row * stride_go).to(tl.float32) * inv_t
    _stream_grad(z_ptr, dz_ptr, row * stride_z, row * stride_dz, n_cols, keep, m, log_l,
                 sumr * sc, inv_t, BLOCK)
    tl.debug_barrier()
    tl.store(dz_ptr + row * stride_dz + ids, ((r - f_g * sumr) * sc).to(dz_ptr.dtype.element_ty),
             mask=valid)


def _launch_loss(z, ids, p, alpha, s, thresh, scale, inv_t, ignore_index, mixing, write_grad):
    n, v = z.shape
    loss = torch.empty(n, dtype=torch.float32, device=z.device)
    stats = torch.empty((2, n), dtype=torch.float32, device=z.device)
    if n == 0:
        return loss, stats
    block, single, k_pad, warps = launch_config(v, ids.shape[1])
    sc = scale if scale is not None else loss  # unread without WRITE_GRAD
    _topk_loss_kernel[(n,)](
        z, ids, p, alpha, s, thresh, sc, loss, stats, n, v, ids.shape[1], z.stride(0),
        ids.stride(0), p.stride(0), alpha.stride(0), s.stride(0), thresh.stride(0), sc.stride(0),
        inv_t, ignore_index, MIXING=mixing, WRITE_GRAD=write_grad, K_PAD=k_pad, BLOCK=block,
        SINGLE=single, num_warps=warps)
    return loss, stats


def topk_forward(z, ids, p, alpha, s, thresh, inv_t: float, ignore_index: int, mixing: bool):
    """Row losses (N,) fp32 and the (2, N) fp32 statistics (m, log l) the backward needs.
    z (N, V) fp16/bf16/fp32 and ids, p (N, K) with unit column stride; alpha, s, thresh (N,)
    (any stride, 0 for a broadcast scalar)."""
    return _launch_loss(z, ids, p, alpha, s, thresh, None, inv_t, ignore_index, mixing, False)


def topk_chunk_step(logits, ids, p, alpha, s, thresh, scale, inv_t: float, ignore_index: int,
                       mixing: bool):
    """The fused-linear chunk step: row losses (n,) fp32 of `logits` (n, V), contiguous rows,
    which it overwrites with scale_i * dloss_i/dz when `scale` (n,) is given (else leaves
    untouched). Other arguments as in `topk_forward`."""
    loss, _ = _launch_loss(logits, ids, p, alpha, s, thresh, scale, inv_t, ignore_index,
                           mixing, scale is not None)
    return loss


def topk_backward(grad_rows, z, ids, p, alpha, s, thresh, stats, inv_t: float,
                  ignore_index: int, mixing: bool):
    """dL/dz (N, V) contiguous in z's dtype, for the upstream gradient grad_rows (N,) of the
    row losses (any stride). Other arguments as in `topk_forward`."""
    n, v = z.shape
    dz = torch.empty((n, v), dtype=z.dtype, device=z.device)
    if n == 0:
        return dz
    block, _, k_pad, warps = launch_config(v, ids.shape[1])
    _topk_grad_kernel[(n,)](
        z, dz, ids, p, alpha, s, thresh, stats, grad_rows, n, v, ids.shape[1], z.stride(0),
        dz.stride(0), ids.stride(0), p.stride(0), alpha.stride(0), s.stride(0), thresh.stride(0),
        grad_rows.stride(0), inv_t, ignore_index, MIXING=mixing, K_PAD=k_pad,
        BLOCK=block if block <= STREAM_BLOCK else STREAM_BLOCK, num_warps=warps)
    return dz
