"""`slam-bench sweep SUITE --method M --param P --values v1,v2,...`: train one method of a
suite at each value of one of its hyper-parameters, on the suite's cells, and summarise.

Each value is a hyper-parameter override for that method only, passed to the same trial loop
as `slam-bench run` (`run_suite(..., hp_overrides=...)`); no suite is changed. P may also be
`n_val`, the size of the estimator set V (an int >= 1), which the method's row then spends. The raw rows of
value v go to `<out>/sweeps/runs/<suite>.<M>.<P>=<v>.csv` (their column P holds v; a rerun
resumes, like `run`), teachers are cached in `<out>/sweeps/cache`, and the summary is written
to `<out>/sweeps/<suite>.<M>.<P>.csv`: one line per (value, cell) with n, mean and sample std
(ddof = 1) of the test accuracy in percent, then the mean over trials of every numeric value
the method logged (its fitted parameters: k, alpha's calibration error, the transition's
diagonal, UPS's labeled fraction, ...). `<out>/sweeps/<suite>.<M>.<P>.png` plots the means
against the values, one line per cell, with error bars (the std) only where n >= 3.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import math
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

from slam_bench.cli import run as run_cli
from slam_bench.cli.common import check_data_root, fail, user_errors
from slam_bench.store import CORE_COLUMNS, DIGEST, ID_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

# The work (the trial loop, the registries, pandas) is imported inside the functions, so
# `slam-bench sweep --help` and usage errors answer without importing torch.

SUMMARY_COLUMNS = ["suite", "method", "param", "value", "cell", "n", "mean", "std"]
# Row columns that describe the trial or the teacher, not the method's fit.
_NOT_FITTED = set(CORE_COLUMNS) | set(ID_COLUMNS) | {DIGEST, "mc_passes"}
_VALUE_TEXT = re.compile(r"^[A-Za-z0-9._+-]+$")  # a value is part of a file name
MIN_N_FOR_BARS = 3  # an error bar from fewer trials says nothing
# Suite sizes a sweep may vary besides the method's hyper-parameters: |V|, which every method
# fitting on V depends on.
SIZE_PARAMS = ("n_val",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run_cli.add_arguments(parser)
    parser.add_argument("--method", required=True, help="the method to sweep (a registry name)")
    parser.add_argument("--param", required=True, help="one of the method's hyper-parameters")
    parser.add_argument("--values", required=True,
                        help="comma-separated values: ints, floats, 'none' or words, e.g. 0,0.5,1")


def parse_value(text: str):
    """'3' -> 3, '0.5' -> 0.5, 'none' -> None, anything else stays a string."""
    if text == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_values(text: str) -> List[str]:
    """The --values list as texts (each also a file-name part), non-empty, without repeats."""
    values = [v.strip() for v in text.split(",")]
    if not values or any(not v for v in values):
        raise ValueError(f"--values must be a comma-separated list with no empty entry, got {text!r}")
    bad = [v for v in values if not _VALUE_TEXT.match(v)]
    if bad:
        raise ValueError(f"--values entries may hold letters, digits and . _ + - only, got {bad}")
    if len(set(values)) != len(values):
        raise ValueError(f"--values has repeated entries: {text!r}")
    return values


def sweep_name(suite: str, method: str, param: str) -> str:
    return f"{suite}.{method}.{param}"


def summarise(rows: "pd.DataFrame", value: str, suite: str, method: str,
              param: str) -> "pd.DataFrame":
    """One line per cell of one value's rows (test_acc in [0, 1]): n, mean and std (ddof = 1,
    NaN for n = 1) in percent, then the mean of each numeric value the rows log beyond the
    trial's description: the method's fitted values and its numeric hyper-parameters (a fitted
    value may carry a hyper-parameter's name, e.g. SLaM's k, "auto" until fitted)."""
    import pandas as pd

    from slam_bench.report.cells import with_cells

    fitted = [c for c in rows.columns
              if c not in _NOT_FITTED and not c.startswith("teacher_")
              and pd.api.types.is_numeric_dtype(rows[c]) and rows[c].notna().any()]
    out = []
    # Cells named as the leaderboards name them (scenario, hard and crossfit suffixes included).
    for cell, g in with_cells(rows).groupby("cell"):
        acc = 100.0 * g["test_acc"].astype(float)
        line = {"suite": suite, "method": method, "param": param, "value": value,
                "cell": cell, "n": len(g),
                "mean": round(float(acc.mean()), 4),
                "std": round(float(acc.std(ddof=1)), 4) if len(g) > 1 else math.nan}
        line.update({c: round(float(g[c].mean()), 6) for c in sorted(fitted)})
        out.append(line)
    return pd.DataFrame(out)


def plot(summary: "pd.DataFrame", title: str) -> bytes:
    """PNG bytes: mean accuracy against the value (in the order given), one line per cell."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    values = list(dict.fromkeys(summary["value"]))
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for cell, g in summary.groupby("cell", sort=True):
        x = [values.index(v) for v in g["value"]]
        bars = [s if n >= MIN_N_FOR_BARS and s > 0 else 0.0 for s, n in zip(g["std"], g["n"])]
        ax.errorbar(x, g["mean"], yerr=bars, marker="o", capsize=3, label=cell)
    ax.set_xticks(range(len(values)), values)
    ax.set_xlabel(title.rsplit(".", 1)[-1])
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{title} (error bars: std over trials, n >= {MIN_N_FOR_BARS})", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _point_changes(method, param: str, value):
    """(hyper-parameter overrides, Sizes changes) for one grid point; checks the value."""
    if param in SIZE_PARAMS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"--values for {param} must be ints >= 1, got {value!r}")
        return {}, {param: value}
    method.hparams({param: value})  # an unknown name is an error naming the method's own
    return {param: value}, {}


def main(args: argparse.Namespace, prog: str = "slam-bench sweep") -> int:
    import pandas as pd

    from slam_bench.fileio import atomic_write, ensure_writable_dir
    from slam_bench.pipeline.methods import get_method
    from slam_bench.pipeline.runner import TrialsFailed, run_suite
    from slam_bench.store import read_rows, runs_path, select_variant

    try:
        suite = run_cli.build_suite(args)
        method = get_method(args.method)
        if not method.trains_student:
            raise ValueError(f"--method {args.method!r} trains no student; sweep a student method")
        if args.method not in suite.methods:
            raise ValueError(f"--method {args.method!r} is not among suite {suite.name!r}'s "
                             f"methods ({', '.join(suite.methods)})")
        texts = parse_values(args.values)
        for text in texts:  # an unknown --param or a bad value fails before anything runs
            _point_changes(method, args.param, parse_value(text))
        check_data_root(args.data_root)
        ensure_writable_dir(args.out)
        folder = Path(args.out) / "sweeps"
        name = sweep_name(suite.name, args.method, args.param)
        variant = "smoke" if args.smoke else "full"
        parts, failed = [], []
        for text in texts:
            hp, sizes = _point_changes(method, args.param, parse_value(text))
            point = dataclasses.replace(suite, name=f"{name}={text}", methods=(args.method,),
                                        hard_methods=())
            if sizes:
                point = point.with_sizes(args.smoke, **sizes)
            print(f"{name} = {text}", flush=True)
            try:
                run_suite(point, folder, smoke=args.smoke, device=args.device,
                          data_root=args.data_root, force=args.force, progress=True,
                          log=lambda s: print(s, flush=True), shard=args.shard,
                          hp_overrides={args.method: hp})
            except TrialsFailed as e:
                failed.append(str(e))
            rows = select_variant(read_rows(runs_path(folder, point.name)), variant)
            if len(rows):
                parts.append(summarise(rows, text, suite.name, args.method, args.param))
        if not parts:
            raise ValueError("the sweep recorded no rows")
        table = pd.concat(parts, ignore_index=True)
        table = table[SUMMARY_COLUMNS + sorted(set(table.columns) - set(SUMMARY_COLUMNS))]
        csv_path = folder / f"{name}.csv"
        atomic_write(csv_path, table.to_csv(index=False, lineterminator="\n"))
        atomic_write(folder / f"{name}.png", plot(table, name))
        print(table[SUMMARY_COLUMNS].to_string(index=False))
        print(f"summary: {csv_path}")
        for e in failed:
            print(f"{prog}: {e}", file=sys.stderr)
        return 1 if failed else 0
    except user_errors() as e:
        return fail(prog, e)
