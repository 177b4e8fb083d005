"""VID: variational information distillation (Ahn et al., CVPR 2019), on penultimate features.

The student's features s predict the teacher's features t through a Gaussian with mean mu(s)
and a learned per-channel variance sigma^2 = softplus(rho) + eps; the term is the negative
log-likelihood without its constant:
    vid = mean over rows and channels of 0.5 * (log sigma^2 + (t - mu(s))^2 / sigma^2).
It is added to the vanilla distillation loss with a factor beta (chosen by the pipeline).

mu: a linear map (hidden=None), or a two-layer MLP Linear -> ReLU -> Linear (hidden=int);
the paper used three 1x1 convolutions on feature maps, which on flat penultimate features is
an MLP. The variance starts at init_var (the paper's code starts at 5.0).
The teacher features are detached: the teacher is fixed.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def _positive_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


class VIDHead(nn.Module):
    """VIDHead(student_dim, teacher_dim, *, hidden=None, eps=1e-5, init_var=5.0).

    forward(student_feat (N, student_dim), teacher_feat (N, teacher_dim)) -> float32 scalar
    (0.0 when N = 0). Features may be any float dtype; the term is computed in float32.
    """

    def __init__(self, student_dim: int, teacher_dim: int, *, hidden: Optional[int] = None,
                 eps: float = 1e-5, init_var: float = 5.0):
        super().__init__()
        self.student_dim = _positive_int("student_dim", student_dim)
        self.teacher_dim = _positive_int("teacher_dim", teacher_dim)
        self.hidden = None if hidden is None else _positive_int("hidden", hidden)
        if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
            raise ValueError(f"eps must be a positive float, got {eps!r}")
        if not (isinstance(init_var, (int, float)) and math.isfinite(init_var) and init_var > eps):
            raise ValueError(f"init_var must be a float > eps={eps}, got {init_var!r}")
        self.eps, self.init_var = float(eps), float(init_var)
        if self.hidden is None:
            self.regressor = nn.Linear(student_dim, teacher_dim)
        else:
            self.regressor = nn.Sequential(nn.Linear(student_dim, self.hidden), nn.ReLU(),
                                           nn.Linear(self.hidden, teacher_dim))
        # softplus(rho) + eps = init_var  <=>  rho = log(expm1(init_var - eps)).
        rho0 = math.log(math.expm1(self.init_var - self.eps))
        self.rho = nn.Parameter(torch.full((teacher_dim,), rho0))

    def variance(self) -> Tensor:
        """(teacher_dim,) float32 per-channel variance softplus(rho) + eps."""
        return F.softplus(self.rho) + self.eps

    def forward(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        for name, t, d in (("student_feat", student_feat, self.student_dim),
                           ("teacher_feat", teacher_feat, self.teacher_dim)):
            if not isinstance(t, Tensor) or not t.is_floating_point():
                raise TypeError(f"{name} must be a float tensor, got "
                                f"{getattr(t, 'dtype', type(t).__name__)}")
            if t.dim() != 2 or t.shape[1] != d:
                raise ValueError(f"{name} must have shape (N, {d}), got {tuple(t.shape)}")
        if student_feat.shape[0] != teacher_feat.shape[0]:
            raise ValueError(f"teacher_feat must have the N={student_feat.shape[0]} rows of "
                             f"student_feat, got {teacher_feat.shape[0]}")
        if teacher_feat.device != student_feat.device:
            raise ValueError(f"teacher_feat must be on {student_feat.device} like student_feat, "
                             f"got {teacher_feat.device}")
        if student_feat.shape[0] == 0:
            return self.rho.sum() * 0.0  # keeps the graph (and dtype) of a real term
        param_dtype = next(self.regressor.parameters()).dtype
        mu = self.regressor(student_feat.to(param_dtype)).float()
        var = self.variance().float()
        t = teacher_feat.detach().float()
        return (0.5 * (torch.log(var) + (t - mu).square() / var)).mean()

    def params(self) -> dict:
        return {"vid_hidden": self.hidden or 0, "vid_eps": self.eps, "vid_init_var": self.init_var}

    def extra_repr(self) -> str:
        return (f"student_dim={self.student_dim}, teacher_dim={self.teacher_dim}, "
                f"hidden={self.hidden}, eps={self.eps}, init_var={self.init_var}")
