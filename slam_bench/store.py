"""The results store: raw result rows, one CSV per suite, `<out>/runs/<suite>.csv`.

One row per (trial, method), identified by the typed `RowId` (`ID_COLUMNS`): suite, dataset,
labeled size, method, targets ('soft' or 'hard' teacher labels), split seed, train seed,
variant ('smoke' or 'full'), so a smoke run never replaces a full row, and teacher_topk (the
K of a top-K teacher cache, or 'dense'; a row without the column, written before top-K caches
existed, is a dense row), so the rows of one trial at several K coexist. Recording a row with a
new config hash replaces the row with the same id; a rerun skips ids whose config hash matches.

Why a CSV: users read and diff these files in git, and every report is generated from them.
What makes it a store nobody can lose, corrupt or launder:
- every change rewrites the whole file atomically (`fileio.atomic_write`) under a lock kept
  beside it (`fileio.locked`, the `filelock` package), so concurrent runs, shards or pytest
  workers never lose a row, and a kill at any moment leaves the old or the new file; the
  temporary file a killed writer left is removed by the next writer under the same lock;
- every row ends with `row_digest`, a hash of its cells, so a row that was cut or altered
  outside the store is detected on read rather than kept with a NaN and counted as done. A row
  is signed once, when `record_row` records what the pipeline computed; rewriting the file keeps
  the digests it read (each checked), so no write can re-sign an edited row;
- reading is strict: a file without the `row_digest` column, or without the id columns, is an
  error (there is no lenient reading of older files: `migrate_legacy` converts one explicitly,
  once, after showing what it will sign); the id and core columns are parsed to their types,
  accuracies must lie in [0, 1], ids must be unique; anything else is a `ResultsError` naming
  the file and line. A UTF-8 byte-order mark (a spreadsheet's save) is read and not written back.

This module sits below the trial loop and the report: it imports the file helpers and pandas,
never torch, so reports and the command line read rows without loading the pipeline.
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from pathlib import Path
from typing import (Callable, Collection, Dict, Iterable, List, Mapping, NamedTuple, Optional,
                    Set, Tuple)

import pandas as pd

from slam_bench.fileio import atomic_write, locked, remove_orphans

VARIANTS = ("smoke", "full")
TARGETS = ("soft", "hard")
ESTIMATOR_DATA = ("val", "crossfit")  # where estimators fit: a labeled V, or A cross-fitted
DEFAULT_TARGETS = "soft"  # a row given to record_row without targets; legacy files (migrate)
DENSE_TOPK = "dense"  # teacher_topk of a row on the dense teacher (and of rows without the column)
LEGACY_VARIANT = "full"  # legacy files had no variant column, and came from full runs


class RowId(NamedTuple):
    """The identity of a row; two rows with equal ids cannot coexist in one file."""
    suite: str
    dataset: str
    labeled_size: int
    method: str
    targets: str
    split_seed: int
    train_seed: int
    variant: str
    teacher_topk: str = DENSE_TOPK  # K as text ("20"), or "dense"


ID_COLUMNS = RowId._fields
# Id columns a row may leave empty, and the value they then take; an empty one stays empty
# when the file is rewritten (its digest was computed without it).
_ID_DEFAULTS = {"teacher_topk": DENSE_TOPK}


def topk_label(k) -> str:
    """The teacher_topk cell of a top-k cache (k an int), or DENSE_TOPK for None."""
    return DENSE_TOPK if k is None else str(int(k))


DIGEST = "row_digest"
# Leading columns in this order; method-specific parameters follow, sorted by name, and the
# row's digest comes last (a row cut anywhere loses it).
CORE_COLUMNS = [
    "suite", "variant", "dataset", "dataset_meta", "labeled_size", "n_unlabeled", "n_val",
    "n_test", "split_seed", "train_seed", "teacher_arch", "student_arch", "teacher_test_acc",
    "teacher_val_acc", "method", "targets", "teacher_topk", "config_hash", "teacher_key",
    "teacher_train", "teacher_steps", "epochs", "steps", "batch_size", "lr", "optimizer",
    "weight_decay", "labeled_weighting", "labeled_weight", "lr_schedule", "selection",
    "labels_used", "estimator_data", "crossfit_folds", "test_acc", "student_fit_u",
    "teacher_cache_bytes", "student_peak_bytes", "wall_s", "device", "git_sha",
    "slam_bench_version", "torch_version", "triton_version",
]
_INT = {"labeled_size", "split_seed", "train_seed", "n_unlabeled", "n_val", "n_test",
        "teacher_steps", "epochs", "steps", "batch_size", "labels_used", "crossfit_folds",
        "teacher_cache_bytes", "student_peak_bytes"}
_ACCURACY = {"test_acc", "teacher_test_acc", "teacher_val_acc"}  # fractions in [0, 1]
_FLOAT = {"lr", "weight_decay", "labeled_weight", "wall_s", "student_fit_u"}
_ENUM = {"variant": VARIANTS, "targets": TARGETS, "estimator_data": ESTIMATOR_DATA}
# Every row has these; a legacy file (migrate) may lack targets and variant, nothing else.
REQUIRED = ("suite", "dataset", "labeled_size", "method", "targets", "split_seed", "train_seed",
            "config_hash", "test_acc", "variant")
_LEGACY_DEFAULTS = {"targets": DEFAULT_TARGETS, "variant": LEGACY_VARIANT}
_INT_TEXT = re.compile(r"-?\d+")
_TOPK_TEXT = re.compile(r"[1-9]\d*")


class ResultsError(RuntimeError):
    """A results file exists but is not a valid store: the message names the file and line."""


# The folders under a results folder that runs and reports write (check_store clears them).
WRITTEN_FOLDERS = ("runs", "cache", "leaderboard", "plots")


def runs_path(out: Path, suite: str) -> Path:
    return Path(out) / "runs" / f"{suite}.csv"


# ------------------------------------------------------------------ cells: typed <-> text

def _parse(col: str, text: str):
    """The typed value of one cell; ValueError saying what was expected."""
    if col == "teacher_topk":
        if text == "":
            return _ID_DEFAULTS[col]
        if text != DENSE_TOPK and not _TOPK_TEXT.fullmatch(text):
            raise ValueError(f"teacher_topk must be a positive integer K or {DENSE_TOPK!r}, "
                             f"got {text!r}")
        return text
    if text == "":
        if col in REQUIRED:
            raise ValueError(f"{col} is empty")
        return None
    if col in _INT:
        if not _INT_TEXT.fullmatch(text):
            raise ValueError(f"{col} must be an integer, got {text!r}")
        return int(text)
    if col in _ACCURACY or col in _FLOAT:
        try:
            v = float(text)
        except ValueError:
            raise ValueError(f"{col} must be a number, got {text!r}") from None
        if not math.isfinite(v):
            raise ValueError(f"{col} must be finite, got {text!r}")
        if col in _ACCURACY and not 0.0 <= v <= 1.0:
            raise ValueError(f"{col} must be an accuracy in [0, 1], got {text}")
        return v
    if col in _ENUM and text not in _ENUM[col]:
        raise ValueError(f"{col} must be one of {', '.join(_ENUM[col])}, got {text!r}")
    return text


def _render(v) -> str:
    """A Python value as its cell text (floats as %.6g, like every file so far)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int) or (hasattr(v, "dtype") and getattr(v.dtype, "kind", "") in "iu"):
        return str(int(v))
    if isinstance(v, float) or (hasattr(v, "dtype") and getattr(v.dtype, "kind", "") == "f"):
        return format(float(v), ".6g")
    if isinstance(v, (list, tuple)):
        return "x".join(str(i) for i in v)
    return str(v)


def _digest(cells: Mapping[str, str]) -> str:
    """Hash of a row's non-empty cells by column name (so adding an empty column to the file,
    or reordering its columns, leaves every digest valid)."""
    text = "\x1f".join(f"{k}={v}" for k, v in sorted(cells.items()) if v != "" and k != DIGEST)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _id_of(cells: Mapping[str, str]) -> RowId:
    """The typed id of a row of cells (ValueError naming the column if one is invalid)."""
    return RowId(**{c: _parse(c, cells.get(c, "")) for c in ID_COLUMNS})


def _check_cells(cells: Mapping[str, str]) -> RowId:
    for col in ("config_hash", "test_acc", *_INT, *_ACCURACY, *_FLOAT, *_ENUM, *_ID_DEFAULTS):
        if col in cells:
            _parse(col, cells[col])
    for col in REQUIRED:
        if col not in cells:
            raise ValueError(f"{col} is missing")
    return _id_of(cells)


def row_id(row: Mapping) -> RowId:
    """The typed id of a row given as Python values (as the runner builds it); `targets`
    defaults to 'soft'. ValueError naming the column when a value has the wrong type."""
    cells = {c: _render(row[c]) for c in ID_COLUMNS if c in row}
    cells.setdefault("targets", DEFAULT_TARGETS)
    if "variant" not in cells:
        raise ValueError("a row must say its variant ('smoke' or 'full')")
    return _id_of(cells)


# ------------------------------------------------------------------ the file, as text rows

class _Table(NamedTuple):
    columns: List[str]
    rows: List[Dict[str, str]]  # cell text by column, every column present
    ids: List[RowId]
    lines: List[int]  # line of each row in the file


def _text(path: Path) -> str:
    """The file's text (a UTF-8 byte-order mark dropped); OSError as raised, naming the path."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ResultsError(f"results file {path} is not UTF-8 text ({e})") from None


def _load(path: Path, known_methods: Optional[Collection[str]] = None,
          legacy: bool = False) -> _Table:
    """Parse and validate `path` strictly (an empty table if the file is absent).

    legacy: read a file written before rows were signed (no `row_digest` column; targets and
    variant may be missing and take their legacy defaults); only `migrate_legacy` does.
    """
    path = Path(path)
    if not path.exists():
        return _Table([], [], [], [])
    reader = csv.reader(io.StringIO(_text(path), newline=""))
    try:
        header = next(reader, [])
        signed = DIGEST in header
        if legacy and signed:
            raise ResultsError(f"results file {path} already has a {DIGEST} column: it is "
                               f"signed, there is nothing to migrate")
        defaults = _LEGACY_DEFAULTS if legacy else {}
        # Not a runs file at all, an unsigned (legacy) one, or a signed one without an id column.
        for allowed in (_LEGACY_DEFAULTS, defaults):
            missing = [c for c in REQUIRED if c not in header and c not in allowed]
            if missing:
                raise ResultsError(f"results file {path} lacks the columns {missing}; it is not "
                                   f"a slam-bench runs file")
            if not legacy and not signed:
                raise ResultsError(f"results file {path} has no {DIGEST} column, so none of its "
                                   f"rows can be checked; if it is a runs file written before "
                                   f"rows were signed, review it with `slam-bench migrate "
                                   f"{path}` (which signs it once with --yes)")
        if len(set(header)) != len(header):
            raise ResultsError(f"results file {path} repeats a column name in its header")
        table = _Table(list(header), [], [], [])
        seen: Dict[RowId, int] = {}
        for fields in reader:
            line = reader.line_num
            if not fields:
                continue  # a blank line holds no row
            where = f"results file {path}, line {line}"
            if len(fields) != len(header):
                raise ResultsError(f"{where}: {len(fields)} fields where the header has "
                                   f"{len(header)} (a cut or damaged row); delete that line and "
                                   f"rerun to recompute the trial")
            cells = dict(zip(header, fields))
            if signed and cells[DIGEST] != _digest(cells):
                raise ResultsError(f"{where}: the row does not match its {DIGEST} (it was cut or "
                                   f"edited after it was written); delete that line and rerun to "
                                   f"recompute the trial")
            for col, value in defaults.items():
                if cells.get(col, "") == "":
                    cells[col] = value
            try:
                rid = _check_cells(cells)
            except ValueError as e:
                raise ResultsError(f"{where}: {e}") from None
            if known_methods is not None and rid.method not in known_methods:
                raise ResultsError(f"{where}: unknown method {rid.method!r} (known: "
                                   f"{', '.join(known_methods)})")
            if rid in seen:
                raise ResultsError(f"{where}: the same row id as line {seen[rid]} ({_show(rid)}); "
                                   f"a row id may appear once")
            seen[rid] = line
            table.rows.append(cells)
            table.ids.append(rid)
            table.lines.append(line)
    except csv.Error as e:
        raise ResultsError(f"results file {path}, line {reader.line_num}: not valid CSV ({e})") from None
    return table


def _show(rid: RowId) -> str:
    return ", ".join(f"{k}={v}" for k, v in rid._asdict().items())


def _sort_key(item: Tuple[RowId, Dict[str, str]]):
    r = item[0]
    return (r.variant, r.dataset, r.labeled_size, r.split_seed, r.train_seed, r.method,
            r.targets, r.suite, r.teacher_topk)


def _write(path: Path, columns: Iterable[str], rows: List[Tuple[RowId, Dict[str, str]]]) -> None:
    """Write rows (with their ids) in the canonical column and row order.

    A row that carries a digest (one read from the file, already checked) keeps it, and must
    still match it with the file's new columns (the digest skips empty cells, so it does); a
    row without one is new, from `record_row` or `migrate_legacy`, and is signed here.
    """
    cols = set(columns) | {c for _, cells in rows for c in cells} | set(ID_COLUMNS)
    cols.discard(DIGEST)
    ordered = ([c for c in CORE_COLUMNS if c in cols] + sorted(cols - set(CORE_COLUMNS))
               + [DIGEST])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(ordered)
    for rid, cells in sorted(rows, key=_sort_key):
        full = {c: cells.get(c, "") for c in ordered}
        full.update({k: _render(v) for k, v in rid._asdict().items()
                     if k not in _ID_DEFAULTS or full[k] != ""})
        digest = _digest(full)
        if cells.get(DIGEST, digest) != digest:  # a checked row changed on its way: a bug here
            raise RuntimeError(f"{path}: row {_show(rid)} no longer matches its digest")
        full[DIGEST] = digest
        w.writerow([full[c] for c in ordered])
    atomic_write(path, buf.getvalue())


def _rewrite(path: Path, change: Callable[[List[Tuple[RowId, Dict[str, str]]]],
                                          List[Tuple[RowId, Dict[str, str]]]]) -> None:
    """Read, change and write `path` under its lock (one writer at a time, none lost)."""
    path = Path(path)
    with locked(path):
        remove_orphans(path)  # every writer of `path` holds this lock: any temporary is dead
        table = _load(path)
        before = list(zip(table.ids, table.rows))
        after = change(before)
        if after != before or not path.exists():
            _write(path, table.columns, after)


# ------------------------------------------------------------------ public API

def record_row(path: Path, row: Mapping) -> None:
    """Add `row` (Python values), replacing a row with the same id. The row is checked as a
    reader would check it (ValueError naming the column), so an invalid row is never written."""
    cells = {k: _render(v) for k, v in row.items() if k != DIGEST}
    cells.setdefault("targets", DEFAULT_TARGETS)
    if "variant" not in cells:
        raise ValueError("a row must say its variant ('smoke' or 'full')")
    rid = _check_cells(cells)
    _rewrite(path, lambda rows: [(i, c) for i, c in rows if i != rid] + [(rid, cells)])


def prune_rows(path: Path, keep_keys: Set[Tuple[RowId, str]], variant: str) -> int:
    """Drop rows of `variant` whose (id, config hash) is not in `keep_keys` (rows of the other
    variant are never touched); returns how many were dropped."""
    return _drop(path, lambda rid, cells: rid.variant == variant
                 and (rid, cells["config_hash"]) not in keep_keys)


def delete_rows(path: Path, ids: Collection[RowId]) -> int:
    """Drop the rows with these ids (e.g. a failed trial's); returns how many were dropped."""
    ids = set(ids)
    return _drop(path, lambda rid, cells: rid in ids)


def _drop(path: Path, doomed: Callable[[RowId, Dict[str, str]], bool]) -> int:
    dropped = []

    def change(rows):
        kept = [(i, c) for i, c in rows if not doomed(i, c)]
        dropped.append(len(rows) - len(kept))
        return kept

    if not Path(path).exists():
        return 0
    _rewrite(path, change)
    return dropped[0]


def read_rows(path: Path, known_methods: Optional[Collection[str]] = None) -> pd.DataFrame:
    """The rows at `path` as a typed frame (empty if the file is absent).

    Id columns are int64 / str, accuracies float in [0, 1], hashes str; method parameters are
    numbers where every value is one. `known_methods`: also reject rows of other methods.
    Raises ResultsError naming the file and line of the first invalid row.
    """
    table = _load(Path(path), known_methods)
    if not table.rows:
        return pd.DataFrame(columns=[c for c in CORE_COLUMNS if c in table.columns or c in ID_COLUMNS])
    cols = [c for c in table.columns if c != DIGEST]
    data = {}
    for c in set(cols) | set(ID_COLUMNS):
        texts = [cells.get(c, "") for cells in table.rows]
        if c in ID_COLUMNS or c in _INT or c in _ACCURACY or c in _FLOAT:
            data[c] = pd.Series([_parse(c, t) for t in texts], dtype=_dtype(c, texts))
        elif c in CORE_COLUMNS:  # text (hashes and shas stay strings: no lost leading zeros)
            data[c] = pd.Series([t if t != "" else None for t in texts], dtype=object)
        else:
            data[c] = _infer(texts)
    order = [c for c in CORE_COLUMNS if c in data] + sorted(set(data) - set(CORE_COLUMNS))
    return pd.DataFrame(data)[order]


def _dtype(col: str, texts: List[str]):
    if col in _INT:
        return "int64" if all(texts) else "float64"  # an empty optional count reads as NaN
    if col in _ACCURACY or col in _FLOAT:
        return "float64"
    return object


def _infer(texts: List[str]) -> pd.Series:
    """A method-parameter column: numbers when every non-empty cell is one, booleans when every
    one is True/False, else text (empty cells: NaN / None)."""
    present = [t for t in texts if t != ""]
    if present and set(present) <= {"True", "False"}:
        return pd.Series([None if t == "" else t == "True" for t in texts], dtype=object)
    try:
        values = [float(t) if t != "" else math.nan for t in texts]
    except ValueError:
        return pd.Series([t if t != "" else None for t in texts], dtype=object)
    if present and all(_INT_TEXT.fullmatch(t) for t in present) and len(present) == len(texts):
        return pd.Series([int(t) for t in texts], dtype="int64")
    return pd.Series(values, dtype="float64")


def done_keys(df: pd.DataFrame) -> Set[Tuple[RowId, str]]:
    """(row id, config_hash) of every row of a frame from `read_rows`, for resuming."""
    return {(ids_of_frame_row(r), str(r["config_hash"])) for r in df.to_dict("records")}


def ids_of_frame_row(r: Mapping) -> RowId:
    return RowId(**{c: r[c] for c in ID_COLUMNS})


def select_variant(df: pd.DataFrame, variant: Optional[str] = None) -> pd.DataFrame:
    """The rows of one variant: `variant`, or by default the one reports show ('full' when the
    frame has any full rows, else 'smoke'), so smoke and full accuracies never mix in a cell."""
    if variant is None:
        variant = "full" if (df["variant"] == "full").any() else "smoke"
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return df[df["variant"] == variant].reset_index(drop=True)


def suites_with_rows(out: Path, suites: Optional[Iterable[str]] = None) -> List[str]:
    """Names of the suites with a runs CSV under `out` (only those in `suites` if given), sorted."""
    runs = Path(out) / "runs"
    names = sorted(p.stem for p in runs.glob("*.csv")) if runs.is_dir() else []
    return names if suites is None else [n for n in names if n in set(suites)]


def read_all_runs(out: Path, suites: Optional[Iterable[str]] = None,
                  known_methods: Optional[Collection[str]] = None
                  ) -> List[Tuple[str, pd.DataFrame]]:
    """(suite, rows) for every runs CSV under `out` (or only `suites`), sorted by suite name,
    each restricted to the variant reports show (`select_variant`)."""
    found = []
    for name in suites_with_rows(out, suites):
        df = read_rows(runs_path(out, name), known_methods)
        found.append((name, select_variant(df) if len(df) else df))
    return found


def check_store(out: Path, known_methods: Collection[str]) -> List[Path]:
    """Validate every runs file under `out` (digests, ids, types, methods in `known_methods`)
    and clear what killed runs left there; returns the files checked.

    A run calls this before any training, so an invalid store stops it before it writes
    anything (ResultsError naming the file and line). Each file is read under its lock, where
    the temporary files of its killed writers are removed; elsewhere under `out` (splits,
    cache, leaderboards), a temporary file is removed when the process on this host that
    wrote it is gone (`fileio.remove_orphans`).
    """
    out = Path(out)
    paths = [runs_path(out, name) for name in suites_with_rows(out)]
    for path in paths:
        with locked(path):
            remove_orphans(path)
            _load(path, known_methods)
    for folder in WRITTEN_FOLDERS:
        if (out / folder).is_dir():
            remove_orphans(out / folder, recursive=True)
    return paths


class LegacyRow(NamedTuple):
    line: int
    id: RowId
    cells: Dict[str, str]


def read_legacy(path: Path, known_methods: Optional[Collection[str]] = None) -> List[LegacyRow]:
    """The rows of a runs file written before rows were signed (no `row_digest`), validated as
    strictly as any other file, with targets 'soft' and variant 'full' where the file lacks
    them (those versions had no hard labels and no smoke rows in their files). ResultsError
    when `path` is absent, already signed, or invalid."""
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"results file {path} does not exist")
    table = _load(path, known_methods, legacy=True)
    return [LegacyRow(line, rid, cells)
            for line, rid, cells in zip(table.lines, table.ids, table.rows)]


def migrate_legacy(path: Path, rows: List[LegacyRow]) -> None:
    """Sign `rows` (from `read_legacy`, after the user has seen them) and write them to `path`,
    under its lock. Refuses if the file changed since `rows` were read (ResultsError)."""
    path = Path(path)
    with locked(path):
        remove_orphans(path)
        if read_legacy(path) != rows:
            raise ResultsError(f"results file {path} changed while it was being reviewed; "
                               f"run the migration again")
        columns = _load(path, legacy=True).columns
        _write(path, columns, [(r.id, r.cells) for r in rows])
