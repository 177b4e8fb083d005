"""The chunk loop of `fused_linear_slam_loss` and its `torch.library` custom ops.

For each chunk of rows: logits = hidden_chunk @ lm_weight.T (+ bias) into one reused
(chunk, V) buffer; the chunk step (`topk_chunk_inplace`: the Triton kernel, or
slam_bench.vocab.torch_backend's on the torch backend) turns the buffer into the row losses and, in
place, d(loss)/d(logits) scaled by each row's factor; then d(hidden) of the chunk = buffer @ lm_weight, and
d(lm_weight) += buffer.T @ hidden_chunk, d(bias) += column sums. The N x V logits never
exist; the gradients are computed in the forward (Liger-Kernel's fused linear cross-entropy
does the same), and backward only multiplies them by grad_output.

Peak extra memory (forward + backward): one chunk buffer, chunk_size x V x bytes(logit),
plus the gradients themselves (N x H, V x H, V; for fp16/bf16 inputs on the torch backend a
float32 copy of lm_weight and float32 accumulators too) and O(N x K) row data: independent of
N except through the N x H gradient of hidden.

reduction="none": the upstream gradient is per row, and d(lm_weight) sums over rows, so it
cannot be applied after accumulation. The forward then computes the row losses only, and the
backward reruns the chunk loop with grad_output as the row factors (one extra logits matmul).

Backends: "torch" works in float32 (float64 for float64 inputs): logits, buffer and
accumulators, cast to the inputs' dtypes at the end. "triton" keeps the matmuls in the inputs'
dtype (fp16/bf16 logits, as Liger does), with fp32 math inside the kernel; d(lm_weight)
accumulates in lm_weight's dtype across chunks.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from slam_bench.torch_backend import refuse_create_graph
from slam_bench.vocab import torch_backend

# Default chunk: about this many logits in the buffer (64 MiB in fp32, 32 MiB in bf16), a
# power-of-two number of rows, at least 1. Large enough for efficient matmuls at LLM
# vocabularies (256 rows at V = 65,536), fixed so that memory does not grow with N.
DEFAULT_CHUNK_ELEMENTS = 1 << 24


def default_chunk_size(n: int, v: int) -> int:
    rows = max(1, DEFAULT_CHUNK_ELEMENTS // v)
    return max(1, min(n, 1 << (rows.bit_length() - 1)))


def _chunk_step(backend: str):
    """(step function, matmul dtype rule) of a backend."""
    if backend == "triton":
        from slam_bench.kernels import topk_chunk_inplace
        return topk_chunk_inplace, lambda dt: dt
    return torch_backend.topk_chunk_inplace, torch_backend.work_dtype


def run_chunks(hidden: Tensor, lm_weight: Tensor, bias: Optional[Tensor], ids: Tensor,
               probs: Tensor, alpha: Tensor, s: Tensor, thresh: Tensor, scale: Optional[Tensor],
               inv_t: float, ignore_index: int, mixing: bool, chunk_size: int, backend: str,
               needs: List[bool]):
    """Row losses (N,) (float32, float64 for float64 inputs) and, when `scale` (N,) is given,
    the gradients of sum_i scale_i loss_i w.r.t. (hidden, lm_weight, bias) where `needs` says
    so (None elsewhere)."""
    step_fn, mm_dtype = _chunk_step(backend)
    n, hdim = hidden.shape
    v = lm_weight.shape[0]
    md = mm_dtype(hidden.dtype)
    dev = hidden.device
    w = lm_weight.to(md)  # a copy only when the torch backend upcasts fp16/bf16
    b = bias.to(md) if bias is not None else None
    rows = torch.empty(n, dtype=torch_backend.work_dtype(hidden.dtype), device=dev)
    grads = scale is not None
    need_h, need_w, need_b = (grads and needs[0], grads and needs[1],
                              grads and needs[2] and bias is not None)
    gh = torch.empty((n, hdim), dtype=md, device=dev) if need_h else None
    gw = torch.zeros((v, hdim), dtype=md, device=dev) if need_w else None
    gb = torch.zeros(v, dtype=torch_backend.work_dtype(md), device=dev) if need_b else None
    buf = torch.empty((min(chunk_size, n), v), dtype=md, device=dev)
    for i in range(0, n, chunk_size):
        j = min(i + chunk_size, n)
        hc = hidden[i:j].to(md)
        logits = buf[: j - i]
        torch.mm(hc, w.t(), out=logits)
        if b is not None:
            logits.add_(b)
        rows[i:j] = step_fn(logits, ids[i:j], probs[i:j], alpha[i:j], s[i:j], thresh[i:j],
                            scale[i:j] if grads else None, inv_t, ignore_index, mixing)
        if need_h:
            torch.mm(logits, w, out=gh[i:j])
        if need_w:
            gw.addmm_(logits.t(), hc)
        if need_b:
            gb += logits.sum(dim=0, dtype=gb.dtype)
    del buf
    out = (gh.to(hidden.dtype) if need_h else None, gw.to(lm_weight.dtype) if need_w else None,
           gb.to(bias.dtype) if need_b else None)
    return rows, out


def _work_dtype(hidden: Tensor) -> torch.dtype:
    return torch_backend.work_dtype(hidden.dtype)


def _empty(t: Tensor) -> Tensor:
    return t.new_empty(0)


@torch.library.custom_op("slam_bench::fused_linear_slam", mutates_args=())
def fused_linear_slam_op(hidden: Tensor, lm_weight: Tensor, bias: Optional[Tensor], ids: Tensor,
                         probs: Tensor, alpha: Tensor, s: Tensor, thresh: Tensor, scale: Tensor,
                         inv_t: float, ignore_index: int, mixing: bool, chunk_size: int,
                         backend: str, needs: List[bool]) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """loss = sum_i scale_i loss_i (0-dim) and its gradients w.r.t. hidden, lm_weight and bias,
    each an empty (0,) tensor where `needs` is False (or bias is None)."""
    want = any(needs)
    rows, (gh, gw, gb) = run_chunks(hidden, lm_weight, bias, ids, probs, alpha, s, thresh,
                                    scale if want else None, inv_t, ignore_index, mixing,
                                    chunk_size, backend, needs)
    loss = (rows * scale.to(rows.dtype)).sum()
    return (loss, gh if gh is not None else _empty(hidden),
            gw if gw is not None else _empty(lm_weight),
            gb if gb is not None else _empty(hidden))


@fused_linear_slam_op.register_fake
def _fused_fake(hidden, lm_weight, bias, ids, probs, alpha, s, thresh, scale, inv_t,
                ignore_index, mixing, chunk_size, backend, needs):
    loss = hidden.new_empty((), dtype=_work_dtype(hidden))
    gh = hidden.new_empty(hidden.shape) if needs[0] else _empty(hidden)
    gw = lm_weight.new_empty(lm_weight.shape) if needs[1] else _empty(lm_weight)
    gb = bias.new_empty(bias.shape) if (needs[2] and bias is not None) else _empty(hidden)
    return loss, gh, gw, gb


def _fused_setup(ctx, inputs, output):
    _, gh, gw, gb = output
    needs, bias = inputs[-1], inputs[2]
    ctx.save_for_backward(gh, gw, gb)
    ctx.has = [needs[0], needs[1], needs[2] and bias is not None]
    ctx.mark_non_differentiable(gh, gw, gb)


def _fused_backward(ctx, grad_loss, _gh, _gw, _gb):
    refuse_create_graph("fused_linear_slam_loss")
    saved = ctx.saved_tensors
    out = []
    for t, has, need in zip(saved, ctx.has, ctx.needs_input_grad[:3]):
        out.append(t * grad_loss.to(t.dtype) if (has and need) else None)
    return tuple(out) + (None,) * 12


fused_linear_slam_op.register_autograd(_fused_backward, setup_context=_fused_setup)


@torch.library.custom_op("slam_bench::fused_linear_slam_rows", mutates_args=())
def fused_linear_slam_rows_op(hidden: Tensor, lm_weight: Tensor, bias: Optional[Tensor],
                              ids: Tensor, probs: Tensor, alpha: Tensor, s: Tensor,
                              thresh: Tensor, inv_t: float, ignore_index: int, mixing: bool,
                              chunk_size: int, backend: str) -> Tensor:
    """Row losses (N,), no gradients (reduction="none"; backward reruns the chunks)."""
    rows, _ = run_chunks(hidden, lm_weight, bias, ids, probs, alpha, s, thresh, None, inv_t,
                         ignore_index, mixing, chunk_size, backend, [False, False, False])
    return rows


@fused_linear_slam_rows_op.register_fake
def _rows_fake(hidden, lm_weight, bias, ids, probs, alpha, s, thresh, inv_t, ignore_index,
               mixing, chunk_size, backend):
    return hidden.new_empty(hidden.shape[0], dtype=_work_dtype(hidden))


def _rows_setup(ctx, inputs, output):
    hidden, lm_weight, bias, ids, probs, alpha, s, thresh = inputs[:8]
    ctx.save_for_backward(hidden, lm_weight, bias, ids, probs, alpha, s, thresh)
    ctx.args = inputs[8:]


def _rows_backward(ctx, grad_rows):
    refuse_create_graph("fused_linear_slam_loss")
    hidden, lm_weight, bias, ids, probs, alpha, s, thresh = ctx.saved_tensors
    inv_t, ignore_index, mixing, chunk_size, backend = ctx.args
    needs = list(ctx.needs_input_grad[:3])
    _, gh, gw, gb = fused_linear_slam_op(hidden, lm_weight, bias, ids, probs, alpha, s, thresh,
                                         grad_rows, inv_t, ignore_index, mixing, chunk_size,
                                         backend, needs)
    out = [g if need else None for g, need in zip((gh, gw, gb), needs)]
    return tuple(out) + (None,) * 10


fused_linear_slam_rows_op.register_autograd(_rows_backward, setup_context=_rows_setup)
