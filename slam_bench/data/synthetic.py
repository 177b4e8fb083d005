"""Synthetic datasets whose true label distribution p(y | x) is known for every example.

Because the truth is known, the probability that the teacher's top-1 label is right at x,
`alpha_true(x)`, is known too, and the pipeline measures the error of the alpha estimate
(docs/method.md section 3) against it (`alpha_true_mae` in the rows).

- `noisy_teacher`: a C-class Gaussian mixture (shared isotropic covariance, equal priors);
  labels are drawn from the exact Bayes posterior, which is stored per example. Its teacher
  is a network trained on A, so alpha_true(x) = p(y = teacher's top-1 | x).
- `halfspace_rcn`: the paper's theory setting (section 1 of docs/method.md, Kontonis et al.'s
  halfspace analysis): x uniform on the unit sphere in R^d outside a margin band
  |<w, x>| < margin, clean labels 1[<w, x> > 0] everywhere (A, V and test). The teacher is
  not a network but a noise model (`SyntheticTeacher`): its label on each example is the
  clean label flipped with a known probability eta(x) (random classification noise; uniform,
  or larger near the boundary with `noise_profile="margin"`), and its soft output puts
  1 - eta(x) on its label. The best halfspace is w itself, so the student's error against
  it is its disagreement with w's predictions on the test set.
- `known_noise` (slam_bench.data.known_noise): a teacher that follows SLaM's noise model
  exactly.

A synthetic teacher is requested with a mean accuracy (the suite's `teacher_accuracy`, one per
labeled size: the stand-in for the better teacher more labels would train) and a seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import torch
from torch import Tensor

from slam_bench.data.base import Dataset


@dataclass(frozen=True)
class SyntheticTeacher:
    """Teacher outputs drawn from a noise model instead of a trained network.

    probs_train (N_train, C), probs_test (N_test, C): float32 rows on the simplex whose argmax
    is the teacher's label; alpha_train (N_train,) float32: the true probability that the
    teacher's label is the clean label at each training example; params: scalars to log.
    """
    probs_train: Tensor
    probs_test: Tensor
    alpha_train: Tensor
    params: Dict[str, float] = field(default_factory=dict)


@dataclass
class SyntheticDataset(Dataset):
    """A Dataset that also carries the true p(y | x): float32 (N, num_classes) per split.

    teacher_fn(accuracy, seed) -> SyntheticTeacher: set when the dataset defines its own
    teacher (a noise model with the given mean accuracy on the training split).
    best_test_pred (N_test,) int64: the predictions of the best model of the student's class
    (e.g. the true halfspace), so the student's error against it can be logged.
    A SyntheticTeacher's probs_train / probs_test may be TopKProbs where the dataset's
    teacher_fn was asked for top-K rows (`sparse_teacher`).
    """
    posterior_train: Optional[Tensor] = None
    posterior_test: Optional[Tensor] = None
    teacher_fn: Optional[Callable[[float, int], SyntheticTeacher]] = None
    best_test_pred: Optional[Tensor] = None
    # True when teacher_fn also takes `topk=K` and then returns its rows as top-K
    # (slam_bench.vocab.teacher.TopKProbs) without forming the dense (N, C) rows: a large-class
    # teacher whose dense rows would not fit (vocab_known_noise).
    sparse_teacher: bool = False


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_accuracy(accuracy, low: float) -> float:
    """A synthetic teacher's mean accuracy: a float in (low, 1]."""
    if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) \
            or not low < float(accuracy) <= 1.0:
        raise ValueError(f"teacher accuracy must be a float in ({low:g}, 1], got {accuracy!r}")
    return float(accuracy)


def solve_mean(fn: Callable[[float], Tensor], target: float, lo: float, hi: float) -> float:
    """The c in [lo, hi] with fn(c).mean() == target, for fn non-decreasing in c (bisection to
    1e-9; the ends if the target is out of reach)."""
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if float(fn(mid).double().mean()) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


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


def load_halfspace_rcn(root=None, *, dim: int = 20, margin: float = 0.05,
                       noise_profile: str = "uniform", n_train: int = 25000, n_test: int = 5000,
                       seed: int = 0) -> SyntheticDataset:
    """Binary halfspace with a margin; the teacher is random classification noise on it.

    x float32 (N, dim) on the unit sphere with |<w, x>| >= margin; labels 1[<w, x> > 0] (clean
    on both splits). `teacher_fn(accuracy, seed)` flips each label with probability eta(x):
    "uniform": eta(x) = 1 - accuracy; "margin": eta(x) = min(c (1 - |<w, x>|), 0.49), c chosen
    so that the mean of eta over the training split is 1 - accuracy (more noise near the
    boundary, where a weak teacher errs). accuracy must exceed 1/2 (eta < 1/2: RCN).
    """
    _check_positive_int("dim", dim, 2)
    _check_positive_int("n_train", n_train)
    _check_positive_int("n_test", n_test)
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must lie in [0, 1), got {margin}")
    if noise_profile not in ("uniform", "margin"):
        raise ValueError(f"noise_profile must be 'uniform' or 'margin', got {noise_profile!r}")
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=g, dtype=torch.float64)
    w = w / w.norm()

    def draw(n):
        xs = []
        while sum(len(x) for x in xs) < n:  # rejection sampling outside the margin band
            x = torch.randn(2 * n, dim, generator=g, dtype=torch.float64)
            x = x / x.norm(dim=1, keepdim=True)
            xs.append(x[(x @ w).abs() >= margin])
        return torch.cat(xs)[:n]

    x_tr, x_te = draw(n_train), draw(n_test)
    y_tr, y_te = (x_tr @ w > 0).long(), (x_te @ w > 0).long()
    dist_tr, dist_te = (x_tr @ w).abs(), (x_te @ w).abs()

    def eta_of(dist, c):
        return torch.full_like(dist, c) if noise_profile == "uniform" else (c * (1 - dist)).clamp(max=0.49)

    def teacher(accuracy: float, teacher_seed: int) -> SyntheticTeacher:
        accuracy = check_accuracy(accuracy, 0.5)
        eta_mean = 1.0 - accuracy
        c = eta_mean if noise_profile == "uniform" else \
            solve_mean(lambda c: eta_of(dist_tr, c), eta_mean, 0.0, 10.0)
        tg = torch.Generator().manual_seed(int(teacher_seed))

        def noisy(y, dist):
            eta = eta_of(dist, c)
            t = y ^ (torch.rand(len(y), generator=tg, dtype=torch.float64) < eta).long()
            probs = torch.stack([eta, eta], dim=1)
            probs[torch.arange(len(y)), t] = 1.0 - eta
            return probs.float(), (1.0 - eta).float()

        p_tr, alpha_tr = noisy(y_tr, dist_tr)
        p_te, _ = noisy(y_te, dist_te)
        return SyntheticTeacher(p_tr, p_te, alpha_tr,
                                {"teacher_noise_eta": round(eta_mean, 6),
                                 "teacher_noise_eta_max": round(float(eta_of(dist_tr, c).max()), 6)})

    def onehot(y):
        return torch.nn.functional.one_hot(y, 2).float()

    return SyntheticDataset("halfspace_rcn", x_tr.float(), y_tr, x_te.float(), y_te, num_classes=2,
                            input_kind="vector",
                            meta={"dim": dim, "margin": margin, "noise_profile": noise_profile,
                                  "seed": seed, "best_test_error": 0.0},
                            posterior_train=onehot(y_tr), posterior_test=onehot(y_te),
                            teacher_fn=teacher, best_test_pred=y_te)
