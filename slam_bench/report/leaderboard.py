"""Leaderboards, generated from the raw rows only (spec/suites.md).

Wide CSV `<out>/leaderboard/<suite>.csv`: one row per method (Teacher first, then registry
order), one column per cell (`<dataset>_<labeled size>`, with `_hard` for the runs on the
teacher's hard labels; slam_bench.report.cells), cells `mean +- std` of test accuracy in
percent with the sample std (ddof=1); the last row, `trials`, gives the number of trials per
column. The same raw rows always give the same bytes. README gets the same tables in Markdown,
each followed by its paired table (slam_bench.report.paired), between
`<!-- leaderboard:start -->` and `<!-- leaderboard:end -->`.

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
from slam_bench.pipeline.results import read_all_runs
from slam_bench.report.cells import cell_order, method_order, with_cells
from slam_bench.report.derived import write_per_suite
from slam_bench.report.paired import paired_markdown

START, END = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"


def _variant(df: pd.DataFrame) -> str:
    """The one variant of a frame's rows (a frame without the column is a full run's)."""
    found = set(df["variant"]) if "variant" in df.columns else {"full"}
    if len(found) > 1:
        raise ValueError(f"rows of the variants {sorted(found)} cannot share a table; select one "
                         f"with results.select_variant")
    return found.pop() if found else "full"


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Long summary: dataset, labeled_size, targets, cell, method, mean, std (ddof=1), n;
    accuracies in %. `df` holds rows of one variant (typed as `results.read_rows` returns
    them)."""
    _variant(df)
    g = with_cells(df).assign(acc=100.0 * df["test_acc"].astype(float)).groupby(
        ["dataset", "labeled_size", "targets", "cell", "method"], sort=True)["acc"]
    return g.agg(mean="mean", std=lambda s: s.std(ddof=1), n="count").reset_index()


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
    smoke = " (smoke variant: tiny sizes, a wiring check, not a result)" if _variant(df) == "smoke" else ""
    head = (f"**{suite}**{smoke} — student test accuracy (%), mean +- sample std (ddof=1) over the "
            f"trials in the last row; last-epoch models; {span}; best student in bold.")
    return head + "\n\n" + "\n".join(lines) + "\n"


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
