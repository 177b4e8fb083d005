"""Leaderboard cells: one per (dataset, labeled size, targets, estimator data), named
`<dataset>_<labeled size>`, then `_<scenario>` for rows of a named teacher scenario (rows'
`teacher_scenario`: known_noise's stress cells, each a way the teacher departs from SLaM's
noise model), `_top<K>` for runs on a top-K teacher cache (rows' `teacher_topk`; `dense`
rows, and rows without the column, get no suffix), `_hard` for runs on the teacher's hard
labels and `_crossfit` for runs whose estimators were fitted on out-of-fold teacher predictions
on A instead of a labeled V (rows' `estimator_data`; rows without the column, or with `val`,
get no suffix).

Every table and plot derived from the raw rows names and orders its cells here, so the wide
leaderboard's columns, the paired and summary files' `cell` values and the plots' panels are the
same strings. A cell's "family" is its name without the labeled size: the rows one plot panel
draws against |A|.
"""
from __future__ import annotations

from typing import Iterable, List

import pandas as pd

from slam_bench.pipeline.methods import METHODS, TARGETS
from slam_bench.store import DEFAULT_TARGETS, DENSE_TOPK

HARD_SUFFIX = "_hard"
DEFAULT_ESTIMATOR_DATA = "val"  # rows written before cross-fitting existed fitted on V
# Suffix per estimator_data value; values not listed get `_<value>`, so a new kind of
# estimator data still gets cells of its own rather than sharing V's.
ESTIMATOR_SUFFIX = {DEFAULT_ESTIMATOR_DATA: "", "crossfit": "_crossfit"}
ESTIMATOR_ORDER = (DEFAULT_ESTIMATOR_DATA, "crossfit")


def cell_suffix(targets: str = DEFAULT_TARGETS,
                estimator_data: str = DEFAULT_ESTIMATOR_DATA, scenario: str = "",
                teacher_topk: str = DENSE_TOPK) -> str:
    """`_<scenario>` for a named teacher scenario, `_top<K>` for a top-K teacher cache,
    `_hard` for hard targets, then the estimator data's suffix (empty for `val`)."""
    return (f"_{scenario}" if scenario else "") + \
        (f"_top{teacher_topk}" if str(teacher_topk) != DENSE_TOPK else "") + \
        (HARD_SUFFIX if targets == "hard" else "") + \
        ESTIMATOR_SUFFIX.get(estimator_data, f"_{estimator_data}")


def cell_name(dataset: str, labeled_size: int, targets: str = DEFAULT_TARGETS,
              estimator_data: str = DEFAULT_ESTIMATOR_DATA, scenario: str = "",
              teacher_topk: str = DENSE_TOPK) -> str:
    return f"{dataset}_{int(labeled_size)}" + cell_suffix(targets, estimator_data, scenario,
                                                          teacher_topk)


def _column(df: pd.DataFrame, name: str, default: str) -> pd.Series:
    """A text column of `df` with `default` where it is absent or empty."""
    if name not in df.columns:
        return pd.Series(default, index=df.index, dtype=object)
    col = df[name].astype(object).where(df[name].notna(), default).astype(str)
    return col.where(col != "", default)


def with_cells(df: pd.DataFrame) -> pd.DataFrame:
    """The rows with `targets` (soft where absent), `estimator_data` (val where absent) and
    `teacher_topk` (dense where absent) columns, their `cell` name and their cell `family`
    (the name without the labeled size)."""
    targets = _column(df, "targets", DEFAULT_TARGETS)
    est = _column(df, "estimator_data", DEFAULT_ESTIMATOR_DATA)
    scen = _column(df, "teacher_scenario", "")
    topk = _column(df, "teacher_topk", DENSE_TOPK)
    datasets = df["dataset"].astype(str)
    return df.assign(targets=targets, estimator_data=est, teacher_topk=topk,
                     cell=[cell_name(d, n, t, e, c, k) for d, n, t, e, c, k in
                           zip(datasets, df["labeled_size"], targets, est, scen, topk)],
                     family=[d + cell_suffix(t, e, c, k)
                             for d, t, e, c, k in zip(datasets, targets, est, scen, topk)])


def topk_rank(teacher_topk: str) -> float:
    """Sort key of a teacher_topk value: K ascending, the dense teacher last."""
    return float("inf") if str(teacher_topk) == DENSE_TOPK else float(teacher_topk)


def _rank(order, value: str):
    return (order.index(value), "") if value in order else (len(order), value)


def family_order(df: pd.DataFrame) -> List[str]:
    """Cell families of `with_cells(df)` ordered by dataset, targets (soft first), estimator
    data (val first), top-K cache (K ascending, dense last), then the smallest labeled size
    in the family: a suite that names one teacher scenario per labeled size (known_noise's
    stress grid) keeps the order it lists them in, not the scenarios' alphabetical one."""
    topk = df["teacher_topk"] if "teacher_topk" in df.columns else [DENSE_TOPK] * len(df)
    first = df.groupby("family")["labeled_size"].min().astype(int).to_dict()
    keys = {(str(d), _rank(TARGETS, t), _rank(ESTIMATOR_ORDER, e), topk_rank(k), first[f], f)
            for d, t, e, k, f in zip(df["dataset"], df["targets"], df["estimator_data"], topk,
                                     df["family"])}
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
