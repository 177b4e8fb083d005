"""Leaderboard cells: one per (dataset, labeled size, targets), named `<dataset>_<labeled size>`
for the teacher's soft labels and `<dataset>_<labeled size>_hard` for its hard labels.

Every table and plot derived from the raw rows names and orders its cells here, so the wide
leaderboard's columns and the paired file's `cell` values are the same strings.
"""
from __future__ import annotations

from typing import Iterable, List

import pandas as pd

from slam_bench.pipeline.methods import METHODS, TARGETS
from slam_bench.pipeline.results import DEFAULT_TARGETS

HARD_SUFFIX = "_hard"


def cell_name(dataset: str, labeled_size: int, targets: str = DEFAULT_TARGETS) -> str:
    return f"{dataset}_{int(labeled_size)}" + (HARD_SUFFIX if targets == "hard" else "")


def with_cells(df: pd.DataFrame) -> pd.DataFrame:
    """The rows with a `targets` column (soft where absent) and their `cell` name."""
    targets = df["targets"].fillna(DEFAULT_TARGETS).astype(str) if "targets" in df.columns \
        else pd.Series(DEFAULT_TARGETS, index=df.index)
    return df.assign(targets=targets,
                     cell=[cell_name(d, n, t) for d, n, t in
                           zip(df["dataset"].astype(str), df["labeled_size"], targets)])


def cell_order(df: pd.DataFrame) -> List[str]:
    """Cells of `with_cells(df)` ordered by dataset, targets (soft first), labeled size."""
    rank = {t: i for i, t in enumerate(TARGETS)}
    keys = {(str(d), rank.get(t, len(rank)), int(n), c)
            for d, n, t, c in zip(df["dataset"], df["labeled_size"], df["targets"], df["cell"])}
    return [c for *_, c in sorted(keys)]


def method_order(names: Iterable[str]) -> List[str]:
    """Registry order (teacher first), then any unknown names sorted."""
    names = set(names)
    return [m for m in METHODS if m in names] + sorted(names - set(METHODS))
