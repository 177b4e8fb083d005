"""Paired statistics against vanilla (slam_bench.report.paired) on hand-made rows."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from slam_bench.report.cells import cell_name, cell_order, with_cells
from slam_bench.report.paired import PAIRED_COLUMNS, paired_csv, paired_markdown, paired_table, t_interval

# t quantile 0.975 with 4 degrees of freedom (tables: 2.776445).
T_975_4 = 2.7764451051977987


def _rows(method, accs, labeled=50, targets="soft", seeds=None):
    seeds = seeds if seeds is not None else range(len(accs))
    return [{"suite": "s", "dataset": "d", "labeled_size": labeled, "split_seed": s,
             "train_seed": 1000 + s, "method": method, "targets": targets, "test_acc": a}
            for s, a in zip(seeds, accs)]


def _table():
    vanilla = [0.60, 0.70, 0.65, 0.80, 0.75]
    return pd.DataFrame(
        _rows("vanilla", vanilla)
        # +1, +2, +3, +4, +5 points: mean 3, sample std sqrt(2.5)
        + _rows("slam", [v + d / 100 for v, d in zip(vanilla, (1, 2, 3, 4, 5))])
        # -1, 0, +1, -2, +2 points: one tie, two wins, two losses
        + _rows("forward", [v + d / 100 for v, d in zip(vanilla, (-1, 0, 1, -2, 2))])
        # only three trials, one of them without a vanilla partner (seed 9): n = 2
        + _rows("taylor_ce", [0.62, 0.69, 0.5], seeds=[0, 1, 9])
        + _rows("vanilla", [0.5, 0.6], targets="hard") + _rows("slam", [0.55, 0.70], targets="hard")
        + _rows("slam", [0.9], labeled=80))  # a cell without vanilla: not in the paired table


def test_paired_deltas_and_t_intervals_by_hand():
    table = paired_table("s", _table())
    assert list(table.columns) == PAIRED_COLUMNS
    t = table.set_index(["cell", "method"])
    slam = t.loc[("d_50", "slam")]
    half = T_975_4 * math.sqrt(2.5) / math.sqrt(5)
    assert slam.n == 5 and slam.wins == 5
    assert slam.delta_mean == pytest.approx(3.0)
    assert slam.delta_ci_low == pytest.approx(3.0 - half) and slam.delta_ci_high == pytest.approx(3.0 + half)
    assert (slam.delta_ci_low, slam.delta_ci_high) == pytest.approx((1.036757, 4.963243), abs=1e-6)
    fwd = t.loc[("d_50", "forward")]
    assert fwd.n == 5 and fwd.wins == 2 and fwd.delta_mean == pytest.approx(0.0)
    assert fwd.delta_ci_low < 0 < fwd.delta_ci_high
    tay = t.loc[("d_50", "taylor_ce")]  # paired on seeds 0 and 1 only: +2 and -1 points
    assert tay.n == 2 and tay.wins == 1 and tay.delta_mean == pytest.approx(0.5)
    half2 = 12.706204736174707 * math.sqrt(4.5) / math.sqrt(2)  # t(0.975, 1)
    assert tay.delta_ci_high == pytest.approx(0.5 + half2)
    hard = t.loc[("d_50_hard", "slam")]  # paired within the hard-label cell only
    assert hard.n == 2 and hard.delta_mean == pytest.approx(7.5)
    assert ("d_80", "slam") not in t.index
    assert sorted(t.reset_index().cell.unique()) == ["d_50", "d_50_hard"]


def test_paired_csv_columns_byte_stable_and_single_trial_interval_empty():
    df = _table()
    text = paired_csv("s", df).decode()
    assert text.splitlines()[0] == ",".join(PAIRED_COLUMNS)
    assert paired_csv("s", df.sample(frac=1, random_state=3)) == paired_csv("s", df)
    one = pd.DataFrame(_rows("vanilla", [0.5]) + _rows("slam", [0.6]))
    row = paired_csv("s", one).decode().splitlines()[1]
    assert row == "s,d_50,slam,1,10.0000,,,1"


def test_t_interval_edges():
    assert t_interval([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)  # no spread: a point interval
    mean, low, high = t_interval([1.0])
    assert mean == 1.0 and math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError, match="deltas"):
        t_interval([])


def test_cells_names_and_order():
    assert cell_name("mnist1d", 250) == "mnist1d_250"
    assert cell_name("mnist1d", 250, "hard") == "mnist1d_250_hard"
    df = with_cells(pd.DataFrame({"dataset": ["d"] * 4, "labeled_size": [100, 20, 20, 100],
                                  "targets": ["hard", "soft", "hard", "soft"]}))
    assert cell_order(df) == ["d_20", "d_100", "d_20_hard", "d_100_hard"]
    old = with_cells(pd.DataFrame({"dataset": ["d"], "labeled_size": [5]}))  # no targets column
    assert list(old.cell) == ["d_5"] and list(old.targets) == ["soft"]


def test_paired_markdown_reading_names_resolved_differences():
    text = paired_markdown("s", _table())
    assert "| `slam` | **+3.00 [+1.04, +4.96] 5/5** |" in text  # bold: the interval excludes 0
    assert "| `forward` | +0.00 [" in text
    assert "Resolved ahead of `vanilla`: `slam` at `d_50` (+3.00)" in text
    assert "Resolved behind: none" in text
