"""Summaries, tidy and numeric: `<out>/leaderboard/<suite>.summary.csv`.

Columns SUMMARY_COLUMNS, one row per (cell, method), cells in cell order and methods in registry
order: the suite, the cell (slam_bench.report.cells), the method, its `targets`, the number of
trials `n`, and the `mean`, sample `std` (ddof=1) and two-sided 95% Student-t interval of the
mean (`ci_low`, `ci_high`) of the test accuracy in percent. `std` is empty for n < 2, the
interval for n < 3 or zero spread (slam_bench.report.stats). The same rows always give the same
bytes: the rows are sorted before any sum, so their order in the runs file does not matter.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable, List, Optional

import pandas as pd

from slam_bench.report.cells import cell_order, method_order, with_cells
from slam_bench.report.derived import write_per_suite
from slam_bench.report.stats import t_half_width

SUMMARY_COLUMNS = ["suite", "cell", "method", "targets", "n", "mean", "std", "ci_low", "ci_high"]


def variant_of(df: pd.DataFrame) -> str:
    """The one variant of a frame's rows (a frame without the column is a full run's)."""
    found = set(df["variant"]) if "variant" in df.columns else {"full"}
    if len(found) > 1:
        raise ValueError(f"rows of the variants {sorted(found)} cannot share a table; select one "
                         f"with results.select_variant")
    return found.pop() if found else "full"


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per (cell, method) of one variant's rows (typed as `results.read_rows` returns them):
    dataset, labeled_size, targets, estimator_data, teacher_topk, family, cell, method, then
    float64 mean and std (ddof=1; NaN for n < 2) of the test accuracy in %, and int n. Sorted
    by cell order, then method order."""
    variant_of(df)
    rows = with_cells(df)
    rows = rows.assign(acc=100.0 * rows["test_acc"].astype(float))
    seeds = [c for c in ("split_seed", "train_seed") if c in rows.columns]
    rows = rows.sort_values(["cell", "method"] + seeds + ["acc"], kind="stable")
    keys = ["dataset", "labeled_size", "targets", "estimator_data", "teacher_topk", "family",
            "cell", "method"]
    s = rows.groupby(keys, sort=True)["acc"].agg(
        mean="mean", std=lambda a: a.std(ddof=1), n="count").reset_index()
    cells = {c: i for i, c in enumerate(cell_order(s))}
    methods = {m: i for i, m in enumerate(method_order(s["method"].unique()))}
    order = sorted(range(len(s)), key=lambda i: (cells[s["cell"].iat[i]], methods[s["method"].iat[i]]))
    return s.iloc[order].reset_index(drop=True)


def summary_table(suite: str, df: pd.DataFrame) -> pd.DataFrame:
    """The tidy summary (SUMMARY_COLUMNS) of one suite's rows of one variant."""
    s = summary(df)
    half = [t_half_width(std, int(n)) for std, n in zip(s["std"], s["n"])]
    return pd.DataFrame({"suite": suite, "cell": s["cell"], "method": s["method"],
                         "targets": s["targets"], "n": s["n"].astype(int), "mean": s["mean"],
                         "std": s["std"], "ci_low": s["mean"] - half, "ci_high": s["mean"] + half},
                        columns=SUMMARY_COLUMNS)


def summary_csv(suite: str, df: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    summary_table(suite, df).to_csv(buf, index=False, lineterminator="\n", float_format="%.4f")
    return buf.getvalue().encode()


def write_summaries(out: Path, suites: Optional[Iterable[str]] = None) -> List[Path]:
    """Rewrite <out>/leaderboard/<suite>.summary.csv for every suite with raw rows."""
    return write_per_suite(out, suites, "leaderboard/{suite}.summary.csv", summary_csv)
