"""UPS: uncertainty-aware pseudo-label selection (Rizve et al., "In defense of
pseudo-labeling", ICLR 2021), as a distillation baseline.

The teacher's soft labels are turned into hard, selected ones:
- a positive label (the teacher's argmax) where the teacher's max probability >= tau_p and the
  uncertainty of that class <= kappa_p; trained with cross-entropy;
- negative labels for every class with probability <= tau_n and uncertainty <= kappa_n
  ("this example is not of class j"); trained with the negative cross-entropy averaged over
  the row's selected negatives, -(1/|neg|) sum_{j in neg} log(1 - f_j), as in the paper's
  negative-learning loss (so a row weighs the same whether it has 1 negative or C - 1);
- rows with no selected label contribute 0.
The uncertainty is the standard deviation over K stochastic teacher passes (MC dropout, K = 10
in the paper; `mc_dropout_probs` computes it). One labelling round: the selection is made once
from the teacher's outputs, not iterated with re-trained students (the paper's later rounds
need a re-trained teacher; the project's pipeline does one round and logs it).
A row may hold a positive label and negative labels at once (as in the UPS paper's
multi-class setting); since tau_n < tau_p, a row's positive class is never one of its negatives.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from slam_bench import checks
from slam_bench.losses._common import check_logits, check_probs, reduce_rows, work_dtype


@dataclass
class UPSSelection:
    """pos_mask (N,) bool; pos_label (N,) int64 (the teacher argmax, meaningful where
    pos_mask); neg_mask (N, C) bool; the thresholds that produced them."""
    pos_mask: Tensor
    pos_label: Tensor
    neg_mask: Tensor
    tau_p: float
    kappa_p: float
    tau_n: float
    kappa_n: float

    def subset(self, index) -> "UPSSelection":
        """The selection of some rows (an index or mask tensor, or a slice), e.g. a minibatch
        of U selected once for the whole set; moved to index's device when it is a tensor."""
        device = index.device if isinstance(index, Tensor) else self.pos_mask.device
        sel = self.to(device)
        return UPSSelection(sel.pos_mask[index], sel.pos_label[index], sel.neg_mask[index],
                            self.tau_p, self.kappa_p, self.tau_n, self.kappa_n)

    def to(self, device) -> "UPSSelection":
        return UPSSelection(self.pos_mask.to(device), self.pos_label.to(device),
                            self.neg_mask.to(device), self.tau_p, self.kappa_p, self.tau_n,
                            self.kappa_n)

    def stats(self) -> dict:
        """Plain numbers for a result row: the thresholds, the fraction of rows with a positive
        label, the fraction with any label (positive or negative), the mean number of negative
        labels per row and the fraction of rows ignored (1 - the labeled fraction)."""
        n = self.pos_mask.shape[0]
        any_sel = self.pos_mask | self.neg_mask.any(dim=1)
        return {
            "ups_tau_p": self.tau_p, "ups_kappa_p": self.kappa_p,
            "ups_tau_n": self.tau_n, "ups_kappa_n": self.kappa_n,
            "ups_pos_fraction": float(self.pos_mask.float().mean()) if n else 0.0,
            "ups_labeled_fraction": float(any_sel.float().mean()) if n else 0.0,
            "ups_neg_per_row": float(self.neg_mask.sum(dim=1).float().mean()) if n else 0.0,
            "ups_ignored_fraction": float((~any_sel).float().mean()) if n else 0.0,
        }


def _check_unit(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1], got {type(value).__name__}")
    if not 0.0 <= float(value) <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be a float in [0, 1], got {value}")
    return float(value)


def ups_select(teacher_probs: Tensor, uncertainty: Tensor, *, tau_p: float = 0.7,
               kappa_p: float = 0.05, tau_n: float = 0.05, kappa_n: float = 0.005,
               check_values: bool = True) -> UPSSelection:
    """Select UPS positive and negative pseudo-labels.

    Args:
        teacher_probs: (N, C) float teacher probabilities (rows on the simplex; e.g. the mean
            over the MC-dropout passes).
        uncertainty: (N, C) float, non-negative: per-class std over K stochastic teacher passes.
        tau_p, kappa_p: positive thresholds (max prob >= tau_p, its uncertainty <= kappa_p).
        tau_n, kappa_n: negative thresholds (prob <= tau_n, uncertainty <= kappa_n); tau_n < tau_p.
    Returns:
        UPSSelection with masks on teacher_probs' device.
    """
    tau_p, kappa_p = _check_unit("tau_p", tau_p), _check_unit("kappa_p", kappa_p)
    tau_n, kappa_n = _check_unit("tau_n", tau_n), _check_unit("kappa_n", kappa_n)
    if not tau_n < tau_p:
        raise ValueError(f"tau_n must be smaller than tau_p, got tau_n={tau_n}, tau_p={tau_p}")
    check_probs("teacher_probs", teacher_probs, check_values)
    if not isinstance(uncertainty, Tensor):
        raise TypeError(f"uncertainty must be a torch.Tensor, got {type(uncertainty).__name__}")
    if not uncertainty.is_floating_point():
        raise TypeError(f"uncertainty must be a float tensor, got {uncertainty.dtype}")
    if uncertainty.shape != teacher_probs.shape:
        raise ValueError(f"uncertainty must have the shape of teacher_probs "
                         f"{tuple(teacher_probs.shape)}, got {tuple(uncertainty.shape)}")
    if uncertainty.device != teacher_probs.device:
        raise ValueError(f"uncertainty must be on {teacher_probs.device} like teacher_probs, "
                         f"got {uncertainty.device}")
    if check_values and uncertainty.numel():
        u = uncertainty.float()
        if not bool(torch.isfinite(u).all()) or bool((u < 0).any()):
            raise ValueError("uncertainty must be finite and non-negative (a standard deviation)")
    p = teacher_probs.float()
    u = uncertainty.float()
    pmax, label = p.max(dim=1)
    u_label = u.gather(1, label[:, None]).squeeze(1)
    pos_mask = (pmax >= tau_p) & (u_label <= kappa_p)
    neg_mask = (p <= tau_n) & (u <= kappa_n)
    return UPSSelection(pos_mask, label.long(), neg_mask, tau_p, kappa_p, tau_n, kappa_n)


def _log1m_softmax(logits: Tensor) -> Tensor:
    """log(1 - softmax(logits)) (N, C), stable everywhere.

    A non-argmax class has f_j <= 1/2, where log1p(-f_j) is exact. The argmax class can have
    f_j = 1 - tiny, so there 1 - f_j = sum of the other probabilities is formed as
    logsumexp(other logits) - logsumexp(all logits), with no cancellation.
    """
    logf = torch.log_softmax(logits, dim=1)
    top = logits.argmax(dim=1, keepdim=True)
    is_top = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, top, True)
    # The argmax entry is replaced before log1p so that its (unused) gradient stays finite.
    f_safe = torch.where(is_top, torch.zeros_like(logf), logf.exp())
    others = torch.logsumexp(logits.masked_fill(is_top, float("-inf")), dim=1, keepdim=True)
    top_val = others - torch.logsumexp(logits, dim=1, keepdim=True)
    return torch.where(is_top, top_val, torch.log1p(-f_safe))


def ups_loss(student_logits: Tensor, selection: UPSSelection, *, weight: Optional[Tensor] = None,
             reduction: str = "mean", check_values: bool = True) -> Tensor:
    """Cross-entropy on the selected positive plus -(1/|neg|) sum_{neg} log(1 - f_j) on the
    row's selected negatives (0 where a row has none).

    Args:
        student_logits: (N, C) float16/bfloat16/float32/float64 logits; f = softmax(z).
        selection: the `ups_select` result for the same N rows and C classes.
        weight: None or (N,) non-negative per-row factors.
        reduction: "mean" (divides by N, unselected rows included), "sum" or "none".
    Returns:
        float32 (float64 for float64 logits) scalar, or (N,) with reduction="none".
    """
    n, c = check_logits(student_logits, check_values)
    if not isinstance(selection, UPSSelection):
        raise TypeError(f"selection must be a UPSSelection (from ups_select), "
                        f"got {type(selection).__name__}")
    if tuple(selection.neg_mask.shape) != (n, c) or tuple(selection.pos_mask.shape) != (n,) \
            or tuple(selection.pos_label.shape) != (n,):
        raise ValueError(f"selection must be made for ({n}, {c}) logits, got neg_mask "
                         f"{tuple(selection.neg_mask.shape)}, pos_mask {tuple(selection.pos_mask.shape)}")
    checks.check_same_device_named("selection", selection.neg_mask, student_logits.device)
    checks.check_weight(weight, n, student_logits.device, check_values)
    checks.check_choice("reduction", reduction, checks.REDUCTIONS)
    z = student_logits.to(work_dtype(student_logits))
    logf = torch.log_softmax(z, dim=1)
    ce = -logf.gather(1, selection.pos_label[:, None]).squeeze(1)
    pos = torch.where(selection.pos_mask, ce, torch.zeros_like(ce))
    neg_sum = torch.where(selection.neg_mask, _log1m_softmax(z), torch.zeros_like(z)).sum(dim=1)
    n_neg = selection.neg_mask.sum(dim=1).clamp(min=1).to(z.dtype)  # rows with none: 0 / 1
    neg = -neg_sum / n_neg
    return reduce_rows(pos + neg, weight, reduction)


@torch.no_grad()
def mc_dropout_probs(model: nn.Module, x: Tensor, *, passes: int = 10,
                     temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """Teacher probabilities and their uncertainty from `passes` MC-dropout forward passes.

    Only the dropout layers are switched to train mode (batch-norm statistics stay frozen).
    Returns (mean probs (N, C) float32, std over passes (N, C) float32, ddof = 0).
    With no dropout layer every pass is identical and the std is 0.
    """
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise ValueError(f"passes must be an int >= 1, got {passes!r}")
    checks.check_temperature(temperature)
    was_training = model.training
    dropouts = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    model.eval()
    for m in dropouts:
        m.train()
    try:
        probs = torch.stack([torch.softmax(model(x).float() / temperature, dim=1)
                             for _ in range(passes)])
    finally:
        model.train(was_training)
    return probs.mean(dim=0), probs.std(dim=0, correction=0)
