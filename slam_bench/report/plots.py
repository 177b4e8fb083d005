"""Plots drawn from the raw rows: test accuracy against labeled-set size, one panel per
dataset, one line per method, error bars = sample std (ddof=1) over trials."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable, List, Optional

import pandas as pd

from slam_bench.fileio import atomic_write, locked
from slam_bench.report.leaderboard import _method_order, summary
from slam_bench.pipeline.results import read_rows, runs_path, select_variant, suites_with_rows


def plot_suite(suite: str, df: pd.DataFrame) -> bytes:
    """PNG bytes of the suite's accuracy-vs-labeled-size figure."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    s = summary(df)
    datasets = sorted(s["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        sd = s[s["dataset"] == d]
        for m in _method_order(sd["method"].unique()):
            r = sd[sd["method"] == m].sort_values("labeled_size")
            style = {"color": "black", "linestyle": "--"} if m == "teacher" else {}
            if m.startswith("slam"):
                style = {"linewidth": 2.2}
            ax.errorbar(r["labeled_size"], r["mean"], yerr=r["std"].fillna(0), marker="o",
                        markersize=3, capsize=3, label=m, **style)
        ax.set_xscale("log")
        sizes = sorted(int(n) for n in sd["labeled_size"].unique())
        ax.set_xticks(sizes, [str(n) for n in sizes])  # plain labels, not 2x10^1
        ax.minorticks_off()
        ax.set_xlabel("labeled examples |A|")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{suite}: {d}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    # No timestamp/software metadata: the same rows give the same file.
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def write_plots(out: Path, suites: Optional[Iterable[str]] = None) -> List[Path]:
    paths = []
    for suite in suites_with_rows(out, suites):
        with locked(runs_path(out, suite)):  # as write_leaderboards: never older rows last
            df = read_rows(runs_path(out, suite))
            if df.empty:
                continue
            path = Path(out) / "plots" / f"{suite}.png"
            atomic_write(path, plot_suite(suite, select_variant(df)))
        paths.append(path)
    return paths
