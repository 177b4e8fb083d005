"""Synthetic datasets whose true label distribution p(y | x) is known for every example.

Because the truth is known, the probability that the teacher's top-1 label is right at x,
`alpha_true(x) = p(y = argmax teacher(x) | x)`, is known too, and the pipeline measures the
error of the alpha estimate (spec/slam.md section 3) against it (`alpha_true_mae` in the rows).

- `noisy_teacher`: a C-class Gaussian mixture (shared isotropic covariance, equal priors);
  labels are drawn from the exact Bayes posterior, which is stored per example.
- `halfspace_rcn`: the paper's theory setting: x uniform on the unit sphere in R^d, outside a
  margin band |<w, x>| < margin; the clean label is 1[<w, x> > 0]; training labels are flipped
  with probability `noise` (random classification noise), test labels are clean.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from slam_bench.data import register_dataset
from slam_bench.data.base import Dataset


@dataclass
class SyntheticDataset(Dataset):
    """A Dataset that also carries the true p(y | x): float32 (N, num_classes) per split."""
    posterior_train: Optional[Tensor] = None
    posterior_test: Optional[Tensor] = None


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def load_noisy_teacher(root=None, *, num_classes: int = 10, dim: int = 20, separation: float = 3.5,
                       n_train: int = 4000, n_test: int = 2000, seed: int = 0) -> SyntheticDataset:
    """Gaussian mixture: x = mu_y + N(0, I_dim), class means at distance `separation` from 0.

    Returns x float32 (N, dim), labels int64 sampled from the Bayes posterior (float32 (N, C)).
    """
    _check_positive_int("num_classes", num_classes, 2)
    _check_positive_int("dim", dim)
    _check_positive_int("n_train", n_train)
    _check_positive_int("n_test", n_test)
    if not separation > 0:
        raise ValueError(f"separation must be > 0, got {separation}")
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(num_classes, dim, generator=g, dtype=torch.float64)
    means = separation * means / means.norm(dim=1, keepdim=True)

    def draw(n):
        y_mix = torch.randint(num_classes, (n,), generator=g)
        x = means[y_mix] + torch.randn(n, dim, generator=g, dtype=torch.float64)
        # Equal priors and unit covariance: log p(c | x) = -|x - mu_c|^2 / 2 + const.
        post = torch.softmax(-0.5 * torch.cdist(x, means) ** 2, dim=1)
        y = torch.multinomial(post, 1, generator=g).squeeze(1)
        return x.float(), y, post.float()

    x_tr, y_tr, p_tr = draw(n_train)
    x_te, y_te, p_te = draw(n_test)
    bayes = float(p_te.max(dim=1).values.mean())
    return SyntheticDataset("noisy_teacher", x_tr, y_tr, x_te, y_te, num_classes=num_classes,
                            input_kind="vector",
                            meta={"dim": dim, "separation": separation, "seed": seed,
                                  "bayes_test_acc": round(bayes, 4)},
                            posterior_train=p_tr, posterior_test=p_te)


def load_halfspace_rcn(root=None, *, dim: int = 20, margin: float = 0.05, noise: float = 0.2,
                       n_train: int = 4000, n_test: int = 2000, seed: int = 0) -> SyntheticDataset:
    """Binary halfspace with a margin under random classification noise.

    x float32 (N, dim) on the unit sphere with |<w, x>| >= margin; clean label 1[<w, x> > 0];
    training labels flipped with probability `noise`, test labels clean.
    """
    _check_positive_int("dim", dim, 2)
    _check_positive_int("n_train", n_train)
    _check_positive_int("n_test", n_test)
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must lie in [0, 1), got {margin}")
    if not 0.0 <= noise < 0.5:
        raise ValueError(f"noise must lie in [0, 0.5), got {noise}")
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=g, dtype=torch.float64)
    w = w / w.norm()

    def draw(n, flip):
        xs = []
        while sum(len(x) for x in xs) < n:  # rejection sampling outside the margin band
            x = torch.randn(2 * n, dim, generator=g, dtype=torch.float64)
            x = x / x.norm(dim=1, keepdim=True)
            xs.append(x[(x @ w).abs() >= margin])
        x = torch.cat(xs)[:n]
        clean = (x @ w > 0).long()
        flips = (torch.rand(n, generator=g) < flip).long() if flip > 0 else torch.zeros(n, dtype=torch.long)
        y = clean ^ flips
        post = torch.full((n, 2), flip, dtype=torch.float32)
        post[torch.arange(n), clean] = 1.0 - flip
        return x.float(), y, post

    x_tr, y_tr, p_tr = draw(n_train, noise)
    x_te, y_te, p_te = draw(n_test, 0.0)
    return SyntheticDataset("halfspace_rcn", x_tr, y_tr, x_te, y_te, num_classes=2,
                            input_kind="vector",
                            meta={"dim": dim, "margin": margin, "noise": noise, "seed": seed},
                            posterior_train=p_tr, posterior_test=p_te)


register_dataset("noisy_teacher", load_noisy_teacher,
                 description="synthetic Gaussian mixture with a known Bayes posterior")
register_dataset("halfspace_rcn", load_halfspace_rcn,
                 description="synthetic halfspace with margin under random classification noise")
