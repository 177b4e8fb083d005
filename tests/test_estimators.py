"""The noise estimators on synthetic teachers whose accuracy-vs-margin curve is known."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from slam_bench import distill_loss
from slam_bench.estimators import (AlphaEstimator, choose_k, choose_k_likelihood, fit_alpha,
                                   fit_transition, fit_weights, teacher_margin, topk_accuracy,
                                   transition_params)


def synthetic_teacher(n, c, accuracy_of_margin, seed):
    """Teacher rows with margin m ~ U(0, 1): p = (e + m, e, ..., e) with e = (1 - m) / C,
    classes shuffled per row; the label equals the argmax with probability accuracy(m), else
    it is one of the other classes. Returns (probs (n, C) float64, labels (n,), margin (n,))."""
    rng = np.random.default_rng(seed)
    m = rng.uniform(0, 1, n)
    e = (1 - m) / c
    probs = np.repeat(e[:, None], c, axis=1)
    probs[:, 0] += m
    perm = np.argsort(rng.random((n, c)), axis=1)
    probs = np.take_along_axis(probs, perm, axis=1)
    top = probs.argmax(axis=1)
    correct = rng.random(n) < accuracy_of_margin(m)
    other = (top + rng.integers(1, c, n)) % c
    labels = np.where(correct, top, other)
    return probs, labels, m


def linear_acc(m):
    return 0.5 + 0.45 * m


def sqrt_acc(m):
    return 0.25 + 0.75 * np.sqrt(m)


@pytest.mark.parametrize("curve,lower_bound", [(linear_acc, 0.5), (sqrt_acc, 0.6)])
def test_fit_alpha_recovers_known_curve(curve, lower_bound):
    val_p, val_y, _ = synthetic_teacher(5000, 10, curve, seed=1)
    est = fit_alpha(val_p, val_y, lower_bound=lower_bound)
    test_p, _, test_m = synthetic_teacher(3000, 10, curve, seed=2)
    alpha = est.predict(test_p)
    assert alpha.dtype == torch.float32 and alpha.shape == (3000,)
    assert float(alpha.min()) >= lower_bound and float(alpha.max()) <= 1.0
    truth = np.clip(curve(test_m), lower_bound, 1.0)
    mae = float(np.abs(alpha.double().numpy() - truth).mean())
    assert mae <= 0.05, mae
    params = est.params()
    assert params["alpha_lower_bound"] == lower_bound
    # Out-of-fold ECE of a well-specified fit on 5,000 examples is small but not exactly 0.
    assert 0.0 < params["alpha_calibration_error"] < 0.05
    assert abs(params["alpha_mean_val"] - np.clip(curve(np.linspace(0, 1, 10001)),
                                                  lower_bound, 1).mean()) < 0.03
    assert params["val_size"] == 5000
    for key, value in params.items():
        assert type(value) in (int, float), (key, type(value))


def test_fit_alpha_is_monotone_in_margin_and_accepts_tensors():
    val_p, val_y, _ = synthetic_teacher(2000, 5, linear_acc, seed=3)
    a_np = fit_alpha(val_p, val_y).predict(val_p)
    a_t = fit_alpha(torch.from_numpy(val_p).float(), torch.from_numpy(val_y)).predict(
        torch.from_numpy(val_p))
    torch.testing.assert_close(a_np, a_t, rtol=1e-5, atol=1e-5)
    order = teacher_margin(val_p).argsort()
    assert bool((a_np[order].diff() >= 0).all())
    assert isinstance(fit_alpha(val_p, val_y), AlphaEstimator)
    assert fit_alpha(val_p, val_y).predict(val_p[:0]).shape == (0,)


def test_teacher_margin_hand_values():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5], [0.4, 0.4, 0.2]])
    torch.testing.assert_close(teacher_margin(p), torch.tensor([0.5, 0.25, 0.0]))
    assert teacher_margin(p).dtype == torch.float32


def _topk_acc_by_sorting(p, y, k):
    """Independent: label within the k largest, ties at the k-th value included."""
    kth = -np.sort(-p, axis=1)[:, k - 1]
    return float((p[np.arange(len(y)), y] >= kth).mean())


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.97])
def test_choose_k_meets_target_minimally(target):
    rng = np.random.default_rng(5)
    n, c = 3000, 20
    probs = rng.dirichlet(np.full(c, 0.3), n)
    # The label is the teacher's r-th ranked class, r geometric: top-k accuracy rises with k.
    r = np.minimum(rng.geometric(0.35, n) - 1, c - 1)
    labels = np.argsort(-probs, axis=1)[np.arange(n), r]
    choice = choose_k(probs, labels, target=target)
    assert 1 <= choice.k <= c
    assert _topk_acc_by_sorting(probs, labels, choice.k) >= target
    if choice.k > 1:
        assert _topk_acc_by_sorting(probs, labels, choice.k - 1) < target
    assert choice.params() == {"k": choice.k, "k_target": target,
                               "k_topk_acc": pytest.approx(_topk_acc_by_sorting(probs, labels, choice.k))}
    acc = topk_accuracy(probs, labels)
    assert float(acc[-1]) == 1.0 and bool((acc.diff() >= 0).all())


def test_choose_k_ties_and_edges():
    p = torch.tensor([[0.4, 0.4, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    y = torch.tensor([1, 1, 0])
    # Row 0's label ties with the top: it counts at k = 1, like the SLaM mask.
    torch.testing.assert_close(topk_accuracy(p, y), torch.tensor([1 / 3, 2 / 3, 1.0], dtype=torch.float64))
    assert choose_k(p, y, target=0.6).k == 2
    assert choose_k(p, y, target=1.0).k == 3
    assert choose_k(p, y, target=0.3).k == 1
    binary = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    assert choose_k(binary, torch.tensor([0, 1]), target=0.5).k == 2  # binary: always k = 2
    with pytest.raises(ValueError, match="num_classes"):
        choose_k(p, y, num_classes=4)
    assert choose_k(p, y, num_classes=3).k == 3  # default target 0.9


def test_fit_transition_recovers_known_matrix():
    rng = np.random.default_rng(7)
    c, n = 4, 40000
    t_true = np.array([[0.7, 0.1, 0.1, 0.1],
                       [0.2, 0.6, 0.2, 0.0],
                       [0.0, 0.0, 0.9, 0.1],
                       [0.25, 0.25, 0.25, 0.25]])
    labels = rng.integers(0, c, n)
    pred = (rng.random(n)[:, None] > np.cumsum(t_true[labels], axis=1)).sum(axis=1)
    probs = np.full((n, c), 0.1 / (c - 1))
    probs[np.arange(n), pred] = 0.9
    t = fit_transition(probs, labels)
    assert t.shape == (c, c) and t.dtype == torch.float32
    torch.testing.assert_close(t.sum(dim=1), torch.ones(c))
    assert float((t.double() - torch.from_numpy(t_true)).abs().max()) < 0.02
    assert transition_params(1.0) == {"transition_smoothing": 1.0,
                                      "transition_prior": "symmetric_val_accuracy"}


def test_fit_transition_hand_counts():
    p = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8]])
    y = torch.tensor([0, 0, 1])
    # Teacher accuracy on V is 2/3: the prior row puts 2/3 on the diagonal, 1/3 off it.
    torch.testing.assert_close(fit_transition(p, y, smoothing=1.0),
                               torch.tensor([[(1 + 2 / 3) / 3, (1 + 1 / 3) / 3],
                                             [(0 + 1 / 3) / 2, (1 + 2 / 3) / 2]]))
    torch.testing.assert_close(fit_transition(p, y, smoothing=0.0),
                               torch.tensor([[0.5, 0.5], [0.0, 1.0]]))
    # A class V lacks gets the prior row (here: accuracy 1, so the identity's row).
    t = fit_transition(torch.tensor([[0.9, 0.05, 0.05]]), torch.tensor([0]), smoothing=0.5)
    torch.testing.assert_close(t[1:], torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    with pytest.raises(ValueError, match="no example of classes"):
        fit_transition(torch.tensor([[0.9, 0.1, 0.0]]), torch.tensor([0]), smoothing=0.0)
    with pytest.raises(ValueError, match="smoothing"):
        fit_transition(p, y, smoothing=-1.0)


@pytest.mark.parametrize("smoothing", [0.0, 1.0, 5.0, 50.0])
def test_fit_transition_diagonal_tracks_teacher_accuracy(smoothing):
    """A hand-made V: 10 classes x 20 examples, the teacher right on 17 of each class's 20 (its
    accuracy 0.85); its mistakes go to the next class. A +1 in every cell would give a
    diagonal of 18/30 = 0.6; the smoothing toward the teacher's own accuracy keeps 0.85."""
    c, per = 10, 20
    labels = torch.arange(c).repeat_interleave(per)
    pred = labels.clone()
    wrong = torch.cat([torch.arange(i * per, i * per + 3) for i in range(c)])
    pred[wrong] = (labels[wrong] + 1) % c
    probs = torch.full((c * per, c), 0.02).scatter_(1, pred[:, None], 0.82)
    t = fit_transition(probs, labels, smoothing=smoothing)
    accuracy = float((pred == labels).float().mean())
    assert accuracy == pytest.approx(0.85)
    assert float(t.diagonal().mean()) == pytest.approx(accuracy, abs=1e-6)
    # Each row: (17 + s * 0.85) / (20 + s); the mistakes' cell keeps its share.
    expected = (17 + smoothing * 0.85) / (20 + smoothing)
    torch.testing.assert_close(t.diagonal(), torch.full((c,), expected), rtol=0, atol=1e-6)
    assert float(t[0, 1]) > float(t[0, 5])


def _ranked_labels(n, c, rank_probs, seed):
    """Teacher rows (n, C) Dirichlet-random; the true label is the teacher's r-th ranked class
    with r drawn from rank_probs (r = 0: the teacher is right)."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(c, 0.5), n)
    r = rng.choice(len(rank_probs), size=n, p=np.asarray(rank_probs) / np.sum(rank_probs))
    labels = np.argsort(-probs, axis=1)[np.arange(n), r]
    return probs, labels


@pytest.mark.parametrize("k_true,accuracy", [(2, 0.7), (3, 0.6), (5, 0.8), (10, 0.5)])
def test_choose_k_likelihood_recovers_the_candidate_set_size(k_true, accuracy):
    """V of 500 whose mistakes are uniform over the other k_true - 1 classes of the teacher's
    top-k_true (SLaM's model with a known k): the rule finds k_true."""
    ranks = [accuracy] + [(1 - accuracy) / (k_true - 1)] * (k_true - 1)
    probs, labels = _ranked_labels(500, 10, ranks, seed=k_true)
    choice = choose_k_likelihood(probs, labels)
    assert choice.k == k_true
    params = choice.params()
    assert params["k"] == k_true and params["k_rule"] == "likelihood"
    assert params["k_topk_acc"] == 1.0 and params["k_score_gap"] > 0
    scores = [float(v) for v in params["k_scores"].split(";")]
    assert len(scores) == 10 and max(scores) == pytest.approx(params["k_score"], abs=1e-5)
    assert scores[0] == scores[-1]  # k = 1 and k = C: the same noise model of the true label


def test_choose_k_likelihood_binary_and_edges():
    rng = np.random.default_rng(3)
    p = rng.dirichlet([1, 1], 300)
    y = rng.integers(0, 2, 300)
    choice = choose_k_likelihood(p, y)
    assert choice.k == 2 and choice.scores == (0.0, 0.0)  # binary: k = 2 by itself
    # A teacher that is never wrong: every k scores 0, the tie goes to k = C.
    p3 = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    assert choose_k_likelihood(p3, torch.tensor([0, 1])).k == 3
    # Mistakes only at rank 1 of 10 classes: k = 2 beats the uniform k = 1 / k = C.
    probs, labels = _ranked_labels(400, 10, [0.5, 0.5], seed=4)
    assert choose_k_likelihood(probs, labels).k == 2
    with pytest.raises(ValueError, match="val_labels must lie"):
        choose_k_likelihood(p3, torch.tensor([0, 3]))


def test_fit_weights_mean_one_and_monotone():
    val_p, val_y, _ = synthetic_teacher(3000, 10, linear_acc, seed=11)
    u_p, _, u_m = synthetic_teacher(1000, 10, linear_acc, seed=12)
    w, params = fit_weights(val_p, val_y, u_p, return_params=True)
    assert w.shape == (1000,) and w.dtype == torch.float32
    assert float(w.double().mean()) == pytest.approx(1.0, abs=1e-6)
    order = np.argsort(u_m)
    assert bool((w[torch.from_numpy(order)].diff() >= 0).all())  # more confident, more weight
    # The weights are the accuracy estimate up to its mean: about (0.5 + 0.45 m) / 0.725.
    assert float(np.abs(w.double().numpy() - linear_acc(u_m) / 0.725).mean()) < 0.07
    assert params["weights_lower_bound"] == 0.0
    assert params["weights_raw_mean"] == pytest.approx(0.725, abs=0.03)
    assert all(type(v) in (int, float) for v in params.values())
    plain = fit_weights(val_p, val_y, u_p)
    torch.testing.assert_close(plain, w)
    # They plug into weighted distillation as per-row weights.
    z = torch.randn(1000, 10)
    out = distill_loss(z, torch.from_numpy(u_p).float(), weight=plain)
    assert math.isfinite(float(out))
    assert fit_weights(val_p, val_y, u_p[:0]).shape == (0,)


@pytest.mark.parametrize("call,exc,pattern", [
    (lambda p, y: fit_alpha(p, y, lower_bound=0.0), ValueError, r"lower_bound must lie in \(0, 1\]"),
    (lambda p, y: fit_alpha(p, y, lower_bound=1.5), ValueError, "lower_bound"),
    (lambda p, y: fit_alpha(p, y, lower_bound=math.nan), ValueError, "lower_bound"),
    (lambda p, y: fit_alpha(p, y, lower_bound="0.6"), TypeError, "lower_bound"),
    (lambda p, y: fit_weights(p, y, p, lower_bound=-0.1), ValueError, r"lower_bound must lie in \[0, 1\]"),
    (lambda p, y: choose_k(p, y, target=0.0), ValueError, "target"),
    (lambda p, y: choose_k(p, y, target=1.1), ValueError, "target"),
    (lambda p, y: fit_alpha(p, y[:-1]), ValueError, r"val_labels must have shape \(6,\)"),
    (lambda p, y: fit_alpha(p, y + 3), ValueError, r"val_labels must lie in \[0, C=3\)"),
    (lambda p, y: fit_alpha(p, y.float()), TypeError, "val_labels must be an integer"),
    (lambda p, y: fit_alpha(p.numpy().astype(np.int64), y), TypeError, "val_probs must hold floats"),
    (lambda p, y: fit_alpha(p * 2, y), ValueError, "val_probs rows must sum to 1"),
    (lambda p, y: fit_alpha(-p, y), ValueError, "val_probs must be finite and non-negative"),
    (lambda p, y: fit_alpha(p[:, :1], y), ValueError, r"val_probs must have shape \(n, C\) with C >= 2"),
    (lambda p, y: fit_alpha(p[:0], y[:0]), ValueError, "validation set is empty"),
    (lambda p, y: fit_alpha(p.tolist(), y), TypeError, "val_probs must be a numpy array or a torch.Tensor"),
    (lambda p, y: fit_weights(p, y, p[:, :2] / p[:, :2].sum(1, keepdim=True)), ValueError, "unlabeled_probs"),
    (lambda p, y: fit_alpha(p, y).predict(p * 3), ValueError, "probs rows must sum to 1"),
    (lambda p, y: teacher_margin(p[0]), ValueError, "probs must have shape"),
    (lambda p, y: fit_alpha(p, y).predict(torch.full((2, 4), 0.25)), ValueError, "probs must have the C=3"),
])
def test_bad_estimator_arguments(call, exc, pattern):
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4],
                      [0.5, 0.4, 0.1], [0.2, 0.2, 0.6], [0.6, 0.3, 0.1]])
    y = torch.tensor([0, 1, 0, 1, 2, 0])
    with pytest.raises(exc, match=pattern):
        call(p, y)
