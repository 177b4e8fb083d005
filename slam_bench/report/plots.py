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

A suite whose rows ran on top-K teacher caches also gets `<suite>.topk.png` (`plot_topk`):
accuracy, the student step's peak memory and the cache's bytes against K (docs/vocab.md).
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


def _png(fig) -> bytes:
    """PNG bytes of a figure, which is then closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    # No timestamp/software metadata: the same rows give the same file.
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def plot_suite(suite: str, df: pd.DataFrame) -> bytes:
    """PNG bytes of `suite_figure(suite, df)`."""
    return _png(suite_figure(suite, df))


def write_plots(out: Path, suites: Optional[Iterable[str]] = None) -> List[Path]:
    """Rewrite <out>/plots/<suite>.png for every suite with raw rows."""
    return write_per_suite(out, suites, "plots/{suite}.png", plot_suite)


# ------------------------------------------------------------------ top-K teacher caches

def _has_topk(df: pd.DataFrame) -> bool:
    return "teacher_topk" in df.columns and bool((df["teacher_topk"].fillna("dense")
                                                  != "dense").any())


def topk_figure(suite: str, df: pd.DataFrame):
    """The matplotlib Figure of a suite's rows against their teacher cache (docs/vocab.md):
    one column per (labeled size, targets, estimator data); top, each method's test accuracy
    (mean, t-interval bars as in the suite plot) against K; bottom, the student step's peak
    extra memory (`student_peak_bytes`, mean over the cell's student rows) and the teacher
    cache's bytes (`teacher_cache_bytes`), in MiB on a log scale. The dense cache sits right of
    the largest K, labeled "dense". The caller closes it."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from slam_bench.report.cells import topk_rank, with_cells

    rows = with_cells(df)
    s = summary(df)
    smoke = variant_of(df) == "smoke"
    ks = sorted(set(rows["teacher_topk"]), key=topk_rank)
    numeric = [int(k) for k in ks if k != "dense"]
    dense_x = max(numeric) * 4 if numeric else 1
    xpos = {k: (dense_x if k == "dense" else int(k)) for k in ks}
    groups = sorted({(int(n), t, e) for n, t, e in
                     zip(rows["labeled_size"], rows["targets"], rows["estimator_data"])})
    fig, axes = plt.subplots(2, len(groups), figsize=(5.5 * len(groups), 8), squeeze=False)
    for col, (n, t, e) in enumerate(groups):
        top, bottom = axes[0][col], axes[1][col]
        sg = s[(s["labeled_size"] == n) & (s["targets"] == t) & (s["estimator_data"] == e)]
        any_bar = False
        for m in method_order(sg["method"].unique()):
            r = sg[sg["method"] == m].sort_values("teacher_topk", key=lambda c: c.map(topk_rank))
            half = [t_half_width(std, int(k)) for std, k in zip(r["std"], r["n"])]
            mean = list(r["mean"])
            any_bar |= _draw(top, [xpos[k] for k in r["teacher_topk"]], mean,
                             [a - h for a, h in zip(mean, half)],
                             [a + h for a, h in zip(mean, half)], m)
        rg = rows[(rows["labeled_size"] == n) & (rows["targets"] == t)
                  & (rows["estimator_data"] == e)]
        students = rg[rg["method"] != TEACHER]
        for column, label, style in (("student_peak_bytes", "student step peak", "-"),
                                     ("teacher_cache_bytes", "teacher cache", "--")):
            if column not in rg.columns:
                continue
            src = students if column == "student_peak_bytes" else rg
            mib = src.groupby("teacher_topk")[column].mean() / 2 ** 20
            order = sorted(mib.index, key=topk_rank)
            bottom.plot([xpos[k] for k in order], [mib[k] for k in order], marker="o",
                        linestyle=style, color="black", label=f"{label} (MiB)")
        teacher_acc = rg.loc[rg["method"] == TEACHER, "teacher_test_acc"]
        acc_note = f", teacher {100 * teacher_acc.mean():.0f}%" if len(teacher_acc) else ""
        where = f"|A| = {n}{acc_note} ({t} labels" + \
            ("" if e == "val" else f", estimators on {e}") + ")"
        top.set_title(f"{suite}{' (smoke)' if smoke else ''}\n{where}")
        for ax, ylabel in ((top, f"test accuracy (%), mean\n{_bar_note(any_bar)}"),
                           (bottom, "MiB (log scale)")):
            ax.set_xscale("log")
            ax.set_xticks([xpos[k] for k in ks], [("dense" if k == "dense" else k) for k in ks])
            ax.minorticks_off()
            ax.set_xlabel("teacher cache: top-K ids and probabilities per row")
            ax.set_ylabel(ylabel)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        bottom.set_yscale("log")
    fig.tight_layout()
    return fig


def plot_topk(suite: str, df: pd.DataFrame) -> Optional[bytes]:
    """PNG bytes of `topk_figure(suite, df)`, or None when no row ran on a top-K cache."""
    return _png(topk_figure(suite, df)) if _has_topk(df) else None


def write_topk_plots(out: Path, suites: Optional[Iterable[str]] = None) -> List[Path]:
    """Rewrite <out>/plots/<suite>.topk.png for every suite with rows on a top-K cache."""
    return write_per_suite(out, suites, "plots/{suite}.topk.png", plot_topk)
