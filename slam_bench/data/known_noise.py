"""`known_noise`: data whose teacher follows SLaM's noise model exactly, or breaks it in one
named way (a *scenario*; see docs/estimators.md).

The clean task: x = mu_c + N(0, I_dim) for a uniformly drawn component c, with C class means at
distance `separation` from the origin; the label is the nearest mean (a Voronoi partition, so
the clean task is learnable without error and the test labels are clean). Each example's
candidate set is its `candidates` nearest means (its label first): the classes a teacher would
confuse it with.

The teacher (`teacher_fn(accuracy, seed, scenario="model")`):
- alpha(x), the probability that its label is the clean one, rises along a confidence
  direction v: alpha(x) = clip(b + spread * (2 r(x) - 1), alpha_min, 1), where r(x) in (0, 1)
  is the rank of <v, x> among the training examples and b is set so that the mean of alpha
  over the training split is `accuracy`;
- with probability alpha(x) its label is the clean label, otherwise one of the other
  candidates, the i-th nearest with probability proportional to pick_decay^(i-1) (uniformly
  for pick_decay = 1: SLaM's model, where the true class wins with probability alpha(x) and
  otherwise another class of the teacher's top-k does);
- whether it errs and which candidate it picks are decided by a uniform u(x) compared with
  alpha(x): for a fraction `coherent` of the examples u comes from a smooth random field
  (random Fourier features of length scale `length_scale`, mapped to uniform by its rank), so
  neighbouring examples share their mistakes (systematic errors); for the rest u is drawn
  independently per example. Either way u is uniform, so P(error | x) = 1 - alpha(x);
- its soft output puts its shown confidence on its label and splits the rest over `shown` - 1
  of the other candidates (drawn at random) in a random order with slightly unequal shares
  (`tie_break`; ties would hide the set's size from the k estimate); every other class gets
  about 1e-4 (jittered by `tie_break`, so no two tie). The shown confidence, capped at
  1 - CANDIDATE_FLOOR = 0.99, is alpha(x) ("monotone": the margin is a non-decreasing function
  of alpha, so the isotonic estimate on V can recover alpha up to V's size and the cap) or, with margin "folded", alpha at the mirror image
  max(r, 1 - r) of the confidence coordinate: where the teacher is least reliable it looks as
  sure as where it is most reliable, so the margin is not monotone in alpha.

Scenarios (`SCENARIOS`), each its own benchmark cell:
- "model": SLaM's model holds: `k` candidates, all shown, uniform picks, monotone margin.
- "wide": 6 candidates, of which the output shows 3: the true label lies outside the top-k
  that V supports for most mistakes (candidate sets larger than the k the rule picks).
- "uneven": 4 candidates, the wrong label the nearest one most of the time (pick_decay 0.3:
  72% / 22% / 6%), not uniformly over the candidates as SLaM's mix assumes.
- "folded": the model's sets and picks, with a margin that is not monotone in alpha.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from slam_bench.data.synthetic import (SyntheticDataset, SyntheticTeacher, _check_positive_int,
                                       check_accuracy, solve_mean)

OUTSIDE_MASS = 1e-4  # teacher probability of each class it does not show (before jitter)
# Named ways the teacher follows or breaks SLaM's model (module docstring); "candidates" None
# means the loader's k. Keys: candidates, shown (None: all candidates), pick_decay, margin.
SCENARIOS = {
    "model": {},
    "wide": {"candidates": 6, "shown": 3},
    "uneven": {"candidates": 4, "pick_decay": 0.3},
    "folded": {"margin": "folded"},
}
MARGINS = ("monotone", "folded")
# The teacher's shown confidence is at most 1 - CANDIDATE_FLOOR: its other shown candidates
# keep that much, far above the classes it does not show, so they stay its top-k even where it
# is (falsely, with a folded margin) sure.
CANDIDATE_FLOOR = 0.01
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


def _scenario(name, k: int, num_classes: int, tie_break: float, alpha_min: float):
    """A scenario's (candidates, shown, pick_decay, margin), checked against the dataset."""
    if name not in SCENARIOS:
        raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}, got {name!r}")
    opts = SCENARIOS[name]
    kc = opts.get("candidates") or k
    shown = opts.get("shown") or kc
    decay, margin = float(opts.get("pick_decay", 1.0)), opts.get("margin", "monotone")
    if not 2 <= shown <= kc <= num_classes:
        raise ValueError(f"scenario {name!r} needs 2 <= shown ({shown}) <= candidates ({kc}) "
                         f"<= num_classes ({num_classes})")
    if not 0 < decay <= 1 or margin not in MARGINS:
        raise ValueError(f"scenario {name!r}: pick_decay must lie in (0, 1] and margin be one "
                         f"of {', '.join(MARGINS)}; got {decay!r}, {margin!r}")
    # The teacher's label must stay its argmax: alpha > (1 - alpha) * (largest other share).
    top_other = (1 + tie_break) / (shown - 1) if shown > 2 else 1.0
    floor = top_other / (1 + top_other)
    if not floor < alpha_min <= 1.0:
        raise ValueError(f"alpha_min must lie in ({floor:.3f}, 1] for scenario {name!r} "
                         f"(shows {shown} classes) and tie_break={tie_break} (the teacher's "
                         f"label must stay its argmax), got {alpha_min!r}")
    return kc, shown, decay, margin


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
    _scenario("model", k, num_classes, tie_break, alpha_min)  # alpha_min fits SLaM's model
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(num_classes, dim, generator=g, dtype=torch.float64)
    means = separation * means / means.norm(dim=1, keepdim=True)
    v = torch.randn(dim, generator=g, dtype=torch.float64)
    v = v / v.norm()
    n = n_train + n_test
    x = means[torch.randint(num_classes, (n,), generator=g)] + \
        torch.randn(n, dim, generator=g, dtype=torch.float64)
    order = torch.cdist(x, means).argsort(dim=1)  # (N, C): the label, then by distance
    y = order[:, 0].clone()
    rank = _rank01(x @ v, (x @ v)[:n_train])  # confidence coordinate, uniform on the train split

    def alpha_of(b: float) -> Tensor:
        return (b + spread * (2 * rank - 1)).clamp(alpha_min, 1.0)

    def teacher(accuracy: float, teacher_seed: int, scenario: str = "model") -> SyntheticTeacher:
        kc, shown, decay, margin = _scenario(scenario, k, num_classes, tie_break, alpha_min)
        accuracy = check_accuracy(accuracy, alpha_min)
        b = solve_mean(lambda b: alpha_of(b)[:n_train], accuracy, alpha_min - spread, 1.0 + spread)
        alpha = alpha_of(b)
        # The confidence the teacher shows: alpha itself, or alpha at the mirror image of the
        # confidence coordinate ("folded": a margin not monotone in alpha).
        conf = alpha if margin == "monotone" else \
            (b + spread * (2 * torch.maximum(rank, 1 - rank) - 1)).clamp(alpha_min, 1.0)
        conf = conf.clamp(max=1.0 - CANDIDATE_FLOOR)
        cand = order[:, :kc]  # (N, kc): the label, then its confusers
        tg = torch.Generator().manual_seed(int(teacher_seed))
        # Two uniforms per example: u_err (does it err?) and u_pick (which candidate?), each
        # from the smooth field for the coherent examples and independent for the others.
        coh = torch.rand(n, generator=tg) < coherent
        u_err, u_pick = (torch.where(coh, _rank01(f, f[:n_train]), torch.rand(n, generator=tg,
                                                                               dtype=torch.float64))
                         for f in (_field(x, length_scale, tg), _field(x, length_scale, tg)))
        wrong = u_err >= alpha
        weights = decay ** torch.arange(kc - 1, dtype=torch.float64)
        cdf = weights.cumsum(0) / weights.sum()
        pick = 1 + torch.searchsorted(cdf, u_pick, right=True).clamp(max=kc - 2)  # in cand[:, 1:]
        label_pos = torch.where(wrong, pick, torch.zeros_like(pick))
        # shown - 1 of the other candidates, in a random order, share 1 - conf, tie_break apart.
        shares = 1.0 + tie_break * torch.linspace(1, -1, shown - 1, dtype=torch.float64)
        shares = shares / shares.sum()
        others = torch.stack([torch.arange(kc)[torch.arange(kc) != p] for p in range(kc)])
        perm = torch.rand(n, kc - 1, generator=tg).argsort(dim=1)[:, :shown - 1]
        other_pos = others[label_pos].gather(1, perm)  # (N, shown-1) positions in cand
        # Every class not shown: about OUTSIDE_MASS, jittered so that none tie.
        probs = OUTSIDE_MASS * (1 + tie_break * (2 * torch.rand(n, num_classes, generator=tg,
                                                                dtype=torch.float64) - 1))
        rows = torch.arange(n)
        shown_cls = torch.cat([cand[rows, label_pos][:, None], cand.gather(1, other_pos)], dim=1)
        probs.scatter_(1, shown_cls, 0.0)
        scale = 1.0 - probs.sum(dim=1)
        probs[rows, shown_cls[:, 0]] = scale * conf
        probs.scatter_(1, shown_cls[:, 1:], (scale * (1 - conf))[:, None] * shares[None, :])
        return SyntheticTeacher(probs[:n_train].float(), probs[n_train:].float(),
                                alpha[:n_train].float(),
                                {"teacher_alpha_mean": round(accuracy, 6),
                                 "teacher_alpha_min": round(float(alpha.min()), 6),
                                 "teacher_alpha_max": round(float(alpha.max()), 6),
                                 "teacher_scenario": scenario, "teacher_candidates": kc,
                                 "teacher_shown": shown, "teacher_pick_decay": decay,
                                 "teacher_margin": margin})

    onehot = torch.nn.functional.one_hot(y, num_classes).float()
    return SyntheticDataset("known_noise", x[:n_train].float(), y[:n_train], x[n_train:].float(),
                            y[n_train:], num_classes=num_classes, input_kind="vector",
                            meta={"dim": dim, "k": k, "separation": separation, "spread": spread,
                                  "alpha_min": alpha_min, "coherent": coherent,
                                  "length_scale": length_scale, "tie_break": tie_break,
                                  "seed": seed},
                            posterior_train=onehot[:n_train], posterior_test=onehot[n_train:],
                            teacher_fn=teacher)
