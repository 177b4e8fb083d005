"""Paired statistics (slam_bench.report.paired, slam_bench.report.stats) on hand-made rows:
differences, intervals, p-values against scipy, Holm's adjustment against values computed by
hand, the comparisons each SLaM variant gets, and the generated reading."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from slam_bench.report.cells import cell_name, cell_order, with_cells
from slam_bench.report.paired import (PAIRED_COLUMNS, comparisons, paired_csv, paired_markdown,
                                      paired_table, t_interval)
from slam_bench.report.stats import holm, paired_p_value, t_half_width

# t quantile 0.975 with 4 degrees of freedom (tables: 2.776445).
T_975_4 = 2.7764451051977987


def _rows(method, accs, labeled=50, targets="soft", seeds=None, **extra):
    seeds = seeds if seeds is not None else range(len(accs))
    return [{"suite": "s", "dataset": "d", "labeled_size": labeled, "split_seed": s,
             "train_seed": 1000 + s, "method": method, "targets": targets, "test_acc": a, **extra}
            for s, a in zip(seeds, accs)]


VANILLA = [0.60, 0.70, 0.65, 0.80, 0.75]


def _table():
    return pd.DataFrame(
        _rows("vanilla", VANILLA)
        # +1, +2, +3, +4, +5 points: mean 3, sample std sqrt(2.5)
        + _rows("slam", [v + d / 100 for v, d in zip(VANILLA, (1, 2, 3, 4, 5))])
        # -1, 0, +1, -2, +2 points: one tie, two wins, two losses
        + _rows("forward", [v + d / 100 for v, d in zip(VANILLA, (-1, 0, 1, -2, 2))])
        # only three trials, one of them without a vanilla partner (seed 9): n = 2
        + _rows("taylor_ce", [0.62, 0.69, 0.5], seeds=[0, 1, 9])
        + _rows("vanilla", [0.5, 0.6], targets="hard") + _rows("slam", [0.55, 0.70], targets="hard")
        + _rows("slam", [0.9], labeled=80))  # a cell with SLaM alone: nothing to compare


def test_paired_deltas_and_t_intervals_by_hand():
    table = paired_table("s", _table())
    assert list(table.columns) == PAIRED_COLUMNS
    t = table.set_index(["cell", "method", "reference"])
    slam = t.loc[("d_50", "slam", "vanilla")]
    half = T_975_4 * math.sqrt(2.5) / math.sqrt(5)
    assert slam.n == 5 and slam.wins == 5
    assert slam.delta_mean == pytest.approx(3.0)
    assert slam.delta_ci_low == pytest.approx(3.0 - half) and slam.delta_ci_high == pytest.approx(3.0 + half)
    assert (slam.delta_ci_low, slam.delta_ci_high) == pytest.approx((1.036757, 4.963243), abs=1e-6)
    fwd = t.loc[("d_50", "forward", "vanilla")]
    assert fwd.n == 5 and fwd.wins == 2 and fwd.delta_mean == pytest.approx(0.0)
    assert fwd.delta_ci_low < 0 < fwd.delta_ci_high
    tay = t.loc[("d_50", "taylor_ce", "vanilla")]  # paired on seeds 0 and 1 only: +2 and -1 points
    assert tay.n == 2 and tay.wins == 1 and tay.delta_mean == pytest.approx(0.5)
    # n = 2: no interval, but the t-test (1 degree of freedom) is defined
    assert math.isnan(tay.delta_ci_low) and math.isnan(tay.delta_ci_high)
    assert tay.p_value == pytest.approx(sps.ttest_rel([62, 69], [60, 70]).pvalue)
    hard = t.loc[("d_50_hard", "slam", "vanilla")]  # paired within the hard-label cell only
    assert hard.n == 2 and hard.delta_mean == pytest.approx(7.5)
    # SLaM against every other method of its cell, in both directions of the difference
    s_f = t.loc[("d_50", "slam", "forward")]
    assert s_f.n == 5 and s_f.delta_mean == pytest.approx(3.0) and s_f.wins == 5
    assert t.loc[("d_50", "slam", "taylor_ce")].n == 2
    assert not any(c == "d_80" for c, _, _ in t.index)
    assert sorted(t.reset_index().cell.unique()) == ["d_50", "d_50_hard"]


def test_p_values_match_scipy_ttest_rel_and_holm_covers_the_file():
    df = _table()
    table = paired_table("s", df)
    acc = with_cells(df).assign(acc=100 * df.test_acc)
    for r in table.itertuples():
        a = acc[(acc.cell == r.cell) & (acc.method == r.method)].set_index("split_seed").acc
        b = acc[(acc.cell == r.cell) & (acc.method == r.reference)].set_index("split_seed").acc
        common = sorted(set(a.index) & set(b.index))
        if len(common) < 2:
            assert math.isnan(r.p_value)
        else:
            assert r.p_value == pytest.approx(sps.ttest_rel(a[common], b[common]).pvalue, rel=1e-9)
    # Holm over every row with a p-value, rows without one left out of the family
    assert np.allclose(table.p_adjusted, holm(table.p_value.to_numpy()), equal_nan=True)
    defined = table.p_value.notna()
    assert (table.p_adjusted[defined] >= table.p_value[defined]).all()
    assert table.p_adjusted[~defined].isna().all()


def test_holm_on_a_hand_made_family():
    # Sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> running
    # max 0.06); NaN is not a member (m = 4, not 5).
    p = [0.01, 0.04, 0.03, math.nan, 0.005]
    assert np.allclose(holm(p), [0.03, 0.06, 0.06, math.nan, 0.02], equal_nan=True)
    # Multipliers past 1 are capped, ties get one value, the order of the input is kept.
    assert np.allclose(holm([0.5, 0.2, 0.2]), [0.6, 0.6, 0.6])
    assert np.allclose(holm([0.02, 0.8]), [0.04, 0.8])
    assert np.allclose(holm([0.3, 0.6]), [0.6, 0.6])
    assert holm([]).shape == (0,) and np.isnan(holm([math.nan])).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([1.5])


def test_no_interval_or_p_value_without_spread_and_no_interval_below_three():
    assert all(math.isnan(v) for v in t_interval([2.0, 2.0, 2.0])[1:])  # no spread
    # float rounding of equal differences is not a spread
    assert all(math.isnan(v) for v in t_interval([0.3 - 0.1, 0.2, 0.5 - 0.3])[1:])
    assert math.isnan(paired_p_value([2.0, 2.0, 2.0])) and math.isnan(paired_p_value([1.0]))
    mean, low, high = t_interval([1.0, 3.0])  # n = 2: no interval
    assert mean == 2.0 and math.isnan(low) and math.isnan(high)
    assert math.isnan(t_half_width(1.0, 2)) and not math.isnan(t_half_width(1.0, 3))
    with pytest.raises(ValueError, match="1-D"):
        t_interval([])


def test_smoke_table_with_identical_differences_claims_nothing():
    # n = 2 and identical differences: the smoke table once drew and bolded [+10, +10]
    df = pd.DataFrame(_rows("vanilla", [0.5, 0.6]) + _rows("slam", [0.6, 0.7]))
    row = paired_table("s", df).iloc[0]
    assert math.isnan(row.delta_ci_low) and math.isnan(row.p_value) and math.isnan(row.p_adjusted)
    text = paired_markdown("s", df)
    assert not _bold_cells(text)
    assert "+10.00 2/2 (no interval)" in text
    three = pd.DataFrame(_rows("vanilla", [0.5, 0.6, 0.7]) + _rows("slam", [0.6, 0.7, 0.8]))
    assert math.isnan(paired_table("s", three).iloc[0].delta_ci_low)  # n = 3, zero spread


def test_paired_csv_columns_byte_stable_and_single_trial_empty():
    df = _table()
    text = paired_csv("s", df).decode()
    assert text.splitlines()[0] == ",".join(PAIRED_COLUMNS)
    assert paired_csv("s", df.sample(frac=1, random_state=3)) == paired_csv("s", df)
    one = pd.DataFrame(_rows("vanilla", [0.5]) + _rows("slam", [0.6]))
    row = paired_csv("s", one).decode().splitlines()[1]
    assert row == "s,d_50,slam,vanilla,1,10.0000,,,1,,"
    back = pd.read_csv(__import__("io").BytesIO(paired_csv("s", df)))
    assert back.p_value.dtype == float and back.p_adjusted.dtype == float


def test_each_slam_variant_is_compared_with_every_other_student_method():
    methods = ["teacher", "vanilla", "forward", "ups", "slam", "slam_normalized", "vanilla_av"]
    pairs = comparisons(methods)
    assert len(pairs) == len(set(pairs))
    # every method against vanilla, the teacher included
    assert {m for m, ref in pairs if ref == "vanilla"} == set(methods) - {"vanilla"}
    students = set(methods) - {"teacher"}
    for s in ("slam", "slam_normalized"):
        covered = {ref for m, ref in pairs if m == s} | {m for m, ref in pairs if ref == s}
        assert covered == students - {s}
    # two variants once; non-SLaM methods only against vanilla; never against the teacher
    assert ("slam", "slam_normalized") in pairs and ("slam_normalized", "slam") not in pairs
    assert all(ref == "vanilla" for m, ref in pairs if not m.startswith("slam"))
    assert all(ref != "teacher" for _, ref in pairs)
    # no vanilla in the cell: SLaM still against the others
    assert comparisons(["forward", "slam"]) == [("slam", "forward")]


def test_cells_names_and_order():
    assert cell_name("mnist1d", 250) == "mnist1d_250"
    assert cell_name("mnist1d", 250, "hard") == "mnist1d_250_hard"
    assert cell_name("mnist1d", 250, "hard", "crossfit") == "mnist1d_250_hard_crossfit"
    assert cell_name("mnist1d", 250, "soft", "val") == "mnist1d_250"
    df = with_cells(pd.DataFrame({"dataset": ["d"] * 4, "labeled_size": [100, 20, 20, 100],
                                  "targets": ["hard", "soft", "hard", "soft"]}))
    assert cell_order(df) == ["d_20", "d_100", "d_20_hard", "d_100_hard"]
    old = with_cells(pd.DataFrame({"dataset": ["d"], "labeled_size": [5]}))  # no targets column
    assert list(old.cell) == ["d_5"] and list(old.targets) == ["soft"]
    est = with_cells(pd.DataFrame({"dataset": ["d"] * 4, "labeled_size": [20, 20, 20, 20],
                                   "targets": ["soft", "hard", "soft", "soft"],
                                   "estimator_data": ["crossfit", "crossfit", "val", None]}))
    assert list(est.cell) == ["d_20_crossfit", "d_20_hard_crossfit", "d_20", "d_20"]
    assert cell_order(est) == ["d_20", "d_20_crossfit", "d_20_hard_crossfit"]
    # One teacher scenario per labeled size (known_noise's stress grid): the suite's order,
    # by labeled size, not the scenarios' alphabetical order.
    grid = with_cells(pd.DataFrame({"dataset": ["k"] * 4, "labeled_size": [303, 300, 302, 301],
                                    "teacher_scenario": ["folded", "model", "uneven", "wide"]}))
    assert cell_order(grid) == ["k_300_model", "k_301_wide", "k_302_uneven", "k_303_folded"]


def test_crossfit_rows_are_paired_within_their_own_cell():
    df = pd.DataFrame(_rows("vanilla", VANILLA, estimator_data="val")
                      + _rows("slam", [v + 0.01 for v in VANILLA], estimator_data="val")
                      + _rows("vanilla", VANILLA, estimator_data="crossfit")
                      + _rows("slam", [v - 0.02 for v in VANILLA], estimator_data="crossfit"))
    t = paired_table("s", df).set_index(["cell", "method", "reference"])
    assert t.loc[("d_50", "slam", "vanilla")].delta_mean == pytest.approx(1.0)
    assert t.loc[("d_50_crossfit", "slam", "vanilla")].delta_mean == pytest.approx(-2.0)


def _bold_cells(text):
    return [line for line in text.splitlines() if line.startswith("| `") and "**" in line]


def _spread(base, deltas):
    return [b + d / 100 for b, d in zip(base, deltas)]


def test_paired_markdown_reading_names_resolved_differences_after_holm():
    vanilla = [0.60, 0.70, 0.65, 0.80, 0.75, 0.62, 0.71, 0.68]
    df = pd.DataFrame(
        _rows("vanilla", vanilla)
        + _rows("slam", _spread(vanilla, (3, 4, 3.5, 4.5, 3, 4, 3.5, 4)))       # far ahead
        + _rows("forward", _spread(vanilla, (8, 9.5, 8, 9.5, 8.5, 8.5, 9, 9)))  # SLaM behind it
        + _rows("weighted", _spread(vanilla, (1, -1, 2, -2, 0.5, -0.5, 1, -1))))  # noise
    text = paired_markdown("s", df)
    t = paired_table("s", df).set_index(["method", "reference"])
    assert t.loc[("slam", "vanilla")].p_adjusted < 0.05
    assert t.loc[("slam", "forward")].p_adjusted < 0.05 and t.loc[("slam", "forward")].delta_mean < 0
    assert "| `slam` | **+3.69 [" in text  # bold: resolved after Holm
    assert "| `weighted` | +0.00 [" in text
    assert ("Against `vanilla`, resolved ahead: `forward` at `d_50` (+8.75, p_adj 6.2e-09); "
            "`slam` at `d_50` (+3.69") in text
    assert "`slam` resolved ahead of: `vanilla` at `d_50` (+3.69" in text
    assert "Resolved behind: `forward` at `d_50` (-5.06" in text
    assert "`d_50`: `forward` " in text and "`slam` -5.06 (behind, resolved)" in text
    assert "| `slam` − `forward` | **-5.06 [" in text


def test_unresolved_after_holm_is_not_bold_though_its_interval_excludes_zero():
    vanilla = [0.60, 0.70, 0.65, 0.80, 0.75]
    df = pd.DataFrame(_rows("vanilla", vanilla)
                      + _rows("slam", _spread(vanilla, (0.2, 1.8, 1.5, 0.9, 2.4)))
                      + _rows("forward", _spread(vanilla, (0.1, 0.3, -0.2, 0.4, 0.1)))
                      + _rows("ups", _spread(vanilla, (1.0, -0.3, 0.6, 0.2, 0.7)))
                      + _rows("vid", _spread(vanilla, (0.3, -0.5, 0.9, -0.1, 0.4))))
    r = paired_table("s", df).set_index(["method", "reference"]).loc[("slam", "vanilla")]
    assert r.delta_ci_low > 0 and r.p_value < 0.05 and r.p_adjusted >= 0.05
    text = paired_markdown("s", df)
    assert "| `slam` | +1.36 [" in text and not _bold_cells(text)
