"""Argument checks of the sparse top-K losses (`slam_loss_topk`, `fused_linear_slam_loss`).

Builds on slam_bench.checks (alpha, weight, temperature, reduction, the float dtypes); what is
new here is the (N, K) teacher: ids and probabilities. As there, shape/dtype/device checks are
free and always run; checks that read values synchronise a GPU and run when
``check_values=True``. Every error names the argument and what was expected.

A row is *ignored* when ``teacher_ids[i, 0] == ignore_index``; its ids and probabilities are
not read, so they are not checked either (a padded row may hold anything there).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from slam_bench import checks

ID_DTYPES = (torch.int32, torch.int64)


def _float_matrix(name: str, t, what) -> None:
    """what: the expected shape's text, or a function returning it. (A function keeps
    torch.compile from specialising on the sizes it names: formatting a symbolic size fixes it.)"""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in checks.FLOAT_DTYPES:
        raise TypeError(f"{name} must be a float16/bfloat16/float32/float64 tensor, got {t.dtype}")
    if t.dim() != 2:
        raise ValueError(f"{name} must have shape {what if isinstance(what, str) else what()}, "
                         f"got {tuple(t.shape)}")


def check_teacher(teacher_ids, teacher_probs, n: int, v: int, ignore_index, device,
                  check_values: bool) -> int:
    """teacher_ids (N, K) int64/int32 and teacher_probs (N, K) float, 1 <= K <= V. Returns K.

    Values (rows not ignored): ids in [0, V) and distinct within the row; probabilities
    finite, non-negative, the row summing to at most 1 (within checks.SIMPLEX_ATOL)."""
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    if not isinstance(teacher_ids, Tensor):
        raise TypeError(f"teacher_ids must be a torch.Tensor, got {type(teacher_ids).__name__}")
    if teacher_ids.dtype not in ID_DTYPES:
        raise TypeError(f"teacher_ids must be an int64 (or int32) tensor, got {teacher_ids.dtype}")
    if teacher_ids.dim() != 2 or teacher_ids.shape[0] != n:
        raise ValueError(f"teacher_ids must have shape (N={n}, K), got {tuple(teacher_ids.shape)}")
    k_ids = teacher_ids.shape[1]
    if not 1 <= k_ids <= v:
        raise ValueError(f"teacher_ids must hold K in [1, V={v}] ids per row, got K = {k_ids}")
    _float_matrix("teacher_probs", teacher_probs, lambda: f"(N={n}, K={k_ids})")
    if teacher_probs.shape != teacher_ids.shape:
        raise ValueError(f"teacher_probs must have the shape of teacher_ids "
                         f"{tuple(teacher_ids.shape)}, got {tuple(teacher_probs.shape)}")
    checks.check_same_device_named("teacher_ids", teacher_ids, device)
    checks.check_same_device_named("teacher_probs", teacher_probs, device)
    if check_values and n:
        _check_teacher_values(teacher_ids, teacher_probs, v, ignore_index)
    return k_ids


def _check_teacher_values(ids: Tensor, probs: Tensor, v: int, ignore_index: int) -> None:
    keep = ids[:, 0] != ignore_index
    ids, probs = ids[keep], probs[keep]
    if not ids.numel():
        return
    if bool(((ids < 0) | (ids >= v)).any()):
        raise ValueError(f"teacher_ids must lie in [0, V={v}) in every row not ignored "
                         f"(teacher_ids[i, 0] == ignore_index={ignore_index} ignores a row)")
    srt = ids.sort(dim=1).values
    if bool((srt[:, 1:] == srt[:, :-1]).any()):
        raise ValueError("teacher_ids must be distinct within a row (found a repeated id)")
    t = probs if probs.dtype == torch.float64 else probs.float()
    if not bool(torch.isfinite(t).all()):
        raise checks.finite_error("teacher_probs")
    if bool((t < 0).any()):
        raise ValueError("teacher_probs must be non-negative (found a negative entry)")
    tol = checks.SIMPLEX_ATOL[probs.dtype]
    over = (t.sum(dim=1) - 1).max().item()
    if over > tol:
        raise ValueError(f"teacher_probs rows must sum to at most 1 (within {tol:g}; the mass "
                         f"outside the K ids is dropped), worst row sums to {1 + over:.6g}")


def check_k_topk(k, n: int, k_ids: int, normalize: bool, device, check_values: bool) -> None:
    """k: an int or (N,) integer tensor in [1, K] ([2, K] with normalize=True)."""
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be a bool, got {type(normalize).__name__}")
    lo = 2 if normalize else 1

    def rule():  # built only for an error (formatting K would fix it under torch.compile)
        return f"[{lo}, K={k_ids}]" + (" (normalize=True needs k >= 2)" if normalize else "")
    if isinstance(k, int) and not isinstance(k, bool):
        if not lo <= k <= k_ids:
            raise ValueError(f"k must lie in {rule()}, got {k}")
        return
    # Type, shape and device as slam_loss checks k (a wrong type raises there); the range is
    # against K, not V.
    checks.check_k(k, n, max(k_ids, lo), normalize, device, check_values=False)
    if check_values and n and not bool(((k >= lo) & (k <= k_ids)).all()):
        raise ValueError(f"k must lie in {rule()}")


def check_common(alpha, k, normalize, temperature, weight, reduction, n: int, k_ids: int,
                 device, check_values: bool) -> None:
    """The per-row parameters, as slam_loss checks them (k against K)."""
    checks.check_alpha(alpha, n, device, check_values)
    check_k_topk(k, n, k_ids, normalize, device, check_values)
    checks.check_temperature(temperature)
    checks.check_weight(weight, n, device, check_values)
    checks.check_choice("reduction", reduction, checks.REDUCTIONS)


def check_logits(student_logits, check_values: bool) -> tuple:
    """student_logits (N, V) float, V >= 2. Returns (N, V)."""
    _float_matrix("student_logits", student_logits, "(N, V)")
    n, v = student_logits.shape
    if v < 2:
        raise ValueError(f"student_logits must have V >= 2 classes, got V = {v}")
    if check_values:
        checks.check_finite("student_logits", student_logits)
    return n, v


def check_linear(hidden, lm_weight, bias: Optional[Tensor], check_values: bool) -> tuple:
    """hidden (N, H), lm_weight (V, H), bias None or (V,): one float dtype, one device.
    Returns (N, H, V)."""
    _float_matrix("hidden", hidden, "(N, H)")
    _float_matrix("lm_weight", lm_weight, "(V, H)")
    n, h = hidden.shape
    v = lm_weight.shape[0]
    if lm_weight.shape[1] != h:
        raise ValueError(f"lm_weight must have shape (V, H={h}) to match hidden "
                         f"{tuple(hidden.shape)}, got {tuple(lm_weight.shape)}")
    if v < 2:
        raise ValueError(f"lm_weight must have V >= 2 rows (classes), got V = {v}")
    if lm_weight.dtype != hidden.dtype:
        raise TypeError(f"lm_weight must have hidden's dtype {hidden.dtype}, got {lm_weight.dtype}")
    if lm_weight.device != hidden.device:
        raise ValueError(f"lm_weight must be on {hidden.device} like hidden, got {lm_weight.device}")
    if bias is not None:
        if not isinstance(bias, Tensor):
            raise TypeError(f"bias must be None or a tensor, got {type(bias).__name__}")
        if bias.shape != (v,):
            raise ValueError(f"bias must have shape (V={v},), got {tuple(bias.shape)}")
        if bias.dtype != hidden.dtype:
            raise TypeError(f"bias must have hidden's dtype {hidden.dtype}, got {bias.dtype}")
        if bias.device != hidden.device:
            raise ValueError(f"bias must be on {hidden.device} like hidden, got {bias.device}")
    if check_values:
        for name, t in (("hidden", hidden), ("lm_weight", lm_weight), ("bias", bias)):
            if t is not None:
                checks.check_finite(name, t)
    return n, h, v


def check_chunk_size(chunk_size) -> None:
    if chunk_size is None:
        return
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be None or a positive int, got {chunk_size!r}")
