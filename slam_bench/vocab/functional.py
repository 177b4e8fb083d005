"""SLaM at LLM vocabulary scale: `slam_loss_topk` (sparse top-K teacher) and
`fused_linear_slam_loss` (the output projection fused with the loss).

The teacher of row i is K (token id, probability) pairs, as inference servers return
logprobs and offline caches keep them. The loss is restricted to those K ids:

    loss_i = -sum_{j in K} y_j log q_j,   q = the SLaM mix of f = softmax(z / T) over all V,

with the mask = the ids among the K whose probability is at least the k-th largest of the row
(ties included). **The teacher mass outside the K ids is dropped, not renormalised**: a row
whose K probabilities sum to 0.9 weighs 0.9. Scattering the K probabilities into a dense row
(zeros elsewhere) gives exactly `slam_loss` on that row.

Rows with ``teacher_ids[i, 0] == ignore_index`` are ignored, as in F.cross_entropy: loss 0,
gradient 0, and "mean" divides by the number of rows not ignored (0.0 when there are none).
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from slam_bench.vocab import checks
from slam_bench.functional import _resolve_backend
from slam_bench.vocab.fused_linear import (default_chunk_size, fused_linear_slam_op,
                                     fused_linear_slam_rows_op)
from slam_bench.vocab.torch_backend import checks_logits_in_body, slam_loss_topk_torch, work_dtype


def kth_largest(p: Tensor, k: Union[int, Tensor]) -> Tensor:
    """(N,) the k-th largest entry of each row of p (N, K): the mask threshold. Sync-free
    (N x K work; K is small next to V). An unchecked k (check_values=False) outside [1, K] is
    clamped into it: an out-of-range gather would read outside the row on a GPU."""
    n_k = p.shape[1]
    if isinstance(k, Tensor):
        srt = p.sort(dim=1, descending=True).values
        kk = k.to(device=p.device, dtype=torch.int64).clamp(1, n_k)
        return srt.gather(1, (kk - 1)[:, None]).squeeze(1)
    k = min(max(int(k), 1), n_k)
    return torch.topk(p, k, dim=1).values[:, k - 1]


def _row_vector(x: Union[float, int, Tensor], n: int, dtype, device) -> Tensor:
    """(N,) of `dtype`: a tensor converted, a scalar as a stride-0 view of one element."""
    if isinstance(x, Tensor):
        return x.to(dtype=dtype)
    return torch.full((1,), float(x), dtype=dtype, device=device).expand(n)


def _row_params(ids: Tensor, p: Tensor, alpha, k, normalize: bool, weight: Optional[Tensor],
                ignore_index: int, reduction: str, wd: torch.dtype):
    """(alpha, s, thresh, scale, mixing): (N,) tensors in `wd` and the mixing flag. scale_i is
    row i's factor in the result: w_i, divided by the number of rows not ignored for "mean"."""
    n = ids.shape[0]
    dev = ids.device
    # A scalar alpha of 1 is plain distillation over the K ids (b = 0): no mask needed.
    mixing = isinstance(alpha, Tensor) or float(alpha) != 1.0
    a = _row_vector(alpha, n, wd, dev)
    if normalize:
        s = 1.0 / (_row_vector(k, n, wd, dev) - 1.0)
    else:
        s = _row_vector(1.0, n, wd, dev)
    thresh = kth_largest(p, k) if mixing else a
    scale = _row_vector(1.0, n, wd, dev) if weight is None else weight.to(wd)
    if reduction == "mean":
        n_valid = (ids[:, 0] != ignore_index).sum().clamp_min(1)
        scale = scale / n_valid.to(wd)
    return a, s, thresh, scale, mixing


def _prepare_probs(p: Tensor, wd: torch.dtype, backend: str) -> Tensor:
    # The kernel reads fp16/bf16/fp32 probabilities; float64 ones are cast, as slam_loss does.
    if backend == "triton" and p.dtype == torch.float64:
        return p.float()
    return p


def _kernel_dtype_check(name: str, dtype: torch.dtype) -> None:
    if dtype == torch.float64:
        raise TypeError(f"{name} must be float16/bfloat16/float32 for backend='triton' (the "
                        f"kernel computes in fp32), got {dtype}; use backend='torch'")


def slam_loss_topk(student_logits: Tensor, teacher_ids: Tensor, teacher_probs: Tensor,
                   alpha: Union[float, Tensor], k: Union[int, Tensor], *, normalize: bool = False,
                   temperature: float = 1.0, weight: Optional[Tensor] = None,
                   ignore_index: int = -100, reduction: str = "mean", backend: str = "auto",
                   check_values: bool = True) -> Tensor:
    """SLaM loss against a sparse top-K teacher (module docstring): -sum_{j in K} y_j log q_j.

    Args:
        student_logits: (N, V) float16/bfloat16/float32 (float64 on backend="torch") logits.
        teacher_ids: (N, K) int64 (or int32) token ids, distinct within a row, in [0, V);
            1 <= K <= V. A row with teacher_ids[i, 0] == ignore_index is ignored.
        teacher_probs: (N, K) non-negative float, rows summing to at most 1 (the mass outside
            the K ids is dropped, not renormalised).
        alpha: float or (N,) float tensor in (0, 1]; alpha = 1 is distillation over the K ids.
        k: int or (N,) integer tensor in [1, K] ([2, K] with normalize): the mask is the ids
            whose probability is at least the row's k-th largest (ties included).
        normalize, temperature, weight, backend, check_values: as in `slam_loss`.
        ignore_index: the id that marks an ignored row in teacher_ids[:, 0].
        reduction: "mean" (weighted sum over the rows not ignored / their number), "sum" or
            "none" ((N,), 0 for ignored rows).

    Returns float32 (float64 for float64 logits on the torch backend); gradients flow to
    student_logits only.
    """
    n, v = checks.check_logits(student_logits, False)
    dev = student_logits.device
    k_ids = checks.check_teacher(teacher_ids, teacher_probs, n, v, ignore_index, dev,
                                      check_values)
    checks.check_common(alpha, k, normalize, temperature, weight, reduction, n, k_ids, dev,
                             check_values)
    backend = _resolve_backend(backend, dev, student_logits.dtype)
    # "student_logits must be finite": the compiled CPU body finds it in its own pass over the
    # logits (the error comes after the teacher's); every other path reads them once for it.
    fold_check = check_values and backend == "torch" and checks_logits_in_body(student_logits)
    if check_values and not fold_check:
        checks.check_logits(student_logits, True)
    wd = torch.float32 if backend == "triton" else work_dtype(student_logits.dtype)
    if backend == "triton":
        _kernel_dtype_check("student_logits", student_logits.dtype)
    p = _prepare_probs(teacher_probs, wd, backend)
    a, s, thresh, scale, mixing = _row_params(teacher_ids, p.to(wd), alpha, k, normalize,
                                              weight, ignore_index, reduction, wd)
    inv_t = 1.0 / float(temperature)
    if backend == "triton":
        from slam_bench.kernels import slam_loss_topk_triton
        rows = slam_loss_topk_triton(student_logits, teacher_ids, p, a, s, thresh, inv_t,
                                     ignore_index, mixing)
        out = rows * scale
        return out if reduction == "none" else out.sum()
    return slam_loss_topk_torch(student_logits, teacher_ids, p, a, s, thresh, scale, inv_t,
                                ignore_index, mixing, reduction, value_checks=fold_check)


def _needs(hidden: Tensor, lm_weight: Tensor, bias: Optional[Tensor]) -> Tuple[bool, bool, bool]:
    if not torch.is_grad_enabled():
        return False, False, False
    return (hidden.requires_grad, lm_weight.requires_grad,
            bias is not None and bias.requires_grad)


def fused_linear_slam_loss(hidden: Tensor, lm_weight: Tensor, teacher_ids: Tensor,
                           teacher_probs: Tensor, alpha: Union[float, Tensor],
                           k: Union[int, Tensor], *, bias: Optional[Tensor] = None,
                           normalize: bool = False, temperature: float = 1.0,
                           weight: Optional[Tensor] = None, ignore_index: int = -100,
                           reduction: str = "mean", chunk_size: Optional[int] = None,
                           backend: str = "auto", check_values: bool = True) -> Tensor:
    """`slam_loss_topk(hidden @ lm_weight.T + bias, ...)` without the N x V logits.

    Args:
        hidden: (N, H) float16/bfloat16/float32 (float64 on backend="torch") features.
        lm_weight: (V, H) output projection, hidden's dtype and device.
        bias: None or (V,), hidden's dtype and device.
        chunk_size: rows per chunk (default: about 2**24 logits, a power of two): peak extra
            memory is one chunk_size x V buffer of logits plus the gradients.
        The other arguments as in `slam_loss_topk`.

    Returns float32 (float64 for float64 inputs on the torch backend); gradients flow to
    hidden, lm_weight and bias (see slam_bench/fused_linear.py for how and at what memory).
    """
    n, _, v = checks.check_linear(hidden, lm_weight, bias, check_values)
    dev = hidden.device
    k_ids = checks.check_teacher(teacher_ids, teacher_probs, n, v, ignore_index, dev,
                                      check_values)
    checks.check_common(alpha, k, normalize, temperature, weight, reduction, n, k_ids, dev,
                             check_values)
    checks.check_chunk_size(chunk_size)
    backend = _resolve_backend(backend, dev, hidden.dtype)
    if backend == "triton":
        _kernel_dtype_check("hidden", hidden.dtype)
    wd = work_dtype(hidden.dtype)
    p = _prepare_probs(teacher_probs, wd, backend)
    a, s, thresh, scale, mixing = _row_params(teacher_ids, p.to(wd), alpha, k, normalize,
                                              weight, ignore_index, reduction, wd)
    chunk = chunk_size if chunk_size is not None else default_chunk_size(n, v)
    inv_t = 1.0 / float(temperature)
    if reduction == "none":
        rows = fused_linear_slam_rows_op(hidden, lm_weight, bias, teacher_ids, p, a, s, thresh,
                                         inv_t, ignore_index, mixing, chunk, backend)
        return rows * scale
    loss, _, _, _ = fused_linear_slam_op(hidden, lm_weight, bias, teacher_ids, p, a, s, thresh,
                                         scale, inv_t, ignore_index, mixing, chunk, backend,
                                         list(_needs(hidden, lm_weight, bias)))
    return loss
