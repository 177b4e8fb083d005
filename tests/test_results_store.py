"""The results store of record (`<out>/runs/<suite>.csv`): typed row identity, smoke rows kept
apart from full rows, no row lost by concurrent writers whatever their TMPDIR, rows complete
or absent, strict validation on read, and files written with the user's umask."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from slam_bench.fileio import atomic_write
from slam_bench.pipeline import results as R
from slam_bench.pipeline.results import ResultsError, RowId, read_rows, record_row, row_id

ROOT = Path(__file__).resolve().parents[1]


def _row(method="slam", acc=0.5, split=0, n=10, variant="full", **extra):
    return {"suite": "s", "variant": variant, "dataset": "d", "labeled_size": n,
            "split_seed": split, "train_seed": 1000 + split, "method": method,
            "config_hash": "0a1b2c", "test_acc": acc, **extra}


def _lines(path: Path) -> list:
    return path.read_text().splitlines()


def test_the_identity_is_one_typed_tuple_with_targets_and_variant():
    assert R.ID_COLUMNS == ("suite", "dataset", "labeled_size", "method", "targets",
                            "split_seed", "train_seed", "variant")
    rid = row_id(_row())
    assert rid == RowId("s", "d", 10, "slam", "soft", 0, 1000, "full")  # targets defaults to soft
    assert row_id(_row(targets="hard")).targets == "hard"
    for bad, match in ((dict(labeled_size=float("nan")), "labeled_size"),
                       (dict(labeled_size="ten"), "labeled_size"),
                       (dict(split_seed=1.5), "split_seed"),
                       (dict(variant="medium"), "variant"),
                       (dict(targets="soft-ish"), "targets")):
        with pytest.raises(ValueError, match=match):
            row_id({**_row(), **bad})


@pytest.mark.parametrize("column, value", [("labeled_size", ""), ("labeled_size", "nan"),
                                           ("split_seed", "one"), ("labeled_size", "10.0")])
def test_text_or_nan_in_an_id_column_is_an_error_naming_file_and_line(tmp_path, column, value):
    p = tmp_path / "runs" / "s.csv"
    record_row(p, _row(split=0))
    record_row(p, _row(split=1))
    df = pd.read_csv(p, dtype=str, keep_default_na=False)
    df.loc[1, column] = value
    df = df.drop(columns=[R.DIGEST])  # an old file without digests: the typed parse must catch it
    p.write_text(df.to_csv(index=False))
    with pytest.raises(ResultsError, match=rf"{p}, line 3: {column}"):
        read_rows(p)


def test_ids_are_typed_so_a_rerun_matches_rather_than_duplicates(tmp_path):
    p = tmp_path / "s.csv"
    for split in (0, 1):
        record_row(p, _row(split=split))
    df = read_rows(p)
    assert df["labeled_size"].dtype == "int64" and df["split_seed"].dtype == "int64"
    # The ids read back equal the ids a new run builds from Python ints.
    assert R.done_keys(df) == {(row_id(_row(split=s)), "0a1b2c") for s in (0, 1)}
    record_row(p, _row(split=1, acc=0.75))
    assert len(read_rows(p)) == 2


def test_method_parameters_read_back_with_their_types(tmp_path):
    p = tmp_path / "s.csv"
    record_row(p, _row(split=0, k=3, alpha=0.25, hidden=(64, 32), hard=True))
    record_row(p, _row(split=1, method="vanilla", hard=False))
    df = read_rows(p).set_index("method")
    assert df.k["slam"] == 3 and pd.isna(df.k["vanilla"]) and df.alpha["slam"] == 0.25
    assert df.hidden["slam"] == "64x32" and df.hard["slam"] is True and df.hard["vanilla"] is False
    assert df.config_hash["slam"] == "0a1b2c"  # hashes stay text


def test_a_smoke_row_never_replaces_a_full_row_and_reports_show_one_variant(tmp_path):
    out = tmp_path / "out"
    p = R.runs_path(out, "s")
    for split in range(3):
        record_row(p, _row(method="teacher", acc=0.8, split=split))
    record_row(p, _row(method="teacher", acc=0.1, split=0, variant="smoke"))
    df = read_rows(p)
    assert sorted(df["variant"]) == ["full"] * 3 + ["smoke"]
    ((suite, shown),) = R.read_all_runs(out)
    assert set(shown["variant"]) == {"full"} and len(shown) == 3
    assert list(R.select_variant(df, "smoke")["test_acc"]) == [0.1]


def test_a_cut_row_is_detected_not_kept_with_nan(tmp_path):
    p = tmp_path / "s.csv"
    record_row(p, _row(split=0))
    record_row(p, _row(split=1))
    whole = p.read_text()
    last = whole.splitlines()[-1]
    header = whole.splitlines()[0].split(",")
    # Cut right after config_hash (the case seen in the wild), and inside the last cell.
    after_hash = ",".join(last.split(",")[:header.index("config_hash") + 1]) + "\n"
    for cut in (after_hash, last[:-3] + "\n"):
        p.write_text(whole[:whole.index(last)] + cut)
        with pytest.raises(ResultsError, match=rf"{p}, line 3: .*(cut|digest)"):
            read_rows(p)


def test_a_row_altered_after_writing_fails_its_digest(tmp_path):
    p = tmp_path / "s.csv"
    record_row(p, _row(acc=0.5))
    p.write_text(p.read_text().replace(",0.5,", ",0.9,"))
    with pytest.raises(ResultsError, match="row_digest"):
        read_rows(p)


def test_an_invalid_row_is_never_written(tmp_path):
    p = tmp_path / "s.csv"
    for bad in (dict(test_acc=float("nan")), dict(test_acc=1.5), dict(labeled_size="x")):
        with pytest.raises(ValueError):
            record_row(p, _row(**bad))
    assert not p.exists()


@pytest.mark.parametrize("edit, problem", [
    (lambda df: df.assign(test_acc=df.test_acc * 100), r"line 2: test_acc must be an accuracy in \[0, 1\]"),
    (lambda df: df.assign(wall_s="fast"), "line 2: wall_s must be a number"),
    (lambda df: df.assign(method=["slam", "ghost"]), "line 3: unknown method 'ghost'"),
    (lambda df: df.assign(split_seed=0, train_seed=1000), "line 3: the same row id as line 2"),
])
def test_leaderboard_validates_what_it_reads(tmp_path, edit, problem, capsys):
    from slam_bench.cli import main

    out = tmp_path / "out"
    p = R.runs_path(out, "s")
    record_row(p, _row(split=0, wall_s=1.0))
    record_row(p, _row(split=1, wall_s=1.0))
    df = pd.read_csv(p, dtype={"config_hash": str}).drop(columns=[R.DIGEST])
    atomic_write(p, edit(df).to_csv(index=False))
    assert main(["leaderboard", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(p) in err and re.search(problem, err), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (out / "leaderboard").exists()


def test_files_are_written_with_the_users_umask(tmp_path):
    old = os.umask(0o027)
    try:
        record_row(tmp_path / "runs" / "s.csv", _row())
        atomic_write(tmp_path / "b.bin", b"x")
    finally:
        os.umask(old)
    for f in (tmp_path / "runs" / "s.csv", tmp_path / "b.bin"):
        assert f.stat().st_mode & 0o777 == 0o640, oct(f.stat().st_mode)


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from slam_bench.pipeline.results import record_row
    path, split, go = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    (go.parent / f"ready{split}").touch()
    while not go.exists():
        time.sleep(0.001)
    for n in range(40):
        record_row(path, {"suite": "s", "variant": "full", "dataset": "d", "labeled_size": n,
                          "split_seed": split, "train_seed": 1000 + split, "method": "slam",
                          "config_hash": "h", "test_acc": 0.5})
""")


def test_two_processes_with_different_tmpdirs_lose_no_rows(tmp_path):
    path, go = tmp_path / "out" / "runs" / "s.csv", tmp_path / "go"
    procs = []
    for split in (0, 1):
        tmp = tmp_path / f"tmp{split}"
        tmp.mkdir()
        env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)}
        procs.append(subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(split), str(go)],
                                      env=env, stderr=subprocess.PIPE))
    while not all((tmp_path / f"ready{s}").exists() for s in (0, 1)):  # both imported
        assert all(p.poll() is None for p in procs), [p.stderr.read() for p in procs]
        time.sleep(0.01)
    go.touch()  # both start writing at once
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()[-2000:]
    assert len(read_rows(path)) == 80
