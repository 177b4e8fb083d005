"""Raw result rows: one CSV per suite, `<out>/runs/<suite>.csv`, one row per (trial, method).

Rows are recorded one at a time, each by rewriting the whole file atomically under a lock, so
a killed run loses at most the row in flight and every file stays parseable. A row is
identified by (dataset, labeled_size, split_seed, train_seed, method, targets); recording a row with
a new config hash replaces the old one, and a rerun skips rows whose config hash matches.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Iterable, List, Mapping, Optional, Set, Tuple

import pandas as pd

from slam_bench.fileio import atomic_write, locked

# Leading columns in this order; method-specific parameters follow, sorted by name.
CORE_COLUMNS = [
    "suite", "dataset", "dataset_meta", "labeled_size", "n_unlabeled", "n_val", "n_test", "split_seed",
    "train_seed", "teacher_arch", "student_arch", "teacher_test_acc", "teacher_val_acc", "method",
    "targets", "config_hash", "teacher_key", "teacher_train", "teacher_steps", "epochs", "steps",
    "batch_size", "lr", "optimizer", "weight_decay", "labeled_weighting", "labeled_weight",
    "selection", "test_acc", "student_fit_u", "wall_s", "device", "git_sha",
]
# Hex hashes and shas must stay strings (an all-digit hash would otherwise lose leading zeros).
_STR_COLUMNS = {"config_hash": str, "teacher_key": str, "git_sha": str}
ROW_ID = ("dataset", "labeled_size", "split_seed", "train_seed", "method", "targets")
# Rows written before hard labels existed have no `targets` column: they are soft-label rows.
DEFAULT_TARGETS = "soft"


class ResultsError(RuntimeError):
    """A results file exists but is not a readable CSV with the expected columns."""


def runs_path(out: Path, suite: str) -> Path:
    return Path(out) / "runs" / f"{suite}.csv"


def read_rows(path: Path) -> pd.DataFrame:
    """The rows at `path` (an empty frame if the file is absent)."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=CORE_COLUMNS)
    try:
        df = pd.read_csv(path, dtype=_STR_COLUMNS)
    except Exception as e:
        raise ResultsError(f"results file {path} is not a readable CSV ({type(e).__name__}: {e})") from None
    if "targets" not in df.columns:
        df["targets"] = DEFAULT_TARGETS
    missing = [c for c in ("suite", "method", "test_acc", *ROW_ID) if c not in df.columns]
    if missing:
        raise ResultsError(f"results file {path} lacks the columns {missing}")
    return df


def _row_id(row: Mapping) -> Tuple:
    return tuple(str(row.get(c, DEFAULT_TARGETS) if c == "targets" else row[c]) for c in ROW_ID)


def done_keys(df: pd.DataFrame) -> Set[Tuple]:
    """(row id..., config_hash) of every recorded row, for resuming."""
    return {(*_row_id(r), str(r["config_hash"])) for r in df.to_dict("records")}


def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    rest = sorted(c for c in df.columns if c not in CORE_COLUMNS)
    cols = [c for c in CORE_COLUMNS if c in df.columns] + rest
    df = df[cols]
    sort_cols = [c for c in ROW_ID if c in df.columns]
    return df.sort_values(sort_cols, kind="stable").reset_index(drop=True)


def to_csv_bytes(df: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    df.to_csv(buf, index=False, lineterminator="\n", float_format="%.6g")
    return buf.getvalue().encode()


def record_row(path: Path, row: Mapping) -> None:
    """Add `row`, replacing a row with the same id (dataset, labeled size, seeds, method)."""
    path = Path(path)
    with locked(path):
        df = read_rows(path)
        rid = _row_id(row)
        if len(df):
            keep = [_row_id(r) != rid for r in df.to_dict("records")]
            df = df[keep]
        new = pd.DataFrame([{k: _clean(v) for k, v in row.items()}])
        df = new if df.empty else pd.concat([df, new], ignore_index=True)
        atomic_write(path, to_csv_bytes(_ordered(df)))


def prune_rows(path: Path, keep_keys: Set[Tuple]) -> int:
    """Drop rows whose (id, config hash) is not in `keep_keys`; returns how many were dropped."""
    path = Path(path)
    with locked(path):
        df = read_rows(path)
        if df.empty:
            return 0
        keep = [(*_row_id(r), str(r["config_hash"])) in keep_keys for r in df.to_dict("records")]
        dropped = len(keep) - sum(keep)
        if dropped:
            atomic_write(path, to_csv_bytes(_ordered(df[keep])))
        return dropped


def _clean(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, (list, tuple)):
        return "x".join(str(i) for i in v)
    return v


def read_all_runs(out: Path, suites: Optional[Iterable[str]] = None) -> List[Tuple[str, pd.DataFrame]]:
    """(suite, rows) for every runs CSV under `out` (or only `suites`), sorted by suite name."""
    runs = Path(out) / "runs"
    if not runs.is_dir():
        return []
    names = sorted(p.stem for p in runs.glob("*.csv"))
    if suites is not None:
        names = [n for n in names if n in set(suites)]
    return [(n, read_rows(runs / f"{n}.csv")) for n in names]
