"""Plots drawn from the raw rows, one PNG per suite, one column of panels per (dataset,
targets): on top, test accuracy against labeled-set size, one line per method, error bars the
95% t-interval of the mean over trials; below, each student method's paired difference to
`vanilla` (slam_bench.report.paired) with its 95% interval, and a line at 0."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Iterable, List, Optional

import pandas as pd

from slam_bench.pipeline.methods import METHODS
from slam_bench.report.cells import method_order
from slam_bench.report.derived import write_per_suite
from slam_bench.report.leaderboard import summary
from slam_bench.report.paired import REFERENCE, paired_table, t_half_width


def _half_width(s: pd.DataFrame) -> List[float]:
    """Half-widths of the 95% t-intervals of the means in summary rows (0 where n < 2)."""
    widths = (t_half_width(std, int(n)) for std, n in zip(s["std"], s["n"]))
    return [0.0 if math.isnan(w) else w for w in widths]


def _style(method: str) -> dict:
    """One colour per method in every panel (registry order over the tab10 cycle)."""
    if method == "teacher":
        return {"color": "black", "linestyle": "--"}
    names = [m for m in METHODS if m != "teacher"]
    color = f"C{names.index(method) % 10}" if method in names else "grey"
    return {"color": color, **({"linewidth": 2.2} if method.startswith("slam") else {})}


def plot_suite(suite: str, df: pd.DataFrame) -> bytes:
    """PNG bytes of the suite's accuracy and paired-difference panels."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    s = summary(df)
    paired = paired_table(suite, df)
    panels = sorted({(str(d), str(t)) for d, t in zip(s["dataset"], s["targets"])},
                    key=lambda p: (p[0], p[1] != "soft"))
    fig, axes = plt.subplots(2, len(panels), figsize=(5.5 * len(panels), 7.5), squeeze=False)
    for col, (d, targets) in enumerate(panels):
        sd = s[(s["dataset"] == d) & (s["targets"] == targets)]
        sizes = sorted(int(n) for n in sd["labeled_size"].unique())
        top, bottom = axes[0][col], axes[1][col]
        for m in method_order(sd["method"].unique()):
            r = sd[sd["method"] == m].sort_values("labeled_size")
            top.errorbar(r["labeled_size"], r["mean"], yerr=_half_width(r), marker="o",
                         markersize=3, capsize=3, label=m, **_style(m))
            p = paired[(paired["method"] == m) & paired["cell"].isin(r["cell"])]
            if m in (REFERENCE, "teacher") or p.empty:
                continue
            n_of = dict(zip(r["cell"], r["labeled_size"]))
            x = [n_of[c] for c in p["cell"]]
            err = [(p["delta_mean"] - p["delta_ci_low"]).fillna(0).clip(lower=0),
                   (p["delta_ci_high"] - p["delta_mean"]).fillna(0).clip(lower=0)]
            bottom.errorbar(x, p["delta_mean"], yerr=err, marker="o", markersize=3, capsize=3,
                            label=m, **_style(m))
        bottom.axhline(0.0, color="grey", linewidth=1)
        for ax, ylabel in ((top, "test accuracy (%), 95% CI"),
                           (bottom, f"minus {REFERENCE} (points), paired 95% CI")):
            ax.set_xscale("log")
            ax.set_xticks(sizes, [str(n) for n in sizes])  # plain labels, not 2x10^1
            ax.minorticks_off()
            ax.set_xlabel("labeled examples |A|")
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        top.set_title(f"{suite}: {d} ({targets} labels)")
    fig.tight_layout()
    buf = io.BytesIO()
    # No timestamp/software metadata: the same rows give the same file.
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def write_plots(out: Path, suites: Optional[Iterable[str]] = None) -> List[Path]:
    """Rewrite <out>/plots/<suite>.png for every suite with raw rows."""
    return write_per_suite(out, suites, "plots/{suite}.png", plot_suite)
