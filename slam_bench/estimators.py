"""Noise estimators fitted on the validation set V (docs/estimators.md).

Inputs are the teacher's probabilities on V (n, C), V's true labels (n,), and for prediction
the teacher's probabilities elsewhere (U). numpy arrays, torch tensors or a top-K teacher
(`slam_bench.vocab.teacher.TopKProbs`, what a top-K cache holds) are accepted; results are
torch tensors (float32) on the device of the probabilities passed in (CPU for numpy). From a
top-K teacher the estimators read its argmax, its margin and the rank of a label among its
kept entries, each equal to the dense row's where the K entries hold all of the row's mass
(docs/vocab.md); the transition matrix needs the dense rows and refuses it.
Every fitted object has `params()`: plain floats/ints for a result row.

- alpha(x): isotonic (non-decreasing) regression of 1[teacher argmax == label] on the
  teacher's margin p_(1) - p_(2), clipped to [lower_bound, 1] (`fit_alpha`).
- k: SLaM's rule is the likelihood of V's labels under its noise model
  (`choose_k_likelihood`; k = 2 on binary tasks by itself). `choose_k` (the smallest k whose
  top-k accuracy on V reaches a target) is the simpler rule of the paper's description.
- transition matrix for forward correction (`fit_transition`), smoothed toward the symmetric
  noise of the teacher's accuracy on V.
- weights for weighted distillation: the same isotonic accuracy estimate, normalized to mean 1
  over U (`fit_weights`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import KFold
from torch import Tensor

from slam_bench import checks
# Forward correction's smoothing and prior (why these: see there).
from slam_bench.estimator_defaults import TRANSITION_PRIOR, TRANSITION_SMOOTHING
from slam_bench.vocab.teacher import Probs, TopKProbs, num_classes_of, teacher_argmax

# Calibration error of the alpha estimate on V: expected calibration error (equal-width bins of
# the predicted accuracy) of the isotonic fit before clipping, on out-of-fold predictions (an
# in-sample isotonic fit is calibrated by construction, so in-sample ECE would say nothing).
# Clipping at lower_bound is a deliberate bias; its extent is logged separately.
CALIBRATION_BINS = 10
CALIBRATION_FOLDS = 5
CALIBRATION_SEED = 0


def _as_probs(name: str, probs) -> Probs:
    """(n, C) probabilities (numpy or tensor) -> float64 tensor on the input's device; a
    `TopKProbs` -> checked, its probabilities in float64."""
    if isinstance(probs, TopKProbs):
        probs.check(name)
        return probs.to(dtype=torch.float64)
    if isinstance(probs, np.ndarray):
        if not np.issubdtype(probs.dtype, np.floating):
            raise TypeError(f"{name} must hold floats, got dtype {probs.dtype}")
        probs = torch.from_numpy(np.ascontiguousarray(probs))
    if not isinstance(probs, Tensor):
        raise TypeError(f"{name} must be a numpy array or a torch.Tensor, got {type(probs).__name__}")
    if not probs.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got {probs.dtype}")
    if probs.dim() != 2 or probs.shape[1] < 2:
        raise ValueError(f"{name} must have shape (n, C) with C >= 2, got {tuple(probs.shape)}")
    p = probs.detach().double()
    if p.numel():
        if not bool(torch.isfinite(p).all()) or bool((p < 0).any()):
            raise ValueError(f"{name} must be finite and non-negative")
        tol = checks.SIMPLEX_ATOL.get(probs.dtype, 1e-3)
        err = float((p.sum(dim=1) - 1).abs().max())
        if err > tol:
            raise ValueError(f"{name} rows must sum to 1 within {tol:g}, worst row is off by {err:.3g}")
    return p


def _as_labels(name: str, labels, n: int, c: int, device) -> Tensor:
    """(n,) integer labels in [0, C) -> int64 tensor on `device`."""
    if isinstance(labels, np.ndarray):
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"{name} must hold integers, got dtype {labels.dtype}")
        labels = torch.from_numpy(np.ascontiguousarray(labels))
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a numpy array or a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) like the probabilities' rows, "
                         f"got {tuple(labels.shape)}")
    labels = labels.to(device=device, dtype=torch.int64)
    if n and not bool(((labels >= 0) & (labels < c)).all()):
        raise ValueError(f"{name} must lie in [0, C={c})")
    return labels


def _device(p: Probs) -> torch.device:
    return p.probs.device if isinstance(p, TopKProbs) else p.device


def _val_set(val_probs, val_labels) -> tuple[Probs, Tensor]:
    p = _as_probs("val_probs", val_probs)
    if len(p) == 0:
        raise ValueError("val_probs must have at least one row (the validation set is empty)")
    return p, _as_labels("val_labels", val_labels, len(p), num_classes_of(p), _device(p))


def _unit_interval(name: str, value, *, low_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    v = float(value)
    ok = (0.0 < v <= 1.0) if low_open else (0.0 <= v <= 1.0)
    if not ok:  # also rejects NaN
        raise ValueError(f"{name} must lie in {'(0, 1]' if low_open else '[0, 1]'}, got {value}")
    return v


def _margin(p: Probs) -> Tensor:
    if isinstance(p, TopKProbs):
        return p.margin()
    top2 = torch.topk(p, 2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def teacher_margin(probs) -> Tensor:
    """(N, C) probabilities or a `TopKProbs` -> (N,) float32 margin: top-1 minus top-2
    probability (TopKProbs.margin for a top-K teacher)."""
    return _margin(_as_probs("probs", probs)).float()


def _ece(pred: np.ndarray, correct: np.ndarray, bins: int) -> float:
    """Expected calibration error, equal-width bins of `pred` on [0, 1]."""
    idx = np.minimum((pred * bins).astype(np.int64), bins - 1)
    err = 0.0
    for b in np.unique(idx):
        sel = idx == b
        err += sel.mean() * abs(pred[sel].mean() - correct[sel].mean())
    return float(err)


def _isotonic(margin: np.ndarray, correct: np.ndarray) -> IsotonicRegression:
    return IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True,
                              out_of_bounds="clip").fit(margin, correct)


@dataclass
class AlphaEstimator:
    """alpha(x) = clip(iso(margin(x)), lower_bound, 1); fit with `fit_alpha`."""
    model: IsotonicRegression
    lower_bound: float
    calibration_error: float
    calibration_folds: int  # min(CALIBRATION_FOLDS, n); 1 means in-sample (n = 1)
    clipped_fraction: float
    mean_val: float
    val_accuracy: float
    val_size: int
    num_classes: int

    def predict(self, probs) -> Tensor:
        """(N, C) teacher probabilities (or a `TopKProbs`) -> (N,) float32 alpha in
        [lower_bound, 1]."""
        p = _as_probs("probs", probs)
        if num_classes_of(p) != self.num_classes:
            raise ValueError(f"probs must have the C={self.num_classes} classes the estimator was "
                             f"fitted on, got {num_classes_of(p)}")
        if len(p) == 0:
            return torch.empty(0, dtype=torch.float32, device=_device(p))
        a = self.model.predict(_margin(p).cpu().numpy())
        a = np.clip(a, self.lower_bound, 1.0)
        return torch.from_numpy(a).to(device=_device(p), dtype=torch.float32)

    def params(self) -> dict:
        """alpha_lower_bound; alpha_calibration_error (out-of-fold ECE on V of the unclipped
        fit, see CALIBRATION_*); alpha_clipped_fraction_val (share of V raised to lower_bound);
        alpha_mean_val (mean clipped alpha on V); teacher accuracy and size of V."""
        return {"alpha_lower_bound": self.lower_bound,
                "alpha_calibration_error": self.calibration_error,
                "alpha_calibration_bins": CALIBRATION_BINS,
                "alpha_calibration_folds": self.calibration_folds,
                "alpha_clipped_fraction_val": self.clipped_fraction,
                "alpha_mean_val": self.mean_val,
                "teacher_val_accuracy": self.val_accuracy,
                "val_size": self.val_size}


def _fit_accuracy(val_probs, val_labels, lower_bound: float) -> AlphaEstimator:
    p, labels = _val_set(val_probs, val_labels)
    margin = _margin(p).cpu().numpy()
    correct = (teacher_argmax(p) == labels).double().cpu().numpy()
    model = _isotonic(margin, correct)
    n = margin.shape[0]
    # Out-of-fold predictions for the calibration error (in-sample isotonic is ~calibrated).
    folds = min(CALIBRATION_FOLDS, n)
    oof = np.empty(n)
    if folds >= 2:
        for tr, te in KFold(folds, shuffle=True, random_state=CALIBRATION_SEED).split(margin):
            oof[te] = _isotonic(margin[tr], correct[tr]).predict(margin[te])
    else:
        oof = model.predict(margin)
    raw = model.predict(margin)
    fitted = np.clip(raw, lower_bound, 1.0)
    return AlphaEstimator(model, lower_bound, _ece(oof, correct, CALIBRATION_BINS), max(folds, 1),
                          float((raw < lower_bound).mean()), float(fitted.mean()),
                          float(correct.mean()), int(n), int(num_classes_of(p)))


def fit_alpha(val_probs, val_labels, *, lower_bound: float = 0.6) -> AlphaEstimator:
    """Fit alpha(x), the probability that the teacher's top-1 label is right, on V.

    Args:
        val_probs: (n, C) teacher probabilities on V (numpy or tensor), n >= 1.
        val_labels: (n,) integer true labels of V.
        lower_bound: in (0, 1]; predictions are clipped to [lower_bound, 1]. With the default
            s = 1 SLaM form it must exceed 1/2 for the loss to reward
            the teacher's label; with normalize=True, 1/k.
    """
    lower_bound = _unit_interval("lower_bound", lower_bound, low_open=True)
    return _fit_accuracy(val_probs, val_labels, lower_bound)


@dataclass
class KChoice:
    """The chosen top-k size for one trial; fit with `choose_k`."""
    k: int
    target: float
    topk_acc: float

    def params(self) -> dict:
        return {"k": self.k, "k_target": self.target, "k_topk_acc": self.topk_acc}


def topk_accuracy(probs, labels) -> Tensor:
    """(C,) float64: entry k-1 is the fraction of rows whose label is in the teacher's top-k,
    with ties at the threshold included (the SLaM mask's rule)."""
    p, lab = _val_set(probs, labels)
    rank = _label_rank(p, lab)
    counts = torch.bincount(rank.cpu(), minlength=num_classes_of(p)).double()
    return counts.cumsum(0) / len(p)


def choose_k(val_probs, val_labels, *, target: float = 0.9, num_classes=None) -> KChoice:
    """The smallest k whose teacher top-k accuracy on V is >= target (C if none is).

    Binary tasks (C = 2) return k = 2 without searching: the paper uses k = 2 there, which
    makes SLaM the classic binary forward correction.
    Args:
        val_probs: (n, C) teacher probabilities on V; val_labels: (n,) true labels.
        target: in (0, 1].
        num_classes: optional; if given it must equal C (guards against a mis-shaped input).
    """
    target = _unit_interval("target", target, low_open=True)
    p, labels = _val_set(val_probs, val_labels)
    c = num_classes_of(p)
    if num_classes is not None and num_classes != c:
        raise ValueError(f"num_classes={num_classes} does not match val_probs' C={c}")
    acc = topk_accuracy(p, labels)
    if c == 2:
        return KChoice(2, target, float(acc[1]))
    # A tiny slack so that an accuracy equal to the target up to rounding counts as reaching it.
    hits = torch.nonzero(acc >= target - 1e-12)
    k = int(hits[0]) + 1 if hits.numel() else c
    return KChoice(k, target, float(acc[k - 1]))


# Ties between k's likelihood scores (k = 1 and k = C score the same, see `choose_k_likelihood`)
# are decided toward the larger k; scores within this relative tolerance count as tied.
K_SCORE_TIE_RTOL = 1e-9
# Prior on the share of the teacher's mistakes whose true label lies outside its top-k
# (`choose_k_likelihood`): Beta(1/2, 1/2), the Jeffreys prior of a proportion.
K_LEAK_PRIOR = 0.5
# Scores of k = 1 .. K_SCORES_LOGGED in a row's `k_scores` (every k up to C = 100): at a
# vocabulary's C = 32,768 every score would make one CSV cell of ~300 kB.
K_SCORES_LOGGED = 100


@dataclass
class KLikelihood:
    """The k chosen by the likelihood of V's labels under SLaM's noise model
    (`choose_k_likelihood`); scores[k - 1] is k's log evidence per example of V (nats)."""
    k: int
    scores: tuple
    topk_acc: float
    errors: int

    def params(self) -> dict:
        """k, the rule's name, its score at k and the gap to the best other k >= 2 (nats per
        example of V; 0 on a tie or with C = 2), the scores of k = 1 .. K_SCORES_LOGGED
        (';'-joined, k = 1 first; every k's for C <= K_SCORES_LOGGED), the teacher's
        top-k accuracy at k and the number of V's examples the teacher gets wrong."""
        best = self.scores[self.k - 1]
        # k = 1 is never chosen (it ties with k = C): the gap is to the best other k >= 2.
        others = [s for i, s in enumerate(self.scores) if i not in (0, self.k - 1)]
        return {"k": self.k, "k_rule": "likelihood", "k_score": best,
                "k_score_gap": best - max(others) if others else 0.0,
                "k_scores": ";".join(f"{s:.5f}" for s in self.scores[:K_SCORES_LOGGED]),
                "k_topk_acc": self.topk_acc, "k_val_errors": self.errors}


def _label_rank(p: Probs, labels: Tensor) -> Tensor:
    """(n,) int64: classes with a strictly larger probability than the label's. The label is in
    the top-k (SLaM's mask, ties at the threshold included) iff its rank < k."""
    if isinstance(p, TopKProbs):
        return p.label_rank(labels)
    return (p > p.gather(1, labels[:, None])).sum(dim=1)


def choose_k_likelihood(val_probs, val_labels) -> KLikelihood:
    """SLaM's k, the one rule of every suite: the k under which SLaM's noise model gives V's
    true labels the highest likelihood (Bayesian evidence), ties going to the larger k.

    The model behind the mix (the teacher's label is right with probability alpha(x), else
    the true label is one of the other k - 1 classes of the teacher's top-k, uniformly) gives
    the true label of x probability alpha(x) at the teacher's argmax and
    (1 - alpha(x)) / (k - 1) at each other top-k class. The alpha part does not depend on k,
    so k is scored on the examples the teacher gets wrong. Labels outside the top-k have
    probability 0 under the model; so that one such label does not rule a k out, they get a
    share `leak` of the mistakes, spread uniformly over the C - k classes outside, with `leak`
    integrated out under a Beta(1/2, 1/2) prior (`K_LEAK_PRIOR`; the evidence then pays for
    fitting it). With n_in mistakes inside the top-k and n_out outside:

        score(k) = log B(n_out + 1/2, n_in + 1/2) - log B(1/2, 1/2)
                   - n_in log(k - 1) - n_out log(C - k)          for 1 < k < C,
        score(1) = score(C) = -(n_in + n_out) log(C - 1)         (no leak to fit),

    divided by |V|. k = 1 (a binary right-or-wrong mix) and k = C both say a mistake's true
    label is uniform over the other classes, so the likelihood cannot tell them apart; the tie
    goes to k = C, and the rule never returns 1. On a binary task every k scores 0, so k = 2.

    Args:
        val_probs: (n, C) float teacher probabilities on V (numpy or tensor), n >= 1.
        val_labels: (n,) integer true labels of V.
    Returns:
        KLikelihood with k in [2, C].
    """
    p, labels = _val_set(val_probs, val_labels)
    c = num_classes_of(p)
    rank = _label_rank(p, labels)
    hist = torch.bincount(rank.cpu(), minlength=c).double()  # hist[r]: labels at rank r
    errors = float(hist[1:].sum())
    half = K_LEAK_PRIOR
    log_beta = lambda a, b: math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)  # noqa: E731
    # Counts are whole numbers in float64, so these running sums are exact: the same n_in and
    # n_out as slicing hist for every k, in O(C) instead of O(C^2) (C = 32,768 in vocab suites).
    inside = [0.0] + hist.cumsum(0).tolist()  # inside[k] = hist[:k].sum()
    scores = []
    for k in range(1, c + 1):
        if k in (1, c):
            score = -errors * math.log(c - 1)
        else:
            n_in = inside[k] - inside[1]
            n_out = errors - n_in
            score = (log_beta(n_out + half, n_in + half) - log_beta(half, half)
                     - n_in * math.log(k - 1) - n_out * math.log(c - k))
        scores.append(score / len(p) + 0.0)  # + 0.0: no -0.0 in the log
    top = max(scores)
    tol = K_SCORE_TIE_RTOL * max(1.0, abs(top))
    k = max(i + 1 for i, s in enumerate(scores) if s >= top - tol)
    acc = float((rank < k).double().mean())
    return KLikelihood(k, tuple(scores), acc, int(errors))


def fit_transition(val_probs, val_labels, *, smoothing: float = TRANSITION_SMOOTHING) -> Tensor:
    """(C, C) float32 row-stochastic T, T[i, j] = P(teacher argmax = j | true class i).

    Row i is (confusion counts of class i on V + smoothing * prior row i) / (n_i + smoothing),
    where the prior is the symmetric-noise matrix of the teacher's accuracy a on V (a on the
    diagonal, (1 - a) / (C - 1) elsewhere; `TRANSITION_PRIOR`). So with equally many examples
    per class the mean diagonal equals a exactly, whatever the smoothing, and a class absent
    from V gets the prior row. smoothing >= 0 (pseudo-examples per row); with 0, every class
    must occur in val_labels. Its logged parameters are `transition_params(smoothing)`.
    """
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) \
            or not math.isfinite(smoothing) or smoothing < 0:
        raise ValueError(f"smoothing must be a finite float >= 0, got {smoothing!r}")
    if isinstance(val_probs, TopKProbs):
        raise ValueError("val_probs: fit_transition needs the teacher's dense (n, C) rows "
                         "(forward correction's C x C transition); a top-K teacher "
                         "(TopKProbs) does not hold them")
    p, labels = _val_set(val_probs, val_labels)
    c = p.shape[1]
    pred = p.argmax(dim=1)
    counts = torch.bincount(labels * c + pred, minlength=c * c).double().view(c, c).cpu()
    acc = float(counts.diagonal().sum() / counts.sum())
    prior = torch.full((c, c), (1.0 - acc) / (c - 1), dtype=torch.float64)
    prior.fill_diagonal_(acc)
    counts += float(smoothing) * prior
    totals = counts.sum(dim=1, keepdim=True)
    if bool((totals == 0).any()):
        missing = torch.nonzero(totals.squeeze(1) == 0).squeeze(1).tolist()
        raise ValueError(f"val_labels has no example of classes {missing[:10]}; "
                         f"use smoothing > 0 to fill their rows of the transition matrix")
    return (counts / totals).float().to(p.device)


def transition_params(smoothing: float = TRANSITION_SMOOTHING) -> dict:
    return {"transition_smoothing": float(smoothing), "transition_prior": TRANSITION_PRIOR}


def fit_weights(val_probs, val_labels, unlabeled_probs, *, lower_bound: float = 0.0,
                return_params: bool = False):
    """Weighted-distillation weights on U: the isotonic teacher-accuracy estimate at each
    unlabeled example (as in `fit_alpha`), clipped to [lower_bound, 1], divided by its mean
    over U so the weights have mean 1 (docs/estimators.md, "Weighted").

    Args:
        val_probs, val_labels: V as in `fit_alpha`.
        unlabeled_probs: (N_u, C) teacher probabilities on U.
        lower_bound: in [0, 1]; 0 lets examples the teacher surely gets wrong weigh 0.
        return_params: also return the params dict (weights_lower_bound, weights_raw_mean,
            weights_min, weights_max and the accuracy fit's calibration error).
    Returns:
        (N_u,) float32 tensor with mean 1, or (weights, params) with return_params=True.
    """
    lower_bound = _unit_interval("lower_bound", lower_bound, low_open=False)
    est = _fit_accuracy(val_probs, val_labels, lower_bound)
    u = _as_probs("unlabeled_probs", unlabeled_probs)
    if num_classes_of(u) != est.num_classes:
        raise ValueError(f"unlabeled_probs must have the C={est.num_classes} of val_probs, "
                         f"got {num_classes_of(u)}")
    raw = est.predict(u)
    raw_mean = float(raw.double().mean()) if raw.numel() else 0.0
    if raw.numel() and raw_mean <= 0:
        raise ValueError("fit_weights: the teacher-accuracy estimate is 0 on every unlabeled "
                         "example (cannot normalize to mean 1); raise lower_bound")
    w = (raw.double() / raw_mean).float() if raw.numel() else raw
    if not return_params:
        return w
    params = {"weights_lower_bound": lower_bound, "weights_raw_mean": raw_mean,
              "weights_min": float(w.min()) if w.numel() else 0.0,
              "weights_max": float(w.max()) if w.numel() else 0.0,
              "weights_calibration_error": est.calibration_error}
    return w, params
