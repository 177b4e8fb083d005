"""Dataset-defined teachers: `known_noise` (SLaM's noise model) and `halfspace_rcn` (random
classification noise) produce the accuracy and alpha(x) they claim, checked on large samples."""
from __future__ import annotations

import math

import pytest
import torch

from slam_bench.data import load_dataset
from slam_bench.estimators import fit_alpha

N = 20000


def _calibration_gap(alpha: torch.Tensor, correct: torch.Tensor, bins: int = 5) -> float:
    """Largest |mean alpha - accuracy| over equal-count bins of alpha."""
    order = alpha.argsort()
    gaps = [abs(float(alpha[i].mean()) - float(correct[i].float().mean()))
            for i in order.chunk(bins)]
    return max(gaps)


@pytest.fixture(scope="module", params=[0.0, 1.0], ids=["independent", "coherent"])
def known_noise(request):
    return load_dataset("known_noise", n_train=N, n_test=5000, coherent=request.param)


@pytest.mark.parametrize("accuracy", [0.55, 0.85])
def test_known_noise_teacher_has_the_claimed_accuracy_and_alpha(known_noise, accuracy):
    ds = known_noise
    # alpha(x) is a probability over the teacher's draws. Independent errors average out within
    # one draw; coherent ones are shared by neighbours, so they are pooled over several draws.
    draws = [ds.teacher_fn(accuracy, seed) for seed in range(1 if ds.meta["coherent"] == 0 else 6)]
    t = draws[0]
    correct = torch.cat([d.probs_train.argmax(1) == ds.y_train for d in draws])
    alpha = torch.cat([d.alpha_train for d in draws])
    # The mean of alpha(x) is the requested accuracy, and the teacher is right that often.
    assert float(t.alpha_train.mean()) == pytest.approx(accuracy, abs=1e-6)
    assert abs(float(correct.float().mean()) - accuracy) < 0.01
    # alpha(x) is the probability of being right at x: calibrated within every alpha bin.
    assert _calibration_gap(alpha, correct) < 0.03
    # SLaM's model: when wrong, the teacher's label is another class of its top-k (k = 3),
    # so the clean label is always in its top 3; its own label is its argmax.
    top3 = t.probs_train.topk(3, dim=1).indices
    assert bool((top3 == ds.y_train[:, None]).any(1).all())
    assert torch.allclose(t.probs_train.sum(1), torch.ones(N), atol=1e-5)
    # The margin is an increasing function of alpha: the isotonic estimate on a random V of
    # 2,000 recovers alpha(x) closely.
    v = torch.randperm(N, generator=torch.Generator().manual_seed(0))[:2000]
    est = fit_alpha(t.probs_train[v], ds.y_train[v], lower_bound=0.01)
    assert float((est.predict(t.probs_train) - t.alpha_train).abs().mean()) < 0.04
    # alpha(x) rises along one direction of x.
    assert float(t.alpha_train.min()) >= 0.4 - 1e-6 and float(t.alpha_train.max()) <= 1.0


@pytest.fixture(scope="module")
def scenario_data():
    return load_dataset("known_noise", n_train=N, n_test=2000)


def _rule_on_v(t, y, seed=0, n_val=500):
    """SLaM's k rule and the isotonic alpha on a random V of n_val; (k, alpha MAE over all)."""
    from slam_bench.estimators import choose_k_likelihood

    v = torch.randperm(N, generator=torch.Generator().manual_seed(seed))[:n_val]
    k = choose_k_likelihood(t.probs_train[v], y[v]).k
    est = fit_alpha(t.probs_train[v], y[v], lower_bound=0.01)
    return k, float((est.predict(t.probs_train) - t.alpha_train).abs().mean())


@pytest.mark.parametrize("scenario", ["model", "wide", "uneven", "folded"])
def test_known_noise_scenarios_break_the_model_as_named(scenario_data, scenario):
    """Each scenario keeps the claimed accuracy and a valid soft output, and breaks SLaM's
    model only in the way it names: the k rule on V of 500 and the alpha error show it."""
    ds = scenario_data
    t = ds.teacher_fn(0.7, 11, scenario)
    y = ds.y_train
    label = t.probs_train.argmax(1)
    assert abs(float((label == y).float().mean()) - 0.7) < 0.01
    assert torch.allclose(t.probs_train.sum(1), torch.ones(N), atol=1e-5)
    assert t.params["teacher_scenario"] == scenario
    # Classes do not tie (ties would blur the top-k sets): the jittered small masses may
    # collide in float32 in a handful of rows, nowhere near the shown classes.
    top = t.probs_train.sort(dim=1, descending=True).values
    ties = top[:, :-1] <= top[:, 1:]
    assert float(ties.any(1).float().mean()) < 1e-3 and not bool(ties[:, :2].any())
    wrong = label != y
    cand = t.params["teacher_candidates"]
    # The clean label's rank in the teacher's output among its mistakes.
    rank = (t.probs_train > t.probs_train.gather(1, y[:, None])).sum(1)[wrong]
    k, mae = _rule_on_v(t, y)
    if scenario in ("model", "folded"):
        assert cand == 3 and int(rank.max()) <= 2 and k == 3
    if scenario == "wide":  # 6 candidates, 3 shown: the label is outside the top-3 often
        assert cand == 6 and float((rank >= 3).float().mean()) > 0.5 and k < cand
    if scenario == "uneven":  # 4 candidates, the nearest one picked 72% of the time
        assert cand == 4 and k == 4
        # Which candidate the wrong label is, by distance to the class means (estimated from
        # 2,000 examples each): 1, 0.3, 0.09 normalised, i.e. 72% / 22% / 6%.
        means = torch.stack([ds.x_train[y == c].double().mean(0) for c in range(ds.num_classes)])
        by_distance = torch.cdist(ds.x_train[wrong].double(), means).argsort(dim=1)
        pos = (by_distance == label[wrong][:, None]).float().argmax(dim=1)
        share = torch.bincount(pos, minlength=4)[1:4].double() / len(pos)
        assert torch.allclose(share, torch.tensor([0.7194, 0.2158, 0.0647], dtype=torch.float64),
                              atol=0.02), share
    if scenario == "folded":  # the margin no longer orders alpha: the isotonic fit misses
        assert mae > 0.1
    else:
        assert mae < 0.08


def test_known_noise_scenario_errors():
    ds = load_dataset("known_noise", n_train=200, n_test=10)
    with pytest.raises(ValueError, match="scenario must be one of"):
        ds.teacher_fn(0.7, 0, "nope")
    with pytest.raises(ValueError, match="candidates"):
        load_dataset("known_noise", n_train=200, n_test=10, num_classes=5).teacher_fn(0.7, 0, "wide")


def test_known_noise_errors_are_spatially_coherent_only_when_asked():
    """With coherent errors, an example's nearest training neighbours share its mistake more
    often than the error rate alone makes them; with independent errors they do not."""
    shared = {}
    for coherent in (0.0, 1.0):
        ds = load_dataset("known_noise", n_train=20000, n_test=10, coherent=coherent)
        t = ds.teacher_fn(0.7, 3)
        wrong = (t.probs_train.argmax(1) != ds.y_train).float()
        d = torch.cdist(ds.x_train[:2000], ds.x_train)
        d[torch.arange(2000), torch.arange(2000)] = float("inf")
        nn = d.topk(5, largest=False).indices
        # P(a neighbour is wrong | this one is wrong) / P(wrong)
        shared[coherent] = float((wrong[:2000, None] * wrong[nn]).mean()) / float(wrong[:2000].mean()) \
            / float(wrong.mean())
    # Independent errors share only what alpha(x), smooth along x, makes them share.
    assert shared[0.0] < 1.2 and shared[1.0] > shared[0.0] + 0.25


def test_halfspace_teacher_is_rcn_with_known_eta_on_clean_labels():
    for profile in ("uniform", "margin"):
        ds = load_dataset("halfspace_rcn", n_train=N, n_test=2000, noise_profile=profile)
        assert torch.equal(ds.best_test_pred, ds.y_test)  # clean test labels: w is the best
        t = ds.teacher_fn(0.8, 5)
        flipped = (t.probs_train.argmax(1) != ds.y_train)
        eta = 1 - t.alpha_train
        assert float(eta.mean()) == pytest.approx(0.2, abs=1e-6) and float(eta.max()) < 0.5
        assert abs(float(flipped.float().mean()) - 0.2) < 4 * math.sqrt(0.16 / N)
        assert _calibration_gap(t.alpha_train, ~flipped) < 0.02
        # The soft output puts 1 - eta(x) on the teacher's label.
        torch.testing.assert_close(t.probs_train.max(1).values, t.alpha_train)
        if profile == "margin":  # more noise near the boundary
            assert float(eta.max() - eta.min()) > 0.1
        else:
            assert float(eta.max() - eta.min()) == 0.0
