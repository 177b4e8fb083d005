"""The report's files on hand-made rows: the tidy summary (columns, types, intervals only for
n >= 3 with a spread, the same bytes from the same rows), every file written by regenerate, the
plots' titles and bars, and the labels-used note."""
from __future__ import annotations

import io
import math

import pandas as pd
import pytest
from scipy import stats as sps

from slam_bench.store import record_row
from slam_bench.report.leaderboard import labels_note, markdown_table
from slam_bench.report.plots import suite_figure
from slam_bench.report.regenerate import regenerate
from slam_bench.report.summary import SUMMARY_COLUMNS, summary_csv, summary_table


def _rows(method, accs, labeled=50, targets="soft", variant="full", **extra):
    return [{"suite": "s", "variant": variant, "dataset": "d", "labeled_size": labeled,
             "split_seed": i, "train_seed": 1000 + i, "method": method, "targets": targets,
             "config_hash": "h", "test_acc": a, **extra} for i, a in enumerate(accs)]


def _frame():
    return pd.DataFrame(_rows("teacher", [0.5, 0.6, 0.7]) + _rows("vanilla", [0.61, 0.64, 0.7])
                        + _rows("slam", [0.62, 0.66, 0.73])
                        + _rows("slam", [0.8, 0.8, 0.8], labeled=100)  # no spread
                        + _rows("vanilla", [0.7, 0.75], labeled=100)  # n = 2
                        + _rows("slam", [0.9], targets="hard"))  # n = 1


def test_summary_columns_types_values_and_intervals():
    t = summary_table("s", _frame())
    assert list(t.columns) == SUMMARY_COLUMNS
    assert list(zip(t.cell, t.method)) == [("d_50", "teacher"), ("d_50", "vanilla"), ("d_50", "slam"),
                                          ("d_100", "vanilla"), ("d_100", "slam"), ("d_50_hard", "slam")]
    back = pd.read_csv(io.BytesIO(summary_csv("s", _frame())))
    assert list(back.columns) == SUMMARY_COLUMNS
    assert back.n.dtype.kind == "i"
    assert all(back[c].dtype.kind == "f" for c in ("mean", "std", "ci_low", "ci_high"))
    r = back.set_index(["cell", "method"])
    slam = r.loc[("d_50", "slam")]
    acc = [62.0, 66.0, 73.0]
    low, high = sps.t.interval(0.95, 2, loc=sum(acc) / 3, scale=sps.sem(acc))
    assert (slam.targets, slam.n) == ("soft", 3)
    assert slam["mean"] == pytest.approx(67.0, abs=1e-4)
    assert slam["std"] == pytest.approx(pd.Series(acc).std(ddof=1), abs=1e-4)
    assert (slam.ci_low, slam.ci_high) == pytest.approx((low, high), abs=1e-4)
    flat = r.loc[("d_100", "slam")]  # n = 3, no spread: no interval
    assert flat["std"] == 0 and math.isnan(flat.ci_low) and math.isnan(flat.ci_high)
    two = r.loc[("d_100", "vanilla")]  # n = 2: a std, no interval
    assert two.n == 2 and not math.isnan(two["std"]) and math.isnan(two.ci_low)
    one = r.loc[("d_50_hard", "slam")]
    assert one.targets == "hard" and math.isnan(one["std"]) and math.isnan(one.ci_low)


def test_summary_bytes_do_not_depend_on_row_order():
    df = _frame()
    assert summary_csv("s", df) == summary_csv("s", df.sample(frac=1, random_state=7))
    text = summary_csv("s", df).decode()
    assert text.splitlines()[0] == ",".join(SUMMARY_COLUMNS)
    assert "s,d_50_hard,slam,hard,1,90.0000,,," in text


def test_regenerate_writes_every_file_and_rewrites_the_same_bytes(tmp_path):
    out = tmp_path / "results"
    for row in _rows("vanilla", [0.61, 0.64, 0.7]) + _rows("slam", [0.62, 0.66, 0.73]):
        record_row(out / "runs" / "s.csv", row)
    paths = regenerate(out)
    names = sorted(p.relative_to(out).as_posix() for p in paths)
    assert names == ["leaderboard/s.csv", "leaderboard/s.paired.csv",
                     "leaderboard/s.summary.csv", "plots/s.png"]
    first = {p: p.read_bytes() for p in paths}
    regenerate(out)
    assert {p: p.read_bytes() for p in paths} == first


def _figure(df):
    import matplotlib.pyplot as plt

    fig = suite_figure("s", df)
    try:
        return [(ax.get_title(), ax.get_ylabel(), len(ax.containers)) for ax in fig.axes]
    finally:
        plt.close(fig)


def test_smoke_plot_says_smoke_and_draws_no_interval_for_two_trials():
    df = pd.DataFrame(_rows("vanilla", [0.5, 0.6], variant="smoke")
                      + _rows("slam", [0.55, 0.62], variant="smoke"))
    (top_title, top_y, top_bars), (_, bottom_y, bottom_bars) = _figure(df)
    assert "smoke" in top_title
    assert top_bars == bottom_bars == 0  # no error bars at all
    assert "95%" not in top_y and "95%" not in bottom_y and "no interval" in top_y


def test_full_plot_draws_intervals_where_n_is_three_and_puts_differences_first():
    axes = _figure(_frame()[lambda d: (d.labeled_size == 50) & (d.targets == "soft")])
    (top_title, top_y, top_bars), (_, bottom_y, bottom_bars) = axes
    assert "smoke" not in top_title and "n = 3" in top_title
    assert top_y.startswith("minus vanilla") and bottom_y.startswith("test accuracy")
    assert top_bars == 1 and bottom_bars == 3  # slam - vanilla; teacher, vanilla, slam
    assert "95% t-interval" in top_y


def test_labels_note_relative_to_the_labeled_size():
    df = pd.DataFrame(_rows("vanilla", [0.6], labels_used=50) + _rows("slam", [0.6], labels_used=550)
                      + _rows("vanilla_av", [0.6], labels_used=550)
                      + _rows("slam", [0.6], labeled=100, labels_used=100, estimator_data="crossfit")
                      + _rows("teacher", [0.6], labels_used=550))
    note = labels_note(df)
    assert note.endswith("`vanilla`: |A|; `vanilla_av`: |A| + 500; `slam`: |A| or |A| + 500.")
    assert labels_note(df.drop(columns="labels_used")) == ""
    assert note in markdown_table("s", df)
