"""Public functional API: `slam_loss` and `distill_loss`, with backend dispatch.

Both return a float32 result (float64 when the logits are float64) and send gradients to
`student_logits` only. With N = 0 rows, "mean" and "sum" return 0.0 (so adding an empty
unlabeled batch to a labeled loss never yields NaN) and "none" returns an empty tensor.

Shapes: inputs are (*, C), classes in the last dimension, as in Liger-Kernel and the fused
LM losses (F.cross_entropy instead puts C at dim 1: (N, C, d1, ...)). The leading dimensions
are flattened to N rows, so a (B, T, C) batch of a sequence model gives exactly what its
(B*T, C) view gives; "mean" divides by B*T and reduction="none" returns shape (B, T).
"""
from __future__ import annotations

import os
from typing import Optional, Union

import torch
from torch import Tensor

from slam_bench import checks
from slam_bench.torch_backend import slam_loss_torch


def _triton_usable(device: torch.device) -> bool:
    if device.type == "cuda":
        return True
    return os.environ.get("TRITON_INTERPRET") == "1"


def _resolve_backend(backend: str, device: torch.device, dtype: torch.dtype) -> str:
    checks.check_choice("backend", backend, checks.BACKENDS)
    if backend == "auto":
        # The kernel computes in fp32; float64 logits keep their precision on the torch backend.
        if device.type == "cuda" and dtype != torch.float64 and _triton_kernel_available():
            return "triton"
        return "torch"
    if backend == "triton" and not _triton_usable(device):
        raise ValueError(
            f"backend='triton' needs CUDA tensors, or CPU tensors with TRITON_INTERPRET=1 set "
            f"before slam_bench is imported; got tensors on {device}")
    return backend


def _triton_kernel_available() -> bool:
    try:
        from slam_bench.kernels import slam_loss_triton  # noqa: F401
    except ImportError:
        return False
    return True


def _check_shared(z, y, temperature, weight, reduction, backend, check_values):
    """The checks both losses share, and the backend they run on. Returns (N, C, backend,
    fused): on both backends the (N, C) value checks are fused into the loss pass (the torch
    backend's chunks, the Triton kernel's per-row stats), which raises their errors."""
    if isinstance(z, Tensor):
        backend = _resolve_backend(backend, z.device, z.dtype)
    fused = check_values
    n, c = checks.check_loss_inputs(z, y, temperature, weight, reduction, check_values,
                                    defer_nc_values=fused)
    return n, c, backend, fused


def _run(z, y, alpha, k, normalize, temperature, weight, reduction, backend, mixing,
         overwrite_logits, fused_checks):
    if not isinstance(overwrite_logits, bool):
        raise TypeError(f"overwrite_logits must be a bool, got {type(overwrite_logits).__name__}")
    if backend == "triton":
        try:
            from slam_bench.kernels import slam_loss_triton
        except ImportError as e:  # triton missing on this platform, or the kernel not built yet
            raise ValueError(f"backend='triton' is not available here: {e}") from e
        out = slam_loss_triton(z, y, alpha, k, normalize=normalize, temperature=temperature,
                               weight=weight, reduction=reduction, mixing=mixing,
                               overwrite_logits=overwrite_logits, value_stats=fused_checks)
        if not fused_checks:
            return out
        out, stats = out
        if stats is None:  # N = 0, nothing to check
            return out
        if torch.compiler.is_compiling():  # the check as a graph node (fullgraph traces)
            return checks.checked_loss(out, stats, y.dtype)
        checks.raise_loss_value_errors(stats.tolist(), y.dtype)  # one small copy to host
        return out
    return slam_loss_torch(z, y, alpha, k, normalize=normalize, temperature=temperature,
                           weight=weight, reduction=reduction, mixing=mixing,
                           value_checks=fused_checks)


def slam_loss(student_logits: Tensor, teacher_probs: Tensor, alpha: Union[float, Tensor],
              k: Union[int, Tensor], *, normalize: bool = False, temperature: float = 1.0,
              weight: Optional[Tensor] = None, reduction: str = "mean", backend: str = "auto",
              check_values: bool = True, overwrite_logits: bool = False) -> Tensor:
    """SLaM loss (docs/method.md section 2): -sum_j y_j log q_j, q = mix(softmax(z / T)).

    Args:
        student_logits: (*, C) float16/bfloat16/float32/float64 student logits z, C >= 2,
            at least one leading dimension: (N, C), or (B, T, C) from a sequence model. The
            classes are the last dimension (as in Liger-Kernel; F.cross_entropy takes them
            at dim 1); the leading dimensions are flattened to N = prod(*) rows.
        teacher_probs: (*, C), student_logits' shape: teacher soft labels y, rows on the
            simplex (any float dtype).
        alpha: float or float tensor of shape * (or (N,), flattened) in (0, 1]: the
            probability that the teacher's top-1 is right.
        k: int or integer tensor of shape * (or (N,)) in [1, C] ([2, C] if normalize): the
            teacher top-k size; the mask is y_j >= the k-th largest entry of the row (ties
            included).
        normalize: s = 1/(k - 1) (paper main text) instead of s = 1 (paper experiments).
        temperature: T > 0; the logits are divided by T, the loss is not rescaled.
        weight: None or a float tensor of shape * (or (N,)): finite, non-negative per-row
            factors.
        reduction: "mean" (weighted row sum / N), "sum" or "none" (per-row losses of shape
            *, like F.cross_entropy's reduction="none").
        backend: "auto" (Triton kernel for CUDA tensors, else torch), "torch" or "triton".
        check_values: validate alpha, k, weight, the logits and the teacher rows
            (synchronises a GPU; the logits and teacher are checked inside the loss pass,
            with no read of their own); shapes, dtypes and devices are always checked.
        overwrite_logits: with backend="triton", write dL/dz into student_logits' own storage
            during the forward instead of a new buffer (saves one N x C buffer, as
            Liger-Kernel does; the logits' values are gone after the call, so use it only for
            logits nothing else reads, e.g. an output layer's result). The torch backend
            ignores it (it keeps the logits and its own buffer).
    """
    lead, student_logits, teacher_probs, rows = checks.flatten_rows(
        student_logits, teacher_probs, alpha=alpha, k=k, weight=weight)
    alpha, k, weight = rows["alpha"], rows["k"], rows["weight"]
    n, c, backend, fused = _check_shared(student_logits, teacher_probs, temperature, weight,
                                         reduction, backend, check_values)
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be a bool, got {type(normalize).__name__}")
    checks.check_alpha(alpha, n, student_logits.device, check_values)
    checks.check_k(k, n, c, normalize, student_logits.device, check_values)
    out = _run(student_logits, teacher_probs, alpha, k, normalize, temperature, weight,
               reduction, backend, mixing=True, overwrite_logits=overwrite_logits,
               fused_checks=fused)
    return out.reshape(lead) if reduction == "none" else out


def distill_loss(student_logits: Tensor, teacher_probs: Tensor, *, temperature: float = 1.0,
                 weight: Optional[Tensor] = None, reduction: str = "mean", backend: str = "auto",
                 check_values: bool = True, overwrite_logits: bool = False) -> Tensor:
    """Vanilla distillation: soft-label cross-entropy -sum_j y_j log softmax(z / T)_j.

    The alpha = 1 case of `slam_loss`; arguments as there: student_logits and teacher_probs
    (*, C) with the classes last, weight None or of shape * (or (N,)), reduction="none"
    returns shape *.
    """
    lead, student_logits, teacher_probs, rows = checks.flatten_rows(
        student_logits, teacher_probs, weight=weight)
    weight = rows["weight"]
    _, _, backend, fused = _check_shared(student_logits, teacher_probs, temperature, weight,
                                         reduction, backend, check_values)
    out = _run(student_logits, teacher_probs, 1.0, 1, False, temperature, weight, reduction,
               backend, mixing=False, overwrite_logits=overwrite_logits, fused_checks=fused)
    return out.reshape(lead) if reduction == "none" else out
