"""`known_noise`: data whose teacher follows SLaM's noise model exactly (spec/slam.md section 2).

The clean task: x = mu_c + N(0, I_dim) for a uniformly drawn component c, with C class means at
distance `separation` from the origin; the label is the nearest mean (a Voronoi partition, so
the clean task is learnable without error and the test labels are clean). Each example's
candidate set is its k nearest means (its label first): the classes a teacher would confuse it
with.

The teacher (`teacher_fn(accuracy, seed)`):
- alpha(x), the probability that its label is the clean one, rises along a confidence
  direction v: alpha(x) = clip(b + spread * (2 r(x) - 1), alpha_min, 1), where r(x) in (0, 1)
  is the rank of <v, x> among the training examples and b is set so that the mean of alpha
  over the training split is `accuracy`;
- with probability alpha(x) its label is the clean label, otherwise one of the other k - 1
  candidates, uniformly: this is SLaM's model, where the true class wins with probability
  alpha(x) and otherwise another class of the teacher's top-k does;
- whether it errs and which candidate it picks are decided by a uniform u(x) compared with
  alpha(x): for a fraction `coherent` of the examples u comes from a smooth random field
  (random Fourier features of length scale `length_scale`, mapped to uniform by its rank), so
  neighbouring examples share their mistakes (systematic errors); for the rest u is drawn
  independently per example. Either way u is uniform, so P(error | x) = 1 - alpha(x);
- its soft output puts alpha(x) on its label and splits 1 - alpha(x) over the other
  candidates in a random order with slightly unequal shares (`tie_break`; ties would hide the
  candidate set's size from the top-k estimate), and 1e-4 on every class outside the
  candidate set. Its margin is therefore an increasing function of alpha(x) alone: the
  isotonic estimate on V can recover alpha exactly, up to V's size.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from slam_bench.data import register_dataset
from slam_bench.data.synthetic import (SyntheticDataset, SyntheticTeacher, _check_positive_int,
                                       check_accuracy, solve_mean)

OUTSIDE_MASS = 1e-4  # teacher probability of each class outside the candidate set
FIELD_FEATURES = 256  # random Fourier features of the coherent error field


def _rank01(values: Tensor, reference: Tensor) -> Tensor:
    """(N,) values -> (N,) float64 in (0, 1): their position among the sorted `reference`."""
    ref = reference.sort().values
    pos = torch.searchsorted(ref, values.contiguous()).double()
    return (pos + 0.5) / (len(ref) + 1.0)


def _field(x: Tensor, length_scale: float, g: torch.Generator) -> Tensor:
    """A smooth random function of x (N, d) float64 -> (N,): random Fourier features of a
    Gaussian kernel with the given length scale."""
    w = torch.randn(x.shape[1], FIELD_FEATURES, generator=g, dtype=torch.float64) / length_scale
    b = 2 * math.pi * torch.rand(FIELD_FEATURES, generator=g, dtype=torch.float64)
    return torch.cos(x @ w + b).sum(dim=1)


def _check_unit(name: str, value, low_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and \
        ((0.0 < value <= 1.0) if low_open else (0.0 <= value <= 1.0))
    if not ok:
        raise ValueError(f"{name} must lie in {'(0, 1]' if low_open else '[0, 1]'}, got {value!r}")
    return float(value)


def load_known_noise(root=None, *, num_classes: int = 10, dim: int = 32, k: int = 3,
                     separation: float = 4.0, n_train: int = 25000, n_test: int = 5000,
                     spread: float = 0.3, alpha_min: float = 0.4, coherent: float = 0.5,
                     length_scale: float = 4.0, tie_break: float = 0.1,
                     seed: int = 0) -> SyntheticDataset:
    """The known-answer dataset (module docstring): x float32 (N, dim), clean int64 labels.

    Its `teacher_fn(accuracy, seed)` returns a `SyntheticTeacher` whose alpha_train is the
    true alpha(x); `posterior_*` are one-hot at the clean labels.
    """
    _check_positive_int("num_classes", num_classes, 3)
    _check_positive_int("dim", dim, 2)
    _check_positive_int("k", k, 2)
    if k > num_classes:
        raise ValueError(f"k must be <= num_classes={num_classes}, got {k}")
    _check_positive_int("n_train", n_train)
    _check_positive_int("n_test", n_test)
    for name, value in (("separation", separation), ("length_scale", length_scale)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a float > 0, got {value!r}")
    spread, coherent = _check_unit("spread", spread), _check_unit("coherent", coherent)
    tie_break = _check_unit("tie_break", tie_break)
    # The teacher's label must stay its argmax: alpha > (1 - alpha) * (largest other share).
    top_other = (1 + tie_break) / (k - 1) if k > 2 else 1.0
    floor = top_other / (1 + top_other)
    if not floor < alpha_min <= 1.0:
        raise ValueError(f"alpha_min must lie in ({floor:.3f}, 1] for k={k} and "
                         f"tie_break={tie_break} (the teacher's label must stay its argmax), "
                         f"got {alpha_min!r}")
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(num_classes, dim, generator=g, dtype=torch.float64)
    means = separation * means / means.norm(dim=1, keepdim=True)
    v = torch.randn(dim, generator=g, dtype=torch.float64)
    v = v / v.norm()
    n = n_train + n_test
    x = means[torch.randint(num_classes, (n,), generator=g)] + \
        torch.randn(n, dim, generator=g, dtype=torch.float64)
    cand = torch.cdist(x, means).argsort(dim=1)[:, :k]  # (N, k): the label, then its confusers
    y = cand[:, 0].clone()
    rank = _rank01(x @ v, (x @ v)[:n_train])  # confidence coordinate, uniform on the train split

    def alpha_of(b: float) -> Tensor:
        return (b + spread * (2 * rank - 1)).clamp(alpha_min, 1.0)

    def teacher(accuracy: float, teacher_seed: int) -> SyntheticTeacher:
        accuracy = check_accuracy(accuracy, alpha_min)
        b = solve_mean(lambda b: alpha_of(b)[:n_train], accuracy, alpha_min - spread, 1.0 + spread)
        alpha = alpha_of(b)
        tg = torch.Generator().manual_seed(int(teacher_seed))
        # Two uniforms per example: u_err (does it err?) and u_pick (which candidate?), each
        # from the smooth field for the coherent examples and independent for the others.
        coh = torch.rand(n, generator=tg) < coherent
        u_err, u_pick = (torch.where(coh, _rank01(f, f[:n_train]), torch.rand(n, generator=tg,
                                                                               dtype=torch.float64))
                         for f in (_field(x, length_scale, tg), _field(x, length_scale, tg)))
        wrong = u_err >= alpha
        pick = 1 + (u_pick * (k - 1)).long().clamp(max=k - 2)  # an index among cand[:, 1:]
        label_pos = torch.where(wrong, pick, torch.zeros_like(pick))
        # The other candidates get 1 - alpha in a random order, shares tie_break apart.
        shares = 1.0 + tie_break * torch.linspace(1, -1, k - 1, dtype=torch.float64)
        shares = shares / shares.sum()
        others = torch.stack([torch.arange(k)[torch.arange(k) != p] for p in range(k)])  # (k, k-1)
        perm = torch.rand(n, k - 1, generator=tg).argsort(dim=1)
        other_pos = others[label_pos].gather(1, perm)  # (N, k-1) positions in cand, shuffled
        probs = torch.full((n, num_classes), OUTSIDE_MASS, dtype=torch.float64)
        scale = 1.0 - OUTSIDE_MASS * (num_classes - k)
        rows = torch.arange(n)
        probs[rows, cand[rows, label_pos]] = scale * alpha
        probs.scatter_(1, cand.gather(1, other_pos), scale * (1 - alpha)[:, None] * shares[None, :])
        return SyntheticTeacher(probs[:n_train].float(), probs[n_train:].float(),
                                alpha[:n_train].float(),
                                {"teacher_alpha_mean": round(accuracy, 6),
                                 "teacher_alpha_min": round(float(alpha.min()), 6),
                                 "teacher_alpha_max": round(float(alpha.max()), 6)})

    onehot = torch.nn.functional.one_hot(y, num_classes).float()
    return SyntheticDataset("known_noise", x[:n_train].float(), y[:n_train], x[n_train:].float(),
                            y[n_train:], num_classes=num_classes, input_kind="vector",
                            meta={"dim": dim, "k": k, "separation": separation, "spread": spread,
                                  "alpha_min": alpha_min, "coherent": coherent,
                                  "length_scale": length_scale, "tie_break": tie_break,
                                  "seed": seed},
                            posterior_train=onehot[:n_train], posterior_test=onehot[n_train:],
                            teacher_fn=teacher)


register_dataset("known_noise", load_known_noise,
                 description="synthetic teacher that follows SLaM's noise model exactly")
