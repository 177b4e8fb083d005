"""Paired leaderboards: each method against `vanilla` on the same trials (spec/suites.md).

Long CSV `<out>/leaderboard/<suite>.paired.csv`, columns PAIRED_COLUMNS, one row per (cell,
method other than vanilla): `delta` is the method's test accuracy minus vanilla's in points,
paired on (split_seed, train_seed) within the cell (same split, same teacher, same student
initialisation); `n` pairs; `delta_mean` and its two-sided 95% Student-t interval
(`delta_ci_low`, `delta_ci_high`; empty when n < 2); `wins`, the pairs where the method beat
vanilla (a tie is not a win). Split-to-split spread is larger than most effects, and pairing
removes it. The same rows always give the same bytes.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

import numpy as np
import pandas as pd
from scipy import stats

from slam_bench.report.cells import cell_order, method_order, with_cells
from slam_bench.report.derived import write_per_suite

PAIRED_COLUMNS = ["suite", "cell", "method", "n", "delta_mean", "delta_ci_low", "delta_ci_high",
                  "wins"]
REFERENCE = "vanilla"
CONFIDENCE = 0.95
PAIR_KEY = ("split_seed", "train_seed")


def t_half_width(std: float, n: int, confidence: float = CONFIDENCE) -> float:
    """Half-width of the two-sided Student-t interval for the mean of n values whose sample
    std (ddof=1) is `std`; NaN when n < 2."""
    if n < 2 or math.isnan(std):
        return math.nan
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * float(std) / math.sqrt(n)


def t_interval(deltas, confidence: float = CONFIDENCE) -> Tuple[float, float, float]:
    """(mean, low, high) of the two-sided Student-t interval for the mean of `deltas` (1-D);
    low = high = NaN when there are fewer than 2 values."""
    d = np.asarray(deltas, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"deltas must be a non-empty 1-D sequence, got shape {d.shape}")
    mean = float(d.mean())
    half = t_half_width(float(d.std(ddof=1)) if d.size > 1 else math.nan, d.size, confidence)
    return mean, mean - half, mean + half


def paired_table(suite: str, df: pd.DataFrame) -> pd.DataFrame:
    """The long paired table of one suite's raw rows (columns PAIRED_COLUMNS, accuracy points).

    Cells without vanilla rows are left out; a method's trials without a vanilla trial of the
    same (split_seed, train_seed) are not paired.
    """
    rows = with_cells(df)
    acc = rows.assign(acc=100.0 * rows["test_acc"].astype(float))
    out = []
    for cell in cell_order(rows):
        in_cell = acc[acc["cell"] == cell]
        ref = in_cell[in_cell["method"] == REFERENCE]
        if ref.empty:
            continue
        ref_acc = {tuple(int(v) for v in k): a
                   for k, a in zip(ref[list(PAIR_KEY)].itertuples(index=False), ref["acc"])}
        for method in method_order(in_cell["method"].unique()):
            if method == REFERENCE:
                continue
            mine = in_cell[in_cell["method"] == method]
            deltas = [a - ref_acc[key] for key, a in
                      zip((tuple(int(v) for v in k) for k in mine[list(PAIR_KEY)].itertuples(index=False)),
                          mine["acc"]) if key in ref_acc]
            if not deltas:
                continue
            mean, low, high = t_interval(deltas)
            out.append({"suite": suite, "cell": cell, "method": method, "n": len(deltas),
                        "delta_mean": mean, "delta_ci_low": low, "delta_ci_high": high,
                        "wins": int(sum(d > 0 for d in deltas))})
    return pd.DataFrame(out, columns=PAIRED_COLUMNS)


def paired_csv(suite: str, df: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    paired_table(suite, df).to_csv(buf, index=False, lineterminator="\n", float_format="%.4f")
    return buf.getvalue().encode()


def write_paired(out: Path, suites: Optional[Iterable[str]] = None) -> List[Path]:
    """Rewrite <out>/leaderboard/<suite>.paired.csv for every suite with raw rows."""
    return write_per_suite(out, suites, "leaderboard/{suite}.paired.csv", paired_csv)


def _resolved(r) -> int:
    """+1 if the interval lies above 0, -1 if below, 0 if it contains 0 (or is undefined)."""
    if r.delta_ci_low > 0:
        return 1
    if r.delta_ci_high < 0:
        return -1
    return 0


def _fmt(r) -> str:
    if math.isnan(r.delta_ci_low):
        return f"{r.delta_mean:+.2f} (n={r.n})"
    return f"{r.delta_mean:+.2f} [{r.delta_ci_low:+.2f}, {r.delta_ci_high:+.2f}] {r.wins}/{r.n}"


def paired_markdown(suite: str, df: pd.DataFrame) -> str:
    """The paired table as Markdown (methods x cells; intervals that exclude 0 in bold) and a
    generated reading: which differences the intervals resolve and which they do not."""
    t = paired_table(suite, df)
    if t.empty:
        return ""
    cells = list(dict.fromkeys(t["cell"]))
    header = ["method"] + [f"`{c}`" for c in cells]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    index = {(r.cell, r.method): r for r in t.itertuples()}
    for method in method_order(t["method"].unique()):
        row = [f"`{method}`"]
        for c in cells:
            r = index.get((c, method))
            row.append("" if r is None else (f"**{_fmt(r)}**" if _resolved(r) else _fmt(r)))
        lines.append("| " + " | ".join(row) + " |")
    head = (f"**{suite}**, paired against `vanilla` — test accuracy difference in points, mean "
            f"[{CONFIDENCE:.0%} t-interval] and wins/n over trials paired on (split seed, train "
            f"seed); bold: the interval excludes 0.")
    students = t[t["method"] != "teacher"]
    sides = {1: [], -1: []}
    for method in method_order(students["method"].unique()):
        for side, found in sides.items():
            hits = [f"`{r.cell}` ({r.delta_mean:+.2f})"
                    for r in students[students["method"] == method].itertuples() if _resolved(r) == side]
            if hits:
                found.append(f"`{method}` at {', '.join(hits)}")
    unresolved = sum(_resolved(r) == 0 for r in students.itertuples())
    reading = (f"Resolved ahead of `vanilla`: {'; '.join(sides[1]) or 'none'}. "
               f"Resolved behind: {'; '.join(sides[-1]) or 'none'}. "
               f"Not resolved (interval contains 0): {unresolved} of {len(students)} "
               f"method-cell pairs.")
    return head + "\n\n" + "\n".join(lines) + "\n\n" + reading + "\n"
