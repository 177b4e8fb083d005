"""Paired leaderboards: each method against `vanilla`, and each SLaM variant against every other
student method, on the same trials, with Holm's correction over the whole file
(docs/statistics.md).

Long CSV `<out>/leaderboard/<suite>.paired.csv`, columns PAIRED_COLUMNS, one row per (cell,
method, reference) of `comparisons`: `delta` is the method's test accuracy minus the
reference's in points, paired on (split_seed, train_seed) within the cell (same split, same
teacher, same student initialisation); `n` pairs; `delta_mean` and its two-sided 95% Student-t
interval (`delta_ci_low`, `delta_ci_high`; empty unless n >= 3 and the differences spread);
`wins`, the pairs where the method beat the reference (a tie is not a win); `p_value`, the
two-sided paired t-test (empty where it is undefined: n < 2 or zero spread); `p_adjusted`,
Holm's adjustment over every row of the file with a p-value (rows without one are not in the
family). Split-to-split spread is larger than most effects, and pairing removes it. The same
rows always give the same bytes.

A difference is *resolved* when n >= 3 and p_adjusted < ALPHA; only resolved differences are
bold and only they are claimed in the generated reading.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import pandas as pd

from slam_bench.report.cells import cell_order, is_slam, method_order, with_cells
from slam_bench.report.derived import write_per_suite
from slam_bench.report.stats import (ALPHA, CONFIDENCE, MIN_TRIALS, holm, paired_p_value,
                                     t_half_width, t_interval)
from slam_bench.report.summary import summary

__all__ = ["PAIRED_COLUMNS", "REFERENCE", "CONFIDENCE", "PAIR_KEY", "comparisons", "paired_table",
           "paired_csv", "write_paired", "paired_markdown", "resolved", "t_interval",
           "t_half_width"]

PAIRED_COLUMNS = ["suite", "cell", "method", "reference", "n", "delta_mean", "delta_ci_low",
                  "delta_ci_high", "wins", "p_value", "p_adjusted"]
REFERENCE = "vanilla"
TEACHER = "teacher"
PAIR_KEY = ("split_seed", "train_seed")


def comparisons(methods: Sequence[str]) -> List[Tuple[str, str]]:
    """(method, reference) pairs tested in a cell whose rows hold `methods` (in method order).

    Every method (the teacher too) against `vanilla` when vanilla ran; then each SLaM variant
    against every other student method (vanilla_av and the other SLaM variants included; the
    teacher is not a student). Two SLaM variants are compared once, the earlier in `methods` as
    `method`: the mirrored row would repeat the same test and count it twice in Holm's family.
    """
    methods = list(methods)
    out = [(m, REFERENCE) for m in methods if m != REFERENCE] if REFERENCE in methods else []
    slams = [m for m in methods if is_slam(m)]
    for i, s in enumerate(slams):
        for ref in methods:
            if ref in (TEACHER, REFERENCE, s) or (is_slam(ref) and slams.index(ref) < i):
                continue
            out.append((s, ref))
    return out


def _by_pair(rows: pd.DataFrame) -> Dict[Tuple[int, int], float]:
    return {tuple(int(v) for v in k): a
            for k, a in zip(rows[list(PAIR_KEY)].itertuples(index=False), rows["acc"])}


def paired_table(suite: str, df: pd.DataFrame) -> pd.DataFrame:
    """The long paired table of one suite's raw rows (columns PAIRED_COLUMNS, accuracy points;
    float64 statistics, NaN where undefined; int n and wins).

    A method's trials without a reference trial of the same (split_seed, train_seed) are not
    paired; a comparison with no pairs has no row.
    """
    rows = with_cells(df)
    acc = rows.assign(acc=100.0 * rows["test_acc"].astype(float))
    out = []
    for cell in cell_order(rows):
        in_cell = acc[acc["cell"] == cell]
        by_method = {m: _by_pair(g) for m, g in in_cell.groupby("method", sort=False)}
        for method, ref in comparisons(method_order(by_method)):
            mine, theirs = by_method[method], by_method[ref]
            deltas = [mine[k] - theirs[k] for k in sorted(mine) if k in theirs]
            if not deltas:
                continue
            mean, low, high = t_interval(deltas)
            out.append({"suite": suite, "cell": cell, "method": method, "reference": ref,
                        "n": len(deltas), "delta_mean": mean, "delta_ci_low": low,
                        "delta_ci_high": high, "wins": int(sum(d > 0 for d in deltas)),
                        "p_value": paired_p_value(deltas)})
    table = pd.DataFrame(out, columns=PAIRED_COLUMNS)
    table["p_adjusted"] = holm(table["p_value"].to_numpy(dtype=float))
    return table


def _p_text(p: float) -> str:
    # 4 significant digits: a fixed 4 decimals would print small p-values as 0.0000.
    return "" if math.isnan(p) else f"{p:.4g}"


def paired_csv(suite: str, df: pd.DataFrame) -> bytes:
    t = paired_table(suite, df)
    for col in ("p_value", "p_adjusted"):
        t[col] = [_p_text(p) for p in t[col]]
    buf = io.StringIO()
    t.to_csv(buf, index=False, lineterminator="\n", float_format="%.4f")
    return buf.getvalue().encode()


def write_paired(out: Path, suites: Optional[Iterable[str]] = None) -> List[Path]:
    """Rewrite <out>/leaderboard/<suite>.paired.csv for every suite with raw rows."""
    return write_per_suite(out, suites, "leaderboard/{suite}.paired.csv", paired_csv)


def resolved(r) -> int:
    """+1 / -1 when a paired row's difference is resolved above / below 0 (n >= 3 and
    p_adjusted < ALPHA), else 0."""
    if r.n < MIN_TRIALS or math.isnan(r.p_adjusted) or r.p_adjusted >= ALPHA:
        return 0
    return 1 if r.delta_mean > 0 else -1


def _fmt(r) -> str:
    if math.isnan(r.delta_ci_low):
        return f"{r.delta_mean:+.2f} {r.wins}/{r.n} (no interval)"
    return f"{r.delta_mean:+.2f} [{r.delta_ci_low:+.2f}, {r.delta_ci_high:+.2f}] {r.wins}/{r.n}"


def _shown(r) -> str:
    return f"**{_fmt(r)}**" if resolved(r) else _fmt(r)


def _grid(rows: Dict[Tuple[str, str], object], labels: List[Tuple[str, str]],
          cells: List[str]) -> List[str]:
    """Markdown lines: one row per (label, key), one column per cell."""
    lines = ["| " + " | ".join(["method"] + [f"`{c}`" for c in cells]) + " |",
             "|" + "---|" * (len(cells) + 1)]
    for label, key in labels:
        cols = [_shown(rows[(c, key)]) if (c, key) in rows else "" for c in cells]
        lines.append("| " + " | ".join([label] + cols) + " |")
    return lines


def _hit(r) -> str:
    return f"`{r.cell}` ({r.delta_mean:+.2f}, p_adj {r.p_adjusted:.2g})"


def _list(groups: Dict[str, List[str]]) -> str:
    return "; ".join(f"`{k}` at {', '.join(v)}" for k, v in groups.items() if v) or "none"


def _vanilla_reading(students: pd.DataFrame) -> str:
    sides = {1: {}, -1: {}}
    for r in students.itertuples():
        if resolved(r):
            sides[resolved(r)].setdefault(r.method, []).append(_hit(r))
    open_ = sum(resolved(r) == 0 for r in students.itertuples())
    return (f"Against `{REFERENCE}`, resolved ahead: {_list(sides[1])}. Resolved behind: "
            f"{_list(sides[-1])}. Not resolved: {open_} of {len(students)} method-cell pairs.")


def _slam_reading(slam_rows: pd.DataFrame) -> List[str]:
    out = []
    for method in method_order(slam_rows["method"].unique()):
        mine = slam_rows[slam_rows["method"] == method]
        sides = {1: {}, -1: {}}
        for r in mine.itertuples():
            if resolved(r):
                sides[resolved(r)].setdefault(r.reference, []).append(_hit(r))
        ahead = {k: sides[1][k] for k in method_order(sides[1])}
        behind = {k: sides[-1][k] for k in method_order(sides[-1])}
        open_ = sum(resolved(r) == 0 for r in mine.itertuples())
        out.append(f"`{method}` resolved ahead of: {_list(ahead)}. Resolved behind: "
                   f"{_list(behind)}. Not resolved: {open_} of {len(mine)} comparisons.")
    return out


def _leaders(suite_summary: pd.DataFrame, t: pd.DataFrame, cells: List[str]) -> str:
    """Per cell: the best student that is not a SLaM variant and where each SLaM variant
    stands against it."""
    index = {(r.cell, r.method, r.reference): r for r in t.itertuples()}
    parts = []
    for cell in cells:
        s = suite_summary[(suite_summary["cell"] == cell) & (suite_summary["method"] != TEACHER)]
        others = s[[not is_slam(m) for m in s["method"]]]
        if others.empty:
            continue
        best = others.sort_values("mean", ascending=False, kind="stable").iloc[0]
        against = []
        for m in method_order(m for m in s["method"] if is_slam(m)):
            r = index.get((cell, m, best["method"]))
            if r is None:
                continue
            word = {1: "ahead, resolved", -1: "behind, resolved", 0: "not resolved"}[resolved(r)]
            against.append(f"`{m}` {r.delta_mean:+.2f} ({word})")
        parts.append(f"`{cell}`: `{best['method']}` {best['mean']:.2f}%"
                     + (f", {', '.join(against)}" if against else ""))
    return ("Best other student per cell (highest mean that is not a SLaM variant) and SLaM "
            f"against it: {'; '.join(parts)}.") if parts else ""


def paired_markdown(suite: str, df: pd.DataFrame) -> str:
    """The paired comparisons as Markdown: one table against `vanilla` (methods x cells), one of
    each SLaM variant against every other student method, resolved differences in bold, and a
    generated reading of what Holm's correction resolves (and what it does not)."""
    t = paired_table(suite, df)
    if t.empty:
        return ""
    cells = list(dict.fromkeys(t["cell"]))
    rows = {(r.cell, (r.method, r.reference)): r for r in t.itertuples()}
    tested = int(t["p_value"].notna().sum())
    common = (f"test accuracy difference in points, mean [{CONFIDENCE:.0%} t-interval] and "
              f"wins/n over trials paired on (split seed, train seed); no interval for n < "
              f"{MIN_TRIALS} or zero spread; bold: resolved after Holm's correction over all "
              f"{tested} tests of this suite (p_adjusted < {ALPHA}, n >= {MIN_TRIALS}).")
    parts = []
    van = t[t["reference"] == REFERENCE]
    if len(van):
        labels = [(f"`{m}`", (m, REFERENCE)) for m in method_order(van["method"].unique())]
        parts += [f"**{suite}**, paired against `{REFERENCE}` — {common}", "",
                  *_grid(rows, labels, cells), "",
                  _vanilla_reading(van[van["method"] != TEACHER]), ""]
    slam_rows = t[[is_slam(m) for m in t["method"]]]
    if len(slam_rows):
        pairs = sorted(set(zip(slam_rows["method"], slam_rows["reference"])),
                       key=lambda p: (method_order(slam_rows["method"]).index(p[0]),
                                      method_order(slam_rows["reference"]).index(p[1])))
        labels = [(f"`{m}` − `{ref}`", (m, ref)) for m, ref in pairs]
        parts += [f"**{suite}**, each SLaM variant against every other student method — "
                  f"{common}", "", *_grid(rows, labels, cells), "",
                  " ".join(_slam_reading(slam_rows)), ""]
        leaders = _leaders(summary(df), t, cells)
        if leaders:
            parts += [leaders, ""]
    return "\n".join(parts)
