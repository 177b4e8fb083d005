"""The paper's regime in the pipeline (issue 9): pooled weighting of A and U, hard labels routed
to the loss only, alpha's lower bound, and the full suites' numbers."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from slam_bench import distill_loss
from slam_bench.distributed import DistContext
from slam_bench.models import build_model
from slam_bench.pipeline import methods as M
from slam_bench.store import read_rows
from slam_bench.pipeline.runner import run_suite
from slam_bench.pipeline.suites import EMBEDDED_SUITES, SUITES, TrainSpec, get_suite
from slam_bench.pipeline.train import StudentStep, student_steps, train_student

CPU = DistContext.single(torch.device("cpu"))


def _step(labels_u: torch.Tensor, weighting: str, labeled_weight: float = 1.0) -> StudentStep:
    """A linear student whose unlabeled loss is soft cross-entropy against one-hot teacher
    labels: an example then contributes the same loss whether it sits in A or in U."""
    torch.manual_seed(0)
    student = build_model("linear", (3,), 4)
    onehot = F.one_hot(labels_u, 4).float()
    return StudentStep(student, None,
                       lambda iu, logits, feats: distill_loss(logits, onehot[iu]),
                       labeled_weight, weighting)


def test_pooled_weighting_gives_a_labeled_example_the_weight_of_an_unlabeled_one():
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, 1, 2])
    iu = torch.arange(6)
    step = _step(y, "pooled")
    all_u = step(iu, x, x[:0], y[:0])  # the six examples as unlabeled ones
    two_labeled = step(iu[2:], x[2:], x[:2], y[:2])  # two of them moved to A
    one_labeled = step(iu[1:], x[1:], x[:1], y[:1])
    plain_ce = F.cross_entropy(step.student(x), y)  # every example counted once
    for loss in (all_u, two_labeled, one_labeled):
        torch.testing.assert_close(loss, plain_ce)
    # labeled_weight multiplies each labeled example's vote.
    heavy = _step(y, "pooled", labeled_weight=3.0)(iu[2:], x[2:], x[:2], y[:2])
    per_row = F.cross_entropy(step.student(x), y, reduction="none")
    torch.testing.assert_close(heavy, (per_row[2:].sum() + 3 * per_row[:2].sum()) / 6)
    # The old scheme gives the two labeled examples the weight of all four unlabeled ones.
    old = _step(y, "per_batch")(iu[2:], x[2:], x[:2], y[:2])
    torch.testing.assert_close(old, per_row[2:].mean() + per_row[:2].mean())
    assert not torch.isclose(old, plain_ce)


class _Recorder(StudentStep):
    """Counts how often each labeled and unlabeled example is drawn (x holds the index)."""

    def forward(self, iu, x_u, x_a, y_a):
        self.seen_u.extend(iu.tolist())
        self.seen_a.extend(int(v) for v in x_a[:, 0])
        return super().forward(iu, x_u, x_a, y_a)


@pytest.mark.parametrize("weighting", ["pooled", "per_batch"])
def test_an_epoch_passes_over_the_pool_once_when_pooled(weighting):
    n_a, n_u, epochs = 4, 12, 3
    x_a = torch.arange(n_a, dtype=torch.float32)[:, None].repeat(1, 3)
    x_u = torch.zeros(n_u, 3)
    step = _Recorder(build_model("linear", (3,), 2), None,
                     lambda iu, logits, feats: logits.sum() * 0, 1.0, weighting)
    step.seen_u, step.seen_a = [], []
    spec = TrainSpec(epochs=epochs, batch_size=4, lr=1e-3)
    steps = train_student(CPU, step, x_a, torch.zeros(n_a, dtype=torch.long), x_u, spec, 0)
    assert steps == student_steps(spec, n_a, n_u, weighting)
    if weighting == "pooled":  # every example, labeled or not, drawn once per epoch
        assert steps == epochs * (n_a + n_u) // 4
        assert sorted(step.seen_a) == sorted(list(range(n_a)) * epochs)
        assert sorted(step.seen_u) == sorted(list(range(n_u)) * epochs)
    else:  # a batch of A beside every batch of U: A is cycled, drawn n_u / n_a times as often
        assert steps == epochs * n_u // 4
        assert len(step.seen_a) == len(step.seen_u) == epochs * n_u


def test_labeled_weighting_is_checked():
    with pytest.raises(ValueError, match="labeled_weighting"):
        _step(torch.zeros(2, dtype=torch.long), "balanced")
    with pytest.raises(ValueError, match="labeled_weighting"):
        dataclasses.replace(get_suite("digits"), labeled_weighting="balanced")
    with pytest.raises(ValueError, match="hard_methods"):
        dataclasses.replace(get_suite("digits"), hard_methods=("no_such_method",))


# ------------------------------------------------------------------ hard labels

@pytest.fixture
def spy(monkeypatch):
    """A registered method that records what its fit and its loss were given."""
    seen = {"fit": [], "loss": []}

    def fit(ctx):
        seen["fit"].append((ctx.hp["targets"], ctx.probs_u.clone()))
        return M.Fitted()

    def loss(b):
        seen["loss"].append((b.hp["targets"], b.index.clone(), b.teacher_probs.detach().clone()))
        return distill_loss(b.logits, b.teacher_probs, check_values=False)

    monkeypatch.setitem(M.METHODS, "spy", M.Method("spy", {}, fit, loss))
    return seen


def test_hard_labels_reach_the_loss_and_soft_probabilities_the_estimators(tmp_path, spy):
    suite = dataclasses.replace(
        get_suite("digits").with_sizes(True, trials=1, labeled_sizes=(20,)),
        methods=("teacher", "vanilla", "spy"), hard_methods=("vanilla", "spy"))
    run_suite(suite, tmp_path, smoke=True)
    (t_soft, fit_soft), (t_hard, fit_hard) = spy["fit"]
    assert (t_soft, t_hard) == ("soft", "hard")
    # The estimators see the teacher's soft probabilities in both runs.
    torch.testing.assert_close(fit_hard, fit_soft)
    assert not torch.isin(fit_soft, torch.tensor([0.0, 1.0])).all()
    for targets, index, probs in spy["loss"]:
        expected = fit_soft[index]
        if targets == "hard":  # the one-hot argmax of those probabilities
            assert bool(((probs == 0) | (probs == 1)).all()) and bool((probs.sum(1) == 1).all())
            assert torch.equal(probs.argmax(1), expected.argmax(1))
        else:
            torch.testing.assert_close(probs, expected)
    assert {t for t, _, _ in spy["loss"]} == {"soft", "hard"}
    # Rows that differ only in targets are separate rows with separate configs.
    rows = read_rows(tmp_path / "runs" / "digits.csv")
    assert sorted(zip(rows.method, rows.targets)) == sorted(
        [("teacher", "soft"), ("vanilla", "soft"), ("spy", "soft"), ("vanilla", "hard"),
         ("spy", "hard")])
    hashes = rows.set_index(["method", "targets"]).config_hash
    assert hashes["spy", "soft"] != hashes["spy", "hard"]
    assert rows.n_unlabeled.notna().all() and rows[rows.method != "teacher"].student_fit_u.notna().all()


def test_targets_is_a_checked_hyper_parameter_of_every_student_method():
    for method in M.METHODS.values():
        hp = method.hparams()
        assert ("targets" in hp) == method.trains_student
        if method.trains_student:
            assert hp["targets"] == "soft" and method.hparams({"targets": "hard"})["targets"] == "hard"
    with pytest.raises(ValueError, match="targets must be one of soft, hard"):
        M.get_method("slam").hparams({"targets": "onehot"})
    probs = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])
    assert M.loss_targets(probs, {"targets": "soft"}) is probs
    assert torch.equal(M.loss_targets(probs, {"targets": "hard"}),
                       torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))


# ------------------------------------------------------------------ alpha's lower bound

def test_alpha_lower_bound_must_exceed_the_mix_threshold():
    slam, norm = M.get_method("slam").hparams(), M.get_method("slam_normalized").hparams()
    assert slam["alpha_lower_bound"] == 0.6 and norm["alpha_lower_bound"] == "auto"
    # slam_normalized's default sits just above 1/k, for the k chosen on V.
    for k in (2, 3, 10):
        assert M.resolve_lower_bound(norm, k, normalize=True) == pytest.approx(1 / k + 0.02)
    assert M.resolve_lower_bound(slam, 3, normalize=False) == 0.6
    assert M.resolve_lower_bound({**slam, "alpha_lower_bound": "auto"}, 3, False) == pytest.approx(0.52)
    with pytest.raises(ValueError, match="1/2"):  # s = 1 needs alpha > 1/2
        M.resolve_lower_bound({**slam, "alpha_lower_bound": 0.5}, 3, normalize=False)
    with pytest.raises(ValueError, match="1/k"):  # 0.4 is above 1/3 but not above 1/2
        M.resolve_lower_bound({**norm, "alpha_lower_bound": 0.4}, 2, normalize=True)
    assert M.resolve_lower_bound({**norm, "alpha_lower_bound": 0.4}, 3, normalize=True) == 0.4
    with pytest.raises(ValueError, match="alpha_auto_margin"):
        M.resolve_lower_bound({**norm, "alpha_auto_margin": 0.0}, 3, normalize=True)


def test_fitted_slam_normalized_clips_alpha_just_above_one_over_k():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(400, 5, generator=g), dim=1)
    labels = torch.randint(5, (400,), generator=g)
    ctx = M.FitContext(probs_val=probs, y_val=labels, probs_u=probs, mc_std_u=torch.zeros_like(probs),
                       num_classes=5, teacher_feature_dim=5, student_feature_dim=5,
                       hp=M.get_method("slam_normalized").hparams())
    fitted = M.get_method("slam_normalized").fit(ctx)
    k = fitted.params["k"]
    assert fitted.params["alpha_lower_bound"] == pytest.approx(1 / k + 0.02)
    assert fitted.params["alpha_lower_bound_rule"] == "auto"
    assert float(fitted.per_example["alpha"].min()) == pytest.approx(1 / k + 0.02)


# ------------------------------------------------------------------ the suites' regime

GENERATED = ("mnist1d", "noisy_teacher", "halfspace_rcn", "known_noise", "vocab_known_noise")
# Suites in a language model's regime, one pass over a large pool instead of 30 epochs of a
# smaller one: at 32,768 Zipf classes a student learns a class only from examples of it, so
# a pool 15x larger, seen once, beats 30 epochs of a small one (slam_bench/pipeline/vocab_suites.py).
ONE_PASS = ("vocab_known_noise",)
HARD_LABELS = ("noisy_teacher", "halfspace_rcn")


@pytest.mark.parametrize("name", EMBEDDED_SUITES)
def test_full_embedded_suites_are_in_the_paper_regime(name):
    suite = SUITES[name]
    full = suite.full
    # U: everything left after A and V, except in a suite named for its |U| cap (the
    # halfspace_rcn_u<N> suites vary |U| on purpose).
    assert full.max_unlabeled is None or name.endswith(f"_u{full.max_unlabeled}")
    assert full.trials >= 10 and suite.smoke.trials >= 3 and suite.labeled_weighting == "pooled"
    # One pass over U (every example seen once) or 30 epochs.
    assert full.student.epochs == 1 if name in ONE_PASS else full.student.epochs >= 30
    if name in GENERATED:  # U is large next to A: 6x the largest labeled set, 20x in one pass
        # mnist1d's generator keeps 80% of num_samples to train; a large-class suite sizes
        # its data per variant (Sizes.dataset_options)
        opts = {**suite.dataset_options, **full.dataset_options}
        n = opts["n_train"] if "n_train" in opts else int(0.8 * opts["num_samples"])
        largest = max(full.labeled_sizes)
        assert n >= 12000
        assert n - full.n_val - largest >= (20 if name in ONE_PASS else 6) * largest
    if name in HARD_LABELS:  # where the hard-label comparison lives
        assert {"vanilla", "slam", "slam_normalized"} <= set(suite.hard_methods)
    for variant in (suite.full, suite.smoke):  # smoke and full differ only in numbers
        if variant.teacher_accuracy is not None:
            assert len(variant.teacher_accuracy) == len(variant.labeled_sizes)


def test_choosing_labeled_sizes_keeps_their_teacher_accuracies_and_scenarios():
    suite = get_suite("known_noise")
    table = dict(zip(suite.full.labeled_sizes, suite.full.teacher_accuracy))
    scenario = dict(zip(suite.full.labeled_sizes, suite.full.teacher_scenario))
    last, first = suite.full.labeled_sizes[-1], suite.full.labeled_sizes[0]
    picked = suite.with_sizes(False, labeled_sizes=(last, first)).full
    assert picked.teacher_accuracy == (table[last], table[first])
    assert picked.teacher_scenario == (scenario[last], scenario[first])
    with pytest.raises(ValueError, match="no teacher accuracy"):
        suite.with_sizes(False, labeled_sizes=(7,))


def test_known_noise_grid_has_the_model_cell_and_each_stress_scenario():
    from slam_bench.data.known_noise import SCENARIOS

    full = get_suite("known_noise").full
    assert sorted(full.teacher_scenario) == sorted(SCENARIOS) and full.trials >= 10
    assert len(set(full.labeled_sizes)) == len(full.labeled_sizes)  # one cell each
    with pytest.raises(ValueError, match="teacher_scenario must give one entry"):
        dataclasses.replace(full, teacher_scenario=("model",))
    with pytest.raises(ValueError, match="teacher_scenario needs teacher_accuracy"):
        dataclasses.replace(full, teacher_accuracy=None)
