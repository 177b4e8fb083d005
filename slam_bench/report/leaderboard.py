"""Leaderboards, generated from the raw rows only (docs/statistics.md).

Wide CSV `<out>/leaderboard/<suite>.csv`: one row per method (Teacher first, then registry
order), one column per cell (`<dataset>_<labeled size>`, with `_hard` for the runs on the
teacher's hard labels and `_crossfit` for cross-fitted estimators; slam_bench.report.cells),
cells `mean +- std` of test accuracy in percent with the sample std (ddof=1); the last row,
`trials`, gives the number of trials per column. The same raw rows always give the same
bytes. README gets the same tables in Markdown, each followed by a note on the labels each
method used (rows' `labels_used`, when recorded) and its paired tables
(slam_bench.report.paired), between `<!-- leaderboard:start -->` and `<!-- leaderboard:end -->`.

The rows are read through the store's strict reader with the registry's method names, so a
file with an accuracy outside [0, 1], an unknown method, a repeated row id or text in a
numeric column is a `ResultsError` naming the file and line, never a table of nonsense. A
table shows one variant: the full rows when there are any, else the smoke rows (and says so).
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Iterable, List, Optional

import pandas as pd

from slam_bench.fileio import atomic_write, locked
from slam_bench.pipeline.methods import METHODS
from slam_bench.store import read_all_runs
from slam_bench.report.cells import cell_order, method_order
from slam_bench.report.derived import write_per_suite
from slam_bench.report.paired import paired_markdown
from slam_bench.report.summary import summary, variant_of

START, END = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"


def _cell(mean: float, std: float) -> str:
    return f"{mean:.2f} +- {std:.2f}" if not math.isnan(std) else f"{mean:.2f} +- n/a"


def wide_table(df: pd.DataFrame) -> pd.DataFrame:
    """Methods x cells table of `mean +- std` strings plus a trials row."""
    s = summary(df)
    cols = cell_order(s)
    methods = method_order(s["method"].unique())
    index = {(r.cell, r.method): r for r in s.itertuples()}
    rows = []
    for m in methods:
        row = {"method": m}
        for c in cols:
            r = index.get((c, m))
            row[c] = _cell(r.mean, r.std) if r is not None else ""
        rows.append(row)
    trials = {"method": "trials"}
    for c in cols:
        counts = sorted(int(n) for n in s.loc[s["cell"] == c, "n"].unique())
        trials[c] = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    rows.append(trials)
    return pd.DataFrame(rows, columns=["method"] + cols)


def leaderboard_csv(df: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    wide_table(df).to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode()


def markdown_table(suite: str, df: pd.DataFrame) -> str:
    """The suite's leaderboard as Markdown; the best student mean per column in bold."""
    s = summary(df)
    table = wide_table(df)
    best = s[s["method"] != "teacher"].groupby("cell")["mean"].max().to_dict()
    means = {(r.cell, r.method): r.mean for r in s.itertuples()}
    header = ["method"] + [f"`{c}`" for c in table.columns[1:]]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    for row in table.to_dict("records"):
        m = row["method"]
        cells = [f"`{m}`" if m != "trials" else "trials (n)"]  # the registry name, as everywhere
        for c in table.columns[1:]:
            v = row[c]
            mean = means.get((c, m))
            if m != "teacher" and mean is not None and c in best and mean == best[c]:
                v = f"**{v}**"
            cells.append(v)
        lines.append("| " + " | ".join(cells) + " |")
    teacher = s[s["method"] == "teacher"]
    span = (f"teacher accuracy {teacher['mean'].min():.1f}-{teacher['mean'].max():.1f}%"
            if len(teacher) else "")
    smoke = " (smoke variant: tiny sizes, a wiring check, not a result)" if variant_of(df) == "smoke" else ""
    head = (f"**{suite}**{smoke} — student test accuracy (%), mean +- sample std (ddof=1) over the "
            f"trials in the last row; last-epoch models; {span}; highest student mean in bold (a "
            f"ranking, not a test: the paired tables below say which differences are resolved).")
    note = labels_note(df)
    return head + "\n\n" + "\n".join(lines) + "\n" + (f"\n{note}\n" if note else "")


def _extra_text(extra: List[int]) -> str:
    """"|A|", "|A| + 500", "|A| or |A| + 500" (cross-fitted and V-fitted cells), or a range."""
    values = sorted(set(extra))
    text = [("|A|" if v == 0 else f"|A| + {v}") for v in values]
    return " or ".join(text) if len(text) <= 3 else f"{text[0]} to {text[-1]}"


def labels_note(df: pd.DataFrame) -> str:
    """One sentence on the true labels each student method saw per trial (rows' `labels_used`),
    written relative to |A| (the cell's labeled size) so that it fits every column; empty when
    the rows do not record it. E.g. "Labels used per trial: `vanilla`: |A|; `slam`,
    `vanilla_av`: |A| + 500." """
    if "labels_used" not in df.columns:
        return ""
    used = pd.to_numeric(df["labels_used"], errors="coerce")
    rows = df.assign(extra=used - df["labeled_size"].astype(float))
    rows = rows[rows["extra"].notna() & (rows["method"] != "teacher")]
    if rows.empty:
        return ""
    groups: dict = {}
    for m in method_order(rows["method"].unique()):
        text = _extra_text([int(x) for x in rows.loc[rows["method"] == m, "extra"]])
        groups.setdefault(text, []).append(f"`{m}`")
    return ("Labels used per trial (true labels a method saw: |A|, plus |V| where it fits on V's "
            "labels or trains on them): "
            + "; ".join(f"{', '.join(ms)}: {text}" for text, ms in groups.items()) + ".")


def write_leaderboards(out: Path, suites: Optional[Iterable[str]] = None) -> List[Path]:
    """Rewrite <out>/leaderboard/<suite>.csv for every suite with raw rows; returns the paths."""
    return write_per_suite(out, suites, "leaderboard/{suite}.csv",
                           lambda suite, df: leaderboard_csv(df))


def readme_section(out: Path) -> str:
    """Every suite's absolute table and its paired table with their generated reading,
    registered suites first in registry order, then any others."""
    from slam_bench.pipeline.suites import SUITES

    order = {name: i for i, name in enumerate(SUITES)}
    runs = sorted(read_all_runs(out, known_methods=METHODS),
                  key=lambda r: (order.get(r[0], len(order)), r[0]))
    parts = ["\n".join(p for p in (markdown_table(suite, df), paired_markdown(suite, df)) if p)
             for suite, df in runs if not df.empty]
    return "\n".join(parts) if parts else "_No results yet: run `slam-bench run SUITE`._\n"


def update_readme(readme: Path, out: Path) -> bool:
    """Replace the text between the leaderboard markers of `readme`; False if no markers."""
    readme = Path(readme)
    with locked(readme):
        text = readme.read_text()
        if START not in text or END not in text or text.index(START) > text.index(END):
            return False
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        new = f"{head}{START}\n{readme_section(out)}{END}{tail}"
        if new != text:
            atomic_write(readme, new)
        return True
