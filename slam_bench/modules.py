"""nn.Module wrappers in the style of nn.CrossEntropyLoss: fixed options at construction,
tensors at call time. Each constructor lists its options; each forward calls one function
of the functional API with them (shapes, dtypes and errors as documented there)."""
from __future__ import annotations

from typing import Optional, Union

from torch import Tensor, nn

from slam_bench.functional import distill_loss, slam_loss
from slam_bench.vocab import fused_linear_slam_loss, slam_loss_topk


def _options_repr(module: nn.Module, names) -> str:
    return ", ".join(f"{name}={getattr(module, name)!r}" for name in names)


class SLaMLoss(nn.Module):
    """`slam_loss` as a module.

    Args:
        normalize: s = 1/(k - 1) instead of s = 1.
        temperature: T > 0; the logits are divided by T.
        reduction: "mean", "sum" or "none" (per-row losses of the leading shape *).
        backend: "auto", "torch" or "triton".
        check_values: validate alpha, k, weight and the teacher rows (reads the tensors).

    Call as `loss(student_logits, teacher_probs, alpha, k, weight=None)`: student_logits and
    teacher_probs (*, C) with the classes last, e.g. (N, C) or (B, T, C); alpha, k and
    weight scalars or per-row tensors of shape * (or (N,)).
    """

    def __init__(self, *, normalize: bool = False, temperature: float = 1.0,
                 reduction: str = "mean", backend: str = "auto", check_values: bool = True):
        super().__init__()
        self.normalize, self.temperature = normalize, temperature
        self.reduction, self.backend, self.check_values = reduction, backend, check_values

    def forward(self, student_logits: Tensor, teacher_probs: Tensor, alpha: Union[float, Tensor],
                k: Union[int, Tensor], weight: Optional[Tensor] = None) -> Tensor:
        return slam_loss(student_logits, teacher_probs, alpha, k, normalize=self.normalize,
                         temperature=self.temperature, weight=weight, reduction=self.reduction,
                         backend=self.backend, check_values=self.check_values)

    def extra_repr(self):
        return _options_repr(self, ("normalize", "temperature", "reduction", "backend"))


class DistillLoss(nn.Module):
    """`distill_loss` (soft-label cross-entropy) as a module.

    Args:
        temperature: T > 0; the logits are divided by T.
        reduction: "mean", "sum" or "none" (per-row losses of the leading shape *).
        backend: "auto", "torch" or "triton".
        check_values: validate weight and the teacher rows (reads the tensors).

    Call as `loss(student_logits, teacher_probs, weight=None)`: (*, C) inputs with the
    classes last; weight None or of shape * (or (N,)).
    """

    def __init__(self, *, temperature: float = 1.0, reduction: str = "mean",
                 backend: str = "auto", check_values: bool = True):
        super().__init__()
        self.temperature, self.reduction = temperature, reduction
        self.backend, self.check_values = backend, check_values

    def forward(self, student_logits: Tensor, teacher_probs: Tensor,
                weight: Optional[Tensor] = None) -> Tensor:
        return distill_loss(student_logits, teacher_probs, temperature=self.temperature,
                            weight=weight, reduction=self.reduction, backend=self.backend,
                            check_values=self.check_values)

    def extra_repr(self):
        return _options_repr(self, ("temperature", "reduction", "backend"))


class SLaMTopKLoss(nn.Module):
    """`slam_loss_topk` (sparse top-K teacher) as a module.

    Args:
        normalize: s = 1/(k - 1) instead of s = 1.
        temperature: T > 0; the logits are divided by T.
        ignore_index: rows with teacher_ids[i, 0] == ignore_index are ignored.
        reduction: "mean" (over the rows not ignored), "sum" or "none" ((N,)).
        backend: "auto", "torch" or "triton".
        check_values: validate the teacher ids and probabilities, alpha, k and weight.

    Call as `loss(student_logits, teacher_ids, teacher_probs, alpha, k, weight=None)` with
    student_logits (N, V) and teacher_ids / teacher_probs (N, K).
    """

    def __init__(self, *, normalize: bool = False, temperature: float = 1.0,
                 ignore_index: int = -100, reduction: str = "mean", backend: str = "auto",
                 check_values: bool = True):
        super().__init__()
        self.normalize, self.temperature, self.ignore_index = normalize, temperature, ignore_index
        self.reduction, self.backend, self.check_values = reduction, backend, check_values

    def forward(self, student_logits: Tensor, teacher_ids: Tensor, teacher_probs: Tensor,
                alpha: Union[float, Tensor], k: Union[int, Tensor],
                weight: Optional[Tensor] = None) -> Tensor:
        return slam_loss_topk(student_logits, teacher_ids, teacher_probs, alpha, k,
                              normalize=self.normalize, temperature=self.temperature,
                              weight=weight, ignore_index=self.ignore_index,
                              reduction=self.reduction, backend=self.backend,
                              check_values=self.check_values)

    def extra_repr(self):
        return _options_repr(self, ("normalize", "temperature", "ignore_index", "reduction",
                                    "backend"))


class FusedLinearSLaMLoss(nn.Module):
    """`fused_linear_slam_loss` (output projection fused with the top-K SLaM loss; the N x V
    logits never exist) as a module. It holds no parameters: the projection is passed at
    call time, so it can be an LM head's weight that something else owns (tied embeddings).

    Args:
        normalize: s = 1/(k - 1) instead of s = 1.
        temperature: T > 0; the logits are divided by T.
        ignore_index: rows with teacher_ids[i, 0] == ignore_index are ignored.
        reduction: "mean" (over the rows not ignored), "sum" or "none" ((N,)).
        chunk_size: rows per chunk (None: about 2**24 logits per chunk); peak extra memory
            is one chunk_size x V buffer plus the gradients.
        backend: "auto", "torch" or "triton".
        check_values: validate the inputs' values (reads the tensors).

    Call as `loss(hidden, lm_weight, teacher_ids, teacher_probs, alpha, k, bias=None,
    weight=None)` with hidden (N, H), lm_weight (V, H), bias None or (V,).
    """

    def __init__(self, *, normalize: bool = False, temperature: float = 1.0,
                 ignore_index: int = -100, reduction: str = "mean",
                 chunk_size: Optional[int] = None, backend: str = "auto",
                 check_values: bool = True):
        super().__init__()
        self.normalize, self.temperature, self.ignore_index = normalize, temperature, ignore_index
        self.reduction, self.chunk_size = reduction, chunk_size
        self.backend, self.check_values = backend, check_values

    def forward(self, hidden: Tensor, lm_weight: Tensor, teacher_ids: Tensor,
                teacher_probs: Tensor, alpha: Union[float, Tensor], k: Union[int, Tensor],
                bias: Optional[Tensor] = None, weight: Optional[Tensor] = None) -> Tensor:
        return fused_linear_slam_loss(hidden, lm_weight, teacher_ids, teacher_probs, alpha, k,
                                      bias=bias, normalize=self.normalize,
                                      temperature=self.temperature, weight=weight,
                                      ignore_index=self.ignore_index, reduction=self.reduction,
                                      chunk_size=self.chunk_size, backend=self.backend,
                                      check_values=self.check_values)

    def extra_repr(self):
        return _options_repr(self, ("normalize", "temperature", "ignore_index", "reduction",
                                    "chunk_size", "backend"))
