"""The fair-comparison protocol's machinery: label budgets (`labels_used`, cross-fitting folds,
the A + V reference), one learning-rate schedule decayed to zero, and suites that cannot tune
one method. Nothing here looks at which method wins."""
from __future__ import annotations

import argparse
import dataclasses
import math

import pytest
import torch

from slam_bench.cli import run as cli_run
from slam_bench.pipeline import methods as M
from slam_bench.pipeline import runner
from slam_bench.pipeline import teacher as T
from slam_bench.pipeline import train as TR
from slam_bench.store import read_rows
from slam_bench.pipeline.splits import crossfit_folds, make_split
from slam_bench.pipeline.suites import (LR_SCHEDULES, SUITES, Suite, TrainSpec, get_suite,
                                        register_suite)


# ------------------------------------------------------------------ the schedule

@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_decayed_schedules_start_at_the_base_rate_and_reach_zero_at_the_last_step(schedule):
    total = 37
    f = [TR.lr_factor(schedule, i, total) for i in range(total)]
    assert f[0] == 1.0 and f[-1] == 0.0
    assert all(a >= b for a, b in zip(f, f[1:]))  # never rises
    assert 0 < f[total // 2] < 1


def test_constant_schedule_and_one_step_runs_keep_the_base_rate():
    assert [TR.lr_factor("constant", i, 5) for i in range(5)] == [1.0] * 5
    for schedule in LR_SCHEDULES:
        assert TR.lr_factor(schedule, 0, 1) == 1.0


def test_schedule_errors_name_the_argument():
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        TR.lr_factor("step", 0, 3)
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        TrainSpec(epochs=1, batch_size=2, lr=1e-3, lr_schedule="exp")
    with pytest.raises(ValueError, match="step must be in"):
        TR.lr_factor("cosine", 3, 3)


@pytest.mark.parametrize("schedule,last", [("cosine", 0.0), ("linear", 0.0), ("constant", 0.1)])
def test_the_training_loop_follows_the_schedule_to_its_last_step(schedule, last, monkeypatch):
    made = []
    real = TR.make_optimizer

    def spy(params, spec):
        made.append(real(params, spec))
        return made[-1]

    monkeypatch.setattr(TR, "make_optimizer", spy)
    model = torch.nn.Linear(3, 2)
    x, y = torch.randn(8, 3), torch.tensor([0, 1] * 4)
    spec = TrainSpec(epochs=3, batch_size=4, lr=0.1, lr_schedule=schedule)
    assert TR.train_supervised(model, x, y, spec, seed=0) == 6
    assert made[0].param_groups[0]["lr"] == pytest.approx(last)


# ------------------------------------------------------------------ label budgets

def test_labels_used_counts_a_and_v_where_a_method_reads_them():
    a, v = 20, 100
    for name in ("teacher", "vanilla", "taylor_ce", "ups", "vid"):
        for data in ("val", "crossfit"):
            assert M.get_method(name).labels_used(a, v, data) == a, name
    for name in ("weighted", "forward", "slam", "slam_normalized"):
        assert M.get_method(name).labels_used(a, v, "val") == a + v, name
        assert M.get_method(name).labels_used(a, v, "crossfit") == a, name
    for data in ("val", "crossfit"):  # the reference spends V's labels on training
        assert M.get_method("vanilla_av").labels_used(a, v, data) == a + v


def test_crossfit_folds_are_disjoint_cover_a_and_are_reproducible():
    split = make_split(500, 43, 50, split_seed=3)
    folds = crossfit_folds(split.a, 5, seed=3)
    assert len(folds) == 5
    joined = torch.cat(folds)
    assert len(set(joined.tolist())) == len(joined) == 43  # disjoint
    assert set(joined.tolist()) == set(split.a.tolist())  # covering A
    assert {len(f) for f in folds} <= {8, 9}  # near-equal
    assert all(torch.equal(f, g) for f, g in zip(folds, crossfit_folds(split.a, 5, seed=3)))
    assert not all(torch.equal(f, g) for f, g in zip(folds, crossfit_folds(split.a, 5, seed=4)))


def test_crossfit_fold_errors_name_the_argument():
    a = torch.arange(4)
    with pytest.raises(ValueError, match="crossfit_folds.*exceeds"):
        crossfit_folds(a, 5, seed=0)
    with pytest.raises(ValueError, match="crossfit_folds.*>= 2"):
        crossfit_folds(a, 1, seed=0)
    with pytest.raises(ValueError, match="crossfit_folds must be an int >= 2"):
        dataclasses.replace(get_suite("digits"), crossfit_folds=1)
    with pytest.raises(ValueError, match="estimator_data must be one of"):
        dataclasses.replace(get_suite("digits"), estimator_data="test")


def test_each_crossfit_teacher_trains_on_a_minus_its_fold_and_predicts_that_fold(monkeypatch):
    split = make_split(200, 23, 30, split_seed=1)
    seen = []

    def fake_teacher(ctx, ds, xt, yt, xs, ys, fold_split, key, *rest, **kw):
        seen.append((fold_split, key))
        # Each example's "prediction" names the example, so the assembly can be checked.
        probs = torch.zeros(len(fold_split.v), 200)
        probs[torch.arange(len(fold_split.v)), fold_split.v] = 1.0
        return dataclasses.replace(_DUMMY, probs_val=probs)

    monkeypatch.setattr(T, "teacher_outputs", fake_teacher)
    probs = T.crossfit_probs(None, None, None, None, None, None, split, "k0", None, None, 0, 1,
                             None, k=4)
    assert len(seen) == 4 and len({key for _, key in seen}) == 4
    for fold_split, _ in seen:
        trained, predicted = set(fold_split.a.tolist()), set(fold_split.v.tolist())
        assert not trained & predicted and trained | predicted == set(split.a.tolist())
    assert torch.equal(probs.argmax(dim=1), split.a)  # row i is A's i-th example


_DUMMY = T.TeacherOutputs(key="x", probs_val=torch.zeros(0, 2), probs_u=torch.zeros(0, 2),
                          probs_test=torch.zeros(0, 2), mc_std_u=torch.zeros(0, 2),
                          features_u=torch.zeros(0, 2), test_acc=0.5, val_acc=0.5, steps=1,
                          wall_s=0.0)


def _tiny(name="digits", **changes):
    suite = get_suite(name)
    return dataclasses.replace(suite, **changes).with_sizes(True, trials=1, labeled_sizes=(
        suite.smoke.labeled_sizes[0],))


def test_a_crossfit_run_fits_on_a_alone_and_logs_its_budget(tmp_path, monkeypatch):
    sizes_seen = []
    slam = M.get_method("slam")

    def spy(ctx):
        sizes_seen.append(len(ctx.y_val))
        return slam.fit(ctx)

    monkeypatch.setitem(M.METHODS, "slam", dataclasses.replace(slam, fit=spy))
    suite = _tiny(estimator_data="crossfit", crossfit_folds=3,
                  methods=("teacher", "vanilla", "vanilla_av", "slam"))
    rows = read_rows(runner.run_suite(suite, tmp_path, smoke=True)).set_index("method")
    a, v = int(rows.labeled_size.iloc[0]), int(rows.n_val.iloc[0])
    assert sizes_seen == [a]  # the estimators saw A's labels, not V's
    assert (rows.estimator_data == "crossfit").all()
    assert rows.labels_used.to_dict() == {"teacher": a, "vanilla": a, "vanilla_av": a + v,
                                          "slam": a}
    assert rows.crossfit_folds["slam"] == 3 and math.isnan(rows.crossfit_folds["vanilla"])
    # The trial's teacher, the A + V teacher and the 3 fold teachers, each cached once.
    assert len(list((tmp_path / "cache" / "teacher").glob("*.pt"))) == 5


def test_vanilla_av_trains_teacher_and_student_on_a_and_v(tmp_path):
    suite = _tiny(methods=("teacher", "vanilla", "vanilla_av"))
    rows = read_rows(runner.run_suite(suite, tmp_path, smoke=True)).set_index("method")
    assert rows.teacher_key["vanilla_av"] != rows.teacher_key["vanilla"]
    assert rows.teacher_key["vanilla"] == rows.teacher_key["teacher"]
    a, v, u = (int(rows[c].iloc[0]) for c in ("labeled_size", "n_val", "n_unlabeled"))
    spec = suite.smoke.student
    assert rows.steps["vanilla"] == spec.steps(a + u)
    assert rows.steps["vanilla_av"] == spec.steps(a + v + u)  # V joins the student's pool


def test_vanilla_av_under_a_noise_model_keeps_the_datasets_teacher(tmp_path):
    suite = _tiny("halfspace_rcn", methods=("teacher", "vanilla", "vanilla_av"), hard_methods=())
    rows = read_rows(runner.run_suite(suite, tmp_path, smoke=True)).set_index("method")
    assert rows.teacher_key["vanilla_av"] == rows.teacher_key["teacher"]
    assert rows.labels_used["vanilla_av"] == rows.labeled_size["teacher"] + rows.n_val["teacher"]


# ------------------------------------------------------------------ one procedure for all

def test_a_suite_that_sets_one_methods_hyper_parameters_is_refused_at_registration():
    base = dataclasses.replace(get_suite("digits"), name="tuned_digits")
    with pytest.raises(ValueError, match="'k', which is not a hyper-parameter of vanilla"):
        register_suite(dataclasses.replace(base, student_options={"k": 2}))
    with pytest.raises(ValueError, match="'temperature'.*ups"):  # ups has no temperature
        register_suite(dataclasses.replace(base, student_options={"temperature": 2.0}))
    assert "tuned_digits" not in SUITES
    with pytest.raises(TypeError):  # the per-method form no longer exists
        Suite(**{**{f.name: getattr(base, f.name) for f in dataclasses.fields(base)},
                 "method_options": {"slam": {"k": 2}}})


def test_no_registered_suite_sets_options_for_its_methods():
    assert all(not s.student_options for s in SUITES.values())


def test_slams_rule_gives_k_2_on_a_binary_task_by_itself():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(300, 2, generator=g) * 2, dim=1)
    y = torch.randint(0, 2, (300,), generator=g)
    for name in ("slam", "slam_normalized"):
        method = M.get_method(name)
        ctx = M.FitContext(probs_val=probs, y_val=y, probs_u=probs, mc_std_u=torch.zeros_like(probs),
                           num_classes=2, teacher_feature_dim=2, student_feature_dim=4,
                           hp=method.hparams())
        assert method.fit(ctx).params["k"] == 2, name


def test_cli_estimator_data_option_sets_the_suites_protocol():
    parser = argparse.ArgumentParser()
    cli_run.add_arguments(parser)
    suite = cli_run.build_suite(parser.parse_args(["digits", "--estimator-data", "crossfit"]))
    assert suite.estimator_data == "crossfit"
    assert cli_run.build_suite(parser.parse_args(["digits"])).estimator_data == "val"
    with pytest.raises(SystemExit):
        parser.parse_args(["digits", "--estimator-data", "test"])
