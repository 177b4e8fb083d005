"""Plots drawn from the raw rows, one PNG per suite, one column of panels per cell family
(dataset, targets, estimator data; slam_bench.report.cells).

The primary panel (top) is each student method's paired difference to `vanilla` in points
against labeled-set size, with its 95% t-interval: methods within a point of each other on a
0-100 scale are indistinguishable, their differences are not. The secondary panel (below) is the
absolute test accuracy, teacher included. A method that trains on more labels than A (the
label-budget reference `vanilla_av`, A + V) is drawn in the accuracy panel only: its difference
to vanilla (tens of points on small A) would set the top panel's scale and flatten every other
method's. Intervals follow the report's rule (n >= 3, non-zero
spread; slam_bench.report.stats): with fewer trials a point is drawn without a bar and the axis
label says so. Smoke runs say "smoke" in every title. The same rows give the same bytes.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Iterable, List, Optional

import pandas as pd

from slam_bench.pipeline.methods import METHODS
from slam_bench.report.cells import family_order, method_order
from slam_bench.report.derived import write_per_suite
from slam_bench.report.paired import REFERENCE, TEACHER, paired_table
from slam_bench.report.stats import CONFIDENCE, MIN_TRIALS, t_half_width
from slam_bench.report.summary import summary, variant_of

# Methods drawn side by side at one size are spread over this fraction of a decade of |A|, so
# their bars do not hide each other.
DODGE = 0.06


def _style(method: str) -> dict:
    """One colour per method in every panel (registry order over the tab10 cycle)."""
    if method == TEACHER:
        return {"color": "black", "linestyle": "--"}
    names = [m for m in METHODS if m != TEACHER]
    color = f"C{names.index(method) % 10}" if method in names else "grey"
    return {"color": color, **({"linewidth": 2.2} if method.startswith("slam") else {})}


def _draw(ax, x: List[float], mean: List[float], low: List[float], high: List[float],
          method: str) -> bool:
    """A line of means, and bars only where the interval exists; True if a bar was drawn."""
    ax.plot(x, mean, marker="o", markersize=3, label=method, **_style(method))
    bars = [i for i in range(len(x)) if not math.isnan(low[i])]
    if bars:
        ax.errorbar([x[i] for i in bars], [mean[i] for i in bars],
                    yerr=[[mean[i] - low[i] for i in bars], [high[i] - mean[i] for i in bars]],
                    fmt="none", capsize=3, color=_style(method)["color"])
    return bool(bars)


def _bar_note(any_bar: bool) -> str:
    return (f"bars: {CONFIDENCE:.0%} t-interval (n >= {MIN_TRIALS})" if any_bar
            else f"no interval (n < {MIN_TRIALS} or no spread)")


def _title(suite: str, smoke: bool, family: pd.DataFrame) -> str:
    r = family.iloc[0]
    est = "" if r["estimator_data"] == "val" else f", estimators on {r['estimator_data']}"
    n = sorted({int(v) for v in family["n"]})
    trials = f"n = {n[0]}" if len(n) == 1 else f"n = {n[0]}-{n[-1]}"
    if smoke:
        return (f"{suite} (smoke): {r['dataset']} ({r['targets']} labels{est})\n"
                f"smoke run, {trials}: a wiring check, not a result")
    return f"{suite}: {r['dataset']} ({r['targets']} labels{est})\n{trials} trials"


def suite_figure(suite: str, df: pd.DataFrame):
    """The matplotlib Figure of the suite's paired-difference (top row) and accuracy (bottom row)
    panels, one column per cell family; the caller closes it."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    s = summary(df)
    smoke = variant_of(df) == "smoke"
    paired = paired_table(suite, df)
    paired = paired[(paired["reference"] == REFERENCE) & (paired["method"] != TEACHER)]
    size_of = dict(zip(s["cell"], s["labeled_size"]))
    families = family_order(s)
    fig, axes = plt.subplots(2, len(families), figsize=(5.5 * len(families), 8), squeeze=False)
    for col, fam in enumerate(families):
        sf = s[s["family"] == fam]
        sizes = sorted(int(n) for n in sf["labeled_size"].unique())
        top, bottom = axes[0][col], axes[1][col]
        methods = method_order(sf["method"].unique())
        # Only methods that train on A's labels, as vanilla does, in the difference panel.
        students = [m for m in methods if m not in (TEACHER, REFERENCE)
                    and getattr(METHODS.get(m), "labeled_set", "A") == "A"]
        more_labels = [m for m in methods if m not in students + [TEACHER, REFERENCE]]
        top_bar = bottom_bar = False
        for i, m in enumerate(methods):
            shift = 10 ** (DODGE * (i / max(1, len(methods) - 1) - 0.5))
            r = sf[sf["method"] == m].sort_values("labeled_size")
            half = [t_half_width(std, int(n)) for std, n in zip(r["std"], r["n"])]
            mean = list(r["mean"])
            bottom_bar |= _draw(bottom, [x * shift for x in r["labeled_size"]], mean,
                                [a - h for a, h in zip(mean, half)],
                                [a + h for a, h in zip(mean, half)], m)
            if m not in students:
                continue
            p = paired[(paired["method"] == m) & paired["cell"].isin(r["cell"])]
            p = p.assign(size=[size_of[c] for c in p["cell"]]).sort_values("size")
            if p.empty:
                continue
            top_bar |= _draw(top, [x * shift for x in p["size"]], list(p["delta_mean"]),
                             list(p["delta_ci_low"]), list(p["delta_ci_high"]), m)
        top.axhline(0.0, color="grey", linewidth=1)
        if more_labels:
            top.text(0.01, 0.01, f"{', '.join(more_labels)} (trains on A + V): accuracy panel only",
                     fontsize=7, transform=top.transAxes)
        if paired[paired["cell"].isin(sf["cell"])].empty:
            top.text(0.5, 0.5, f"no `{REFERENCE}` rows to pair with", ha="center",
                     transform=top.transAxes)
        for ax, ylabel in ((top, f"minus {REFERENCE} (points), paired mean\n{_bar_note(top_bar)}"),
                           (bottom, f"test accuracy (%), mean\n{_bar_note(bottom_bar)}")):
            ax.set_xscale("log")
            # A margin of one dodge each side: with a single |A| autoscaling would stretch the
            # dodge over the whole axis.
            ax.set_xlim(sizes[0] / 10 ** DODGE, sizes[-1] * 10 ** DODGE)
            ax.set_xticks(sizes, [str(n) for n in sizes])  # plain labels, not 2x10^1
            ax.minorticks_off()
            ax.set_xlabel("labeled examples |A|")
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        top.set_title(_title(suite, smoke, sf))
    fig.tight_layout()
    return fig


def plot_suite(suite: str, df: pd.DataFrame) -> bytes:
    """PNG bytes of `suite_figure(suite, df)`."""
    import matplotlib.pyplot as plt

    fig = suite_figure(suite, df)
    buf = io.BytesIO()
    # No timestamp/software metadata: the same rows give the same file.
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def write_plots(out: Path, suites: Optional[Iterable[str]] = None) -> List[Path]:
    """Rewrite <out>/plots/<suite>.png for every suite with raw rows."""
    return write_per_suite(out, suites, "plots/{suite}.png", plot_suite)
