"""The embedded benchmark suites (no download, CPU-sized).

`pytest suites/` (smoke): every suite at its tiny size into a temporary directory, checking
the pipeline's integrity: every method yields a row per trial, accuracies are in range, the
splits, leaderboard and plot files are well-formed.
`pytest suites/ --benchmark` (full): the same suites at full size, rewriting
results/runs/<suite>.csv, results/leaderboard/<suite>.csv and <suite>.paired.csv,
results/plots/<suite>.png and the leaderboard tables in README.md; the same integrity checks
run on the written files, and the full run checks that every paired cell has n >= 10. The
checks are the protocol's (label budgets, one schedule and one checkpoint rule for every
method, paired trials) and, on `known_noise`, the estimators against the known answer
(k, alpha); no test asserts which method wins.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from slam_bench.data import dataset_status
from slam_bench.report.cells import cell_name, method_order, topk_rank
from slam_bench.report.leaderboard import END, START, leaderboard_csv
from slam_bench.pipeline.methods import METHODS
from slam_bench.report.paired import PAIRED_COLUMNS, comparisons, paired_csv
from slam_bench.report.regenerate import regenerate
from slam_bench.store import read_rows, topk_label
from slam_bench.pipeline.runner import plan, run_suite, split_path
from slam_bench.pipeline.splits import load_split
from slam_bench.pipeline.suites import EMBEDDED_SUITES, get_suite

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = list(EMBEDDED_SUITES)
REQUIRED = ["suite", "dataset", "labeled_size", "n_unlabeled", "n_val", "n_test", "split_seed",
            "train_seed", "teacher_arch", "student_arch", "teacher_test_acc", "method", "targets",
            "config_hash", "epochs", "selection", "labeled_weighting", "lr_schedule",
            "labels_used", "estimator_data", "test_acc", "wall_s", "device", "git_sha"]
# The label budget, written out here rather than read from the registry's flags: the methods
# whose fit reads the estimator data's labels, and the one that trains on A + V.
FITS_ON_LABELS = {"weighted", "forward", "slam", "slam_normalized"}
TRAINS_ON_AV = {"vanilla_av"}
CELL = re.compile(r"^\d{1,3}\.\d\d \+- (\d+\.\d\d|n/a)$")


@pytest.mark.parametrize("name", EMBEDDED)
def test_embedded_suite(name, full_run, recompute, tmp_path):
    suite = get_suite(name)
    reason = dataset_status(suite.dataset)
    if reason is not None:
        pytest.skip(f"{name}: {reason}")
    out = ROOT / "results" if full_run else tmp_path / "results"
    run_suite(suite, out, smoke=not full_run, prune=full_run, force=recompute)
    regenerate(out, [name], readme=ROOT / "README.md" if full_run else None)
    check_outputs(out, suite, smoke=not full_run)


def check_known_noise_estimates(slam: pd.DataFrame, smoke: bool) -> None:
    """Where SLaM's model holds, V's likelihood recovers the candidate sets' size (3) and (with
    the full |V| = 500) the isotonic alpha its truth; every row logs its scenario and k rule."""
    assert slam.teacher_scenario.notna().all() and (slam.k_rule == "likelihood").all()
    model = slam[slam.teacher_scenario == "model"]
    assert len(model) and (model.k == 3).mean() >= 0.9, model.k.tolist()
    if not smoke:
        assert (model.alpha_true_mae_raw < 0.1).all(), model.alpha_true_mae_raw.tolist()


def check_topk_outputs(out: Path, suite, df: pd.DataFrame, smoke: bool) -> None:
    """Every row names its teacher cache and its bytes (n rows x K x (int32 id + fp32 prob) on a
    top-K cache), every student row its step's peak memory; a suite run on top-K caches gets
    its accuracy-and-memory plot against K."""
    topks = suite.sizes(smoke).teacher_topk
    assert set(df.teacher_topk) == {topk_label(k) for k in topks}
    assert (df.teacher_cache_bytes > 0).all()
    top = df[df.teacher_topk != "dense"]
    rows = top.n_val + top.n_unlabeled + top.n_test
    assert (top.teacher_cache_bytes == rows * top.teacher_topk.astype(int) * 8).all()
    assert (df[df.method != "teacher"].student_peak_bytes > 0).all()
    png = out / "plots" / f"{suite.name}.topk.png"
    assert (png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n") == (len(top) > 0)


def check_outputs(out: Path, suite, smoke: bool) -> None:
    df = read_rows(out / "runs" / f"{suite.name}.csv")
    topks = sorted((topk_label(k) for k in suite.sizes(smoke).teacher_topk), key=topk_rank)
    # Every (trial, method, targets, teacher cache) has exactly one row.
    expected = {(n, s, t, *r, k) for n, s, t in plan(suite, smoke) for r in suite.runs()
                for k in topks}
    got = [(int(r.labeled_size), int(r.split_seed), int(r.train_seed), r.method, r.targets,
            r.teacher_topk) for r in df.itertuples()]
    assert sorted(got) == sorted(expected)
    if topks != ["dense"]:
        check_topk_outputs(out, suite, df, smoke)
    for col in REQUIRED:
        assert col in df.columns, col
        assert not df[col].isna().any(), col
    assert ((df.test_acc >= 0) & (df.test_acc <= 1)).all()
    assert ((df.teacher_test_acc >= 0) & (df.teacher_test_acc <= 1)).all()
    assert (df.selection == "last").all()
    # One recipe: every student on the suite's decayed schedule, and the same steps in a trial
    # for every method whose pool is A + U (vanilla_av's pool also holds V).
    students_ = df[df.method != "teacher"]
    assert (students_.lr_schedule == suite.sizes(smoke).student.lr_schedule).all()
    on_a = students_[~students_.method.isin(TRAINS_ON_AV)]
    assert (on_a.groupby(["labeled_size", "split_seed"]).steps.nunique() == 1).all()
    # The label budget of every row.
    assert (df.estimator_data == suite.estimator_data).all()
    spends_v = df.method.isin(TRAINS_ON_AV) | (df.method.isin(FITS_ON_LABELS)
                                               & (df.estimator_data == "val"))
    assert (df.labels_used == df.labeled_size + spends_v * df.n_val).all()
    fitted = df[df.method.isin(FITS_ON_LABELS)]
    if suite.estimator_data == "crossfit":
        folds = 0 if suite.sizes(smoke).teacher_accuracy is not None else suite.crossfit_folds
        assert (fitted.crossfit_folds == folds).all()
    assert fitted.estimator_acc.between(0, 1).all()
    # The regime: U is all that is left after A and V in full runs, and every student logs
    # how well it fits the teacher's labels on U.
    if not smoke and suite.full.max_unlabeled is None:
        n_train = df.n_unlabeled + df.n_val + df.labeled_size
        assert (n_train == n_train.iloc[0]).all()
    students = df[df.method != "teacher"]
    assert students.student_fit_u.between(0, 1).all()
    assert (df.labeled_weighting == suite.labeled_weighting).all()
    teacher = df[df.method == "teacher"]
    assert (teacher.test_acc == teacher.teacher_test_acc).all()
    # One config per method and labeled size; the split seed differs from the train seed.
    assert (df.groupby(["labeled_size", "method", "targets", "teacher_topk"]).config_hash
            .nunique() == 1).all()
    assert (df.split_seed != df.train_seed).all()
    slam = df[df.method == "slam"]
    assert slam.k.between(1, 1000).all() and (slam.alpha_lower_bound > 0.5).all()
    if suite.dataset in ("noisy_teacher", "halfspace_rcn", "known_noise",
                         "vocab_known_noise"):  # alpha vs the truth
        assert slam.alpha_true_mae.between(0, 1).all() and slam.alpha_true_mae_raw.between(0, 1).all()
    if suite.dataset == "vocab_known_noise":  # the generator's ceiling, stated in every row
        bayes = {json.loads(m)["bayes_test_acc"] for m in df.dataset_meta}
        assert len(bayes) == 1 and 0 < bayes.pop() <= 1
        assert students.student_err_vs_best.between(0, 1).all()
    if suite.name == "known_noise":  # the estimators on the known answer (not who wins)
        check_known_noise_estimates(slam, smoke)
    # The saved splits are disjoint and match the rows' sizes.
    for r in teacher[teacher.targets == "soft"].itertuples():
        sp = load_split(split_path(out, suite.name, r.dataset, r.labeled_size, r.split_seed,
                                   "smoke" if smoke else "full"))
        assert (len(sp.a), len(sp.v), len(sp.u)) == (r.labeled_size, r.n_val, r.n_unlabeled)
        assert len(set(sp.a.tolist()) | set(sp.v.tolist()) | set(sp.u.tolist())) == \
            len(sp.a) + len(sp.v) + len(sp.u)
    # Leaderboard: teacher first, one column per dataset_labeled, well-formed cells, and the
    # same bytes when regenerated from the same rows.
    lb_path = out / "leaderboard" / f"{suite.name}.csv"
    lb = pd.read_csv(lb_path, dtype=str, keep_default_na=False)
    assert list(lb.method) == [m for m in METHODS if m in suite.methods] + ["trials"]
    sizes = sorted({n for n, _, _ in plan(suite, smoke)})
    scenario = dict(zip(suite.sizes(smoke).labeled_sizes,
                        suite.sizes(smoke).teacher_scenario or ()))
    cells = [cell_name(suite.dataset, n, t, suite.estimator_data, scenario.get(n, ""), k)
             for t in sorted({t for _, t in suite.runs()}, key=["soft", "hard"].index)
             for k in topks for n in sizes]
    assert list(lb.columns) == ["method"] + cells
    for col in lb.columns[1:]:
        ran = suite.hard_methods if col.endswith("_hard") else suite.methods
        body = lb[:-1].set_index("method")[col]
        assert all(CELL.match(body[m]) for m in ran), body.tolist()
        assert all(body[m] == "" for m in body.index if m not in ran)
        assert lb[col].iloc[-1] == str(suite.sizes(smoke).trials)
        means = [float(c.split()[0]) for c in lb[col][:-1] if c]
        assert all(0 <= m <= 100 and not math.isnan(m) for m in means)
    assert lb_path.read_bytes() == leaderboard_csv(df)
    # Paired leaderboard: every comparison the report defines in each cell (every method against
    # vanilla, each SLaM variant against every other student), paired on all trials; an
    # interval only where n >= 3 and the differences spread.
    paired_path = out / "leaderboard" / f"{suite.name}.paired.csv"
    paired = pd.read_csv(paired_path)
    assert list(paired.columns) == PAIRED_COLUMNS
    assert paired_path.read_bytes() == paired_csv(suite.name, df)
    expected = set()
    for t in sorted({t for _, t in suite.runs()}):
        ran = [m for m, tt in suite.runs() if tt == t]
        expected |= {(cell_name(suite.dataset, n, t, suite.estimator_data, scenario.get(n, ""),
                                k), m, r)
                     for n in sizes for k in topks for m, r in comparisons(method_order(ran))}
    assert set(zip(paired.cell, paired.method, paired.reference)) == expected
    assert (paired.n == suite.sizes(smoke).trials).all() and paired.wins.between(0, paired.n).all()
    ci = paired.dropna(subset=["delta_ci_low"])
    assert ((ci.delta_ci_low <= ci.delta_mean) & (ci.delta_mean <= ci.delta_ci_high)).all()
    assert (paired.n >= (3 if smoke else 10)).all()
    assert paired.p_adjusted.dropna().between(0, 1).all()
    assert (paired.p_adjusted.dropna() >= paired.p_value.dropna()).all()
    png = out / "plots" / f"{suite.name}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    readme = ROOT / "README.md"
    if not smoke and START in readme.read_text():
        section = readme.read_text().split(START, 1)[1].split(END, 1)[0]
        assert f"**{suite.name}**" in section
