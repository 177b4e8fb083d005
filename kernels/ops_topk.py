"""`slam_loss_topk_triton`: the top-K kernels as `torch.library` custom ops with autograd.

Ops: `slam_bench::topk_fwd` (row losses and the saved (m, log l) statistics) and
`slam_bench::topk_bwd` (dL/dz), each with a fake implementation, linked by an autograd
formula, so torch.compile traces a model that uses the loss as opaque nodes without graph
breaks. The fused-linear chunk step (`topk_chunk_inplace`) is a plain launcher: it runs inside
slam_bench's `fused_linear_slam` op, which is the opaque node there.

Callers (slam_bench.vocab) check the inputs and compute the per-row vectors: alpha, s and the
mask threshold (the k-th largest of the K probabilities), sync-free; weights and the reduction
reach the backward kernel through the per-row upstream gradient, read on device.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from .ops import refuse_create_graph
from .topk_triton import topk_backward, topk_chunk_step, topk_forward

__all__ = ["slam_loss_topk_triton", "topk_chunk_inplace"]


@torch.library.custom_op("slam_bench::topk_fwd", mutates_args=())
def topk_fwd(z: Tensor, ids: Tensor, p: Tensor, alpha: Tensor, s: Tensor, thresh: Tensor,
             inv_t: float, ignore_index: int, mixing: bool) -> Tuple[Tensor, Tensor]:
    """Row losses (N,) and statistics (2, N), fp32; see topk_triton.topk_forward."""
    return topk_forward(z, ids, p, alpha, s, thresh, inv_t, ignore_index, mixing)


@topk_fwd.register_fake
def _topk_fwd_fake(z, ids, p, alpha, s, thresh, inv_t, ignore_index, mixing):
    n = z.shape[0]
    return z.new_empty(n, dtype=torch.float32), z.new_empty((2, n), dtype=torch.float32)


@torch.library.custom_op("slam_bench::topk_bwd", mutates_args=())
def topk_bwd(grad_rows: Tensor, z: Tensor, ids: Tensor, p: Tensor, alpha: Tensor, s: Tensor,
             thresh: Tensor, stats: Tensor, inv_t: float, ignore_index: int,
             mixing: bool) -> Tensor:
    """dL/dz (N, V) in z's dtype; see topk_triton.topk_backward."""
    return topk_backward(grad_rows, z, ids, p, alpha, s, thresh, stats, inv_t, ignore_index,
                         mixing)


@topk_bwd.register_fake
def _topk_bwd_fake(grad_rows, z, ids, p, alpha, s, thresh, stats, inv_t, ignore_index, mixing):
    return z.new_empty(z.shape, dtype=z.dtype)


def _setup_context(ctx, inputs, output):
    z, ids, p, alpha, s, thresh, inv_t, ignore_index, mixing = inputs
    ctx.save_for_backward(z, ids, p, alpha, s, thresh, output[1])
    ctx.args = (inv_t, ignore_index, mixing)
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, grad_rows, _grad_stats):
    refuse_create_graph("slam_loss_topk (backend='triton')")
    z, ids, p, alpha, s, thresh, stats = ctx.saved_tensors
    dz = None
    if ctx.needs_input_grad[0] and grad_rows is not None:
        dz = topk_bwd(grad_rows, z, ids, p, alpha, s, thresh, stats, *ctx.args)
    return (dz,) + (None,) * 8


topk_fwd.register_autograd(_backward, setup_context=_setup_context)


def _unit_column_stride(t: Tensor) -> Tensor:
    # Rows may be views into larger buffers (any row stride); columns are indexed densely.
    return t if t.stride(1) == 1 else t.contiguous()


def slam_loss_topk_triton(z: Tensor, ids: Tensor, p: Tensor, alpha: Tensor, s: Tensor,
                          thresh: Tensor, inv_t: float, ignore_index: int,
                          mixing: bool) -> Tensor:
    """Row losses (N,) fp32 (0 for ignored rows) with autograd to z. z (N, V) fp16/bf16/fp32;
    ids (N, K) int32/int64; p (N, K) fp16/bf16/fp32; alpha, s, thresh (N,) fp32."""
    rows, _ = topk_fwd(_unit_column_stride(z), _unit_column_stride(ids), _unit_column_stride(p),
                       alpha, s, thresh, inv_t, ignore_index, mixing)
    return rows


def topk_chunk_inplace(logits: Tensor, ids: Tensor, p: Tensor, alpha: Tensor, s: Tensor,
                       thresh: Tensor, scale, inv_t: float, ignore_index: int,
                       mixing: bool) -> Tensor:
    """The fused-linear chunk step (see topk_triton.topk_chunk_step): row losses (n,) fp32 of
    `logits` (n, V), contiguous, overwritten with scale_i * dloss_i/dz when scale is given."""
    return topk_chunk_step(logits, _unit_column_stride(ids), _unit_column_stride(p), alpha, s,
                           thresh, scale, inv_t, ignore_index, mixing)
