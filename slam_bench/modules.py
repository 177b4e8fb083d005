"""nn.Module wrappers in the style of nn.CrossEntropyLoss: fixed options at construction,
tensors at call time."""
from __future__ import annotations

from torch import nn

from slam_bench.functional import distill_loss, slam_loss
from slam_bench.vocab import fused_linear_slam_loss, slam_loss_topk


class SLaMLoss(nn.Module):
    """`SLaMLoss(normalize=False, temperature=1.0, reduction="mean", backend="auto")`.

    Call as `loss(student_logits, teacher_probs, alpha, k, weight=None)`; see `slam_loss`.
    """

    def __init__(self, *, normalize=False, temperature=1.0, reduction="mean", backend="auto",
                 check_values=True):
        super().__init__()
        self.normalize, self.temperature = normalize, temperature
        self.reduction, self.backend, self.check_values = reduction, backend, check_values

    def forward(self, student_logits, teacher_probs, alpha, k, weight=None):
        return slam_loss(student_logits, teacher_probs, alpha, k, normalize=self.normalize,
                         temperature=self.temperature, weight=weight, reduction=self.reduction,
                         backend=self.backend, check_values=self.check_values)

    def extra_repr(self):
        return (f"normalize={self.normalize}, temperature={self.temperature}, "
                f"reduction={self.reduction!r}, backend={self.backend!r}")


class DistillLoss(nn.Module):
    """`DistillLoss(temperature=1.0, reduction="mean", backend="auto")`.

    Call as `loss(student_logits, teacher_probs, weight=None)`; see `distill_loss`.
    """

    def __init__(self, *, temperature=1.0, reduction="mean", backend="auto", check_values=True):
        super().__init__()
        self.temperature, self.reduction = temperature, reduction
        self.backend, self.check_values = backend, check_values

    def forward(self, student_logits, teacher_probs, weight=None):
        return distill_loss(student_logits, teacher_probs, temperature=self.temperature,
                            weight=weight, reduction=self.reduction, backend=self.backend,
                            check_values=self.check_values)

    def extra_repr(self):
        return f"temperature={self.temperature}, reduction={self.reduction!r}, backend={self.backend!r}"


class SLaMTopKLoss(nn.Module):
    """`SLaMTopKLoss(normalize=False, temperature=1.0, ignore_index=-100, reduction="mean",
    backend="auto")`. Call as `loss(student_logits, teacher_ids, teacher_probs, alpha, k,
    weight=None)`; see `slam_loss_topk`."""

    def __init__(self, *, normalize=False, temperature=1.0, ignore_index=-100, reduction="mean",
                 backend="auto", check_values=True):
        super().__init__()
        self.options = dict(normalize=normalize, temperature=temperature,
                            ignore_index=ignore_index, reduction=reduction, backend=backend,
                            check_values=check_values)

    def forward(self, student_logits, teacher_ids, teacher_probs, alpha, k, weight=None):
        return slam_loss_topk(student_logits, teacher_ids, teacher_probs, alpha, k,
                              weight=weight, **self.options)

    def extra_repr(self):
        return ", ".join(f"{key}={val!r}" for key, val in self.options.items())


class FusedLinearSLaMLoss(SLaMTopKLoss):
    """`FusedLinearSLaMLoss(normalize=False, temperature=1.0, ignore_index=-100,
    reduction="mean", chunk_size=None, backend="auto")`, the output projection fused with the
    loss. Call as `loss(hidden, lm_weight, teacher_ids, teacher_probs, alpha, k, bias=None,
    weight=None)`; see `fused_linear_slam_loss`."""

    def __init__(self, *, chunk_size=None, **options):
        super().__init__(**options)
        self.options["chunk_size"] = chunk_size

    def forward(self, hidden, lm_weight, teacher_ids, teacher_probs, alpha, k, bias=None,
                weight=None):
        return fused_linear_slam_loss(hidden, lm_weight, teacher_ids, teacher_probs, alpha, k,
                                      bias=bias, weight=weight, **self.options)
