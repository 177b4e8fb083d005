"""Leaderboard cells: one per (dataset, labeled size, targets, estimator data), named
`<dataset>_<labeled size>`, then `_<scenario>` for rows of a named teacher scenario (rows'
`teacher_scenario`: known_noise's stress cells, each a way the teacher departs from SLaM's
noise model), `_hard` for runs on the teacher's hard labels and `_crossfit` for runs whose
estimators were fitted on out-of-fold teacher predictions on A instead of a labeled V (rows'
`estimator_data`; rows without the column, or with `val`, get no suffix).

Every table and plot derived from the raw rows names and orders its cells here, so the wide
leaderboard's columns, the paired and summary files' `cell` values and the plots' panels are the
same strings. A cell's "family" is its name without the labeled size: the rows one plot panel
draws against |A|.
"""
from __future__ import annotations

from typing import Iterable, List

import pandas as pd

from slam_bench.pipeline.methods import METHODS, TARGETS
from slam_bench.store import DEFAULT_TARGETS

HARD_SUFFIX = "_hard"
DEFAULT_ESTIMATOR_DATA = "val"  # rows written before cross-fitting existed fitted on V
# Suffix per estimator_data value; values not listed get `_<value>`, so a new kind of
# estimator data still gets cells of its own rather than sharing V's.
ESTIMATOR_SUFFIX = {DEFAULT_ESTIMATOR_DATA: "", "crossfit": "_crossfit"}
ESTIMATOR_ORDER = (DEFAULT_ESTIMATOR_DATA, "crossfit")


def cell_suffix(targets: str = DEFAULT_TARGETS,
                estimator_data: str = DEFAULT_ESTIMATOR_DATA, scenario: str = "") -> str:
    """`_<scenario>` for a named teacher scenario, `_hard` for hard targets, then the
    estimator data's suffix (empty for `val`)."""
    return (f"_{scenario}" if scenario else "") + (HARD_SUFFIX if targets == "hard" else "") + \
        ESTIMATOR_SUFFIX.get(estimator_data, f"_{estimator_data}")


def cell_name(dataset: str, labeled_size: int, targets: str = DEFAULT_TARGETS,
              estimator_data: str = DEFAULT_ESTIMATOR_DATA, scenario: str = "") -> str:
    return f"{dataset}_{int(labeled_size)}" + cell_suffix(targets, estimator_data, scenario)


def _column(df: pd.DataFrame, name: str, default: str) -> pd.Series:
    """A text column of `df` with `default` where it is absent or empty."""
    if name not in df.columns:
        return pd.Series(default, index=df.index, dtype=object)
    col = df[name].astype(object).where(df[name].notna(), default).astype(str)
    return col.where(col != "", default)


def with_cells(df: pd.DataFrame) -> pd.DataFrame:
    """The rows with `targets` (soft where absent) and `estimator_data` (val where absent)
    columns, their `cell` name and their cell `family` (the name without the labeled size)."""
    targets = _column(df, "targets", DEFAULT_TARGETS)
    est = _column(df, "estimator_data", DEFAULT_ESTIMATOR_DATA)
    scen = _column(df, "teacher_scenario", "")
    datasets = df["dataset"].astype(str)
    return df.assign(targets=targets, estimator_data=est,
                     cell=[cell_name(d, n, t, e, c) for d, n, t, e, c in
                           zip(datasets, df["labeled_size"], targets, est, scen)],
                     family=[d + cell_suffix(t, e, c)
                             for d, t, e, c in zip(datasets, targets, est, scen)])


def _rank(order, value: str):
    return (order.index(value), "") if value in order else (len(order), value)


def family_order(df: pd.DataFrame) -> List[str]:
    """Cell families of `with_cells(df)` ordered by dataset, targets (soft first), estimator
    data (val first)."""
    keys = {(str(d), _rank(TARGETS, t), _rank(ESTIMATOR_ORDER, e), f)
            for d, t, e, f in zip(df["dataset"], df["targets"], df["estimator_data"], df["family"])}
    return [f for *_, f in sorted(keys)]


def cell_order(df: pd.DataFrame) -> List[str]:
    """Cells of `with_cells(df)` ordered by family (family_order), then labeled size."""
    fam = {f: i for i, f in enumerate(family_order(df))}
    keys = {(fam[f], int(n), c) for n, f, c in zip(df["labeled_size"], df["family"], df["cell"])}
    return [c for *_, c in sorted(keys)]


def method_order(names: Iterable[str]) -> List[str]:
    """Registry order (teacher first), then any unknown names sorted."""
    names = set(names)
    return [m for m in METHODS if m in names] + sorted(names - set(METHODS))


def is_slam(method: str) -> bool:
    """Whether `method` is a SLaM variant (`slam`, `slam_normalized`, any `slam_*`)."""
    return method == "slam" or method.startswith("slam_")
