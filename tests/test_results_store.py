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

from slam_bench import store as R
from slam_bench.fileio import atomic_write
from slam_bench.store import ResultsError, RowId, read_rows, record_row, row_id

ROOT = Path(__file__).resolve().parents[1]


def _row(method="slam", acc=0.5, split=0, n=10, variant="full", **extra):
    return {"suite": "s", "variant": variant, "dataset": "d", "labeled_size": n,
            "split_seed": split, "train_seed": 1000 + split, "method": method,
            "config_hash": "0a1b2c", "test_acc": acc, **extra}


def _lines(path: Path) -> list:
    return path.read_text().splitlines()


def _signed(df: pd.DataFrame) -> str:
    """`df` (cells as text) as a runs file whose every row carries a valid digest: what only a
    bug in the store could write, to test the checks that come after the digest's."""
    df = df.drop(columns=[R.DIGEST], errors="ignore")
    digests = [R._digest(dict(zip(df.columns, row))) for row in df.itertuples(index=False)]
    return df.assign(**{R.DIGEST: digests}).to_csv(index=False)


def test_the_identity_is_one_typed_tuple_with_targets_and_variant():
    assert R.ID_COLUMNS == ("suite", "dataset", "labeled_size", "method", "targets",
                            "split_seed", "train_seed", "variant", "teacher_topk")
    rid = row_id(_row())
    # targets defaults to soft, teacher_topk to the dense teacher
    assert rid == RowId("s", "d", 10, "slam", "soft", 0, 1000, "full", "dense")
    assert row_id(_row(targets="hard")).targets == "hard"
    assert row_id(_row(teacher_topk=20)).teacher_topk == "20"
    for bad, match in ((dict(labeled_size=float("nan")), "labeled_size"),
                       (dict(labeled_size="ten"), "labeled_size"),
                       (dict(split_seed=1.5), "split_seed"),
                       (dict(variant="medium"), "variant"),
                       (dict(targets="soft-ish"), "targets"),
                       (dict(teacher_topk=0), "teacher_topk"),
                       (dict(teacher_topk="top5"), "teacher_topk")):
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
    p.write_text(_signed(df))  # a valid digest: the typed parse must catch it
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
    df = pd.read_csv(p, dtype=str, keep_default_na=False)
    df = edit(df.assign(test_acc=df.test_acc.astype(float)))
    atomic_write(p, _signed(df.astype(str)))
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
    from slam_bench.store import record_row
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


# ------------------------------------------------------------------ no row is laundered

def _two_rows(tmp_path: Path) -> Path:
    p = R.runs_path(tmp_path / "out", "s")
    record_row(p, _row(split=0, acc=0.5))
    record_row(p, _row(method="vanilla", split=0, acc=0.4))
    return p


def _legacy(p: Path, edit=lambda df: df) -> bytes:
    """Drop the digests (and the targets/variant columns, like the oldest files) and edit."""
    df = pd.read_csv(p, dtype=str, keep_default_na=False)
    df = edit(df.drop(columns=[R.DIGEST, "targets", "variant"]))
    p.write_text(df.to_csv(index=False))
    return p.read_bytes()


def test_a_file_without_digests_is_an_error_and_no_run_or_leaderboard_signs_it(tmp_path, capsys):
    from slam_bench.cli import main

    p = _two_rows(tmp_path)
    # The attack of issue 18: drop the digests, raise slam's accuracy, let a later write re-sign.
    before = _legacy(p, lambda df: df.assign(test_acc=["0.99" if m == "slam" else a
                                                         for m, a in zip(df.method, df.test_acc)]))
    with pytest.raises(ResultsError, match=rf"{p} has no row_digest column.*slam-bench migrate"):
        read_rows(p)
    with pytest.raises(ResultsError, match="no row_digest"):
        record_row(p, _row(split=1))
    assert main(["leaderboard", "--out", str(tmp_path / "out")]) == 2
    assert main(["run", "digits", "--smoke", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all("no row_digest column" in line for line in err), err
    assert p.read_bytes() == before
    assert not (tmp_path / "out" / "leaderboard").exists()


def test_a_rewrite_keeps_the_digests_it_checked_and_signs_only_the_new_row(tmp_path):
    p = _two_rows(tmp_path)
    digests = dict(zip(pd.read_csv(p, dtype=str).method, pd.read_csv(p, dtype=str)[R.DIGEST]))
    record_row(p, _row(split=1, acc=0.7, k=3))  # adds a column: the old rows' cells there are empty
    after = pd.read_csv(p, dtype=str, keep_default_na=False)
    kept = after[after.split_seed == "0"]
    assert dict(zip(kept.method, kept[R.DIGEST])) == digests
    # An edited row is refused on the next write: the file stays as it was.
    text = p.read_text().replace(",0.7,", ",0.8,")
    p.write_text(text)
    with pytest.raises(ResultsError, match="line 4: the row does not match its row_digest"):
        record_row(p, _row(split=2))
    assert p.read_text() == text


def test_migrate_shows_the_rows_then_signs_them_once_with_yes(tmp_path, capsys):
    from slam_bench.cli import main

    p = _two_rows(tmp_path)
    legacy = _legacy(p)
    assert main(["migrate", str(p)]) == 0  # a dry run
    out = capsys.readouterr().out
    assert "2 rows without a row_digest; the columns targets, variant will be added" in out
    assert "line 2: full d labeled=10 split=0 train=1000 slam/soft: test_acc=0.5" in out
    assert "line 3: full d labeled=10 split=0 train=1000 vanilla/soft: test_acc=0.4" in out
    assert "dry run: nothing written" in out and p.read_bytes() == legacy
    assert main(["migrate", str(p), "--yes"]) == 0
    assert "signed 2 rows" in capsys.readouterr().out
    df = read_rows(p)
    assert sorted(zip(df.method, df.test_acc, df.targets, df.variant)) == [
        ("slam", 0.5, "soft", "full"), ("vanilla", 0.4, "soft", "full")]
    assert main(["migrate", str(p), "--yes"]) == 2
    err = capsys.readouterr().err
    assert f"{p} already has a row_digest column" in err and len(err.splitlines()) == 1


def test_migrate_validates_like_any_read(tmp_path, capsys):
    from slam_bench.cli import main

    p = _two_rows(tmp_path)
    legacy = _legacy(p, lambda df: df.assign(method=["slamm", "vanilla"]))
    assert main(["migrate", str(p), "--yes"]) == 2
    assert "line 2: unknown method 'slamm'" in capsys.readouterr().err
    assert p.read_bytes() == legacy
    assert main(["migrate", str(tmp_path / "none.csv")]) == 2


def test_a_byte_order_mark_is_read_and_not_written_back(tmp_path):
    p = _two_rows(tmp_path)
    p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())
    assert sorted(read_rows(p).method) == ["slam", "vanilla"]
    record_row(p, _row(split=1))
    assert p.read_bytes().startswith(b"suite,") and len(read_rows(p)) == 3


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def test_temporaries_of_killed_writers_are_removed_under_the_lock(tmp_path):
    from slam_bench.fileio import HOST

    out = tmp_path / "out"
    p = _two_rows(tmp_path)
    dead, alive = _dead_pid(), os.getppid()
    mine = [p.parent / f".s.csv.{HOST}.{dead}.0123abcd.tmp",
            p.parent / f".s.csv.otherhost.{alive}.0123abcd.tmp",  # the lock says it is dead
            p.parent / f".s.csv.{dead}.0123abcd.tmp"]  # a name from before the host was in it
    cache = out / "cache" / "teacher"
    cache.mkdir(parents=True)
    orphan = cache / f".k.pt.{HOST}.{dead}.89abcdef.tmp"
    running = cache / f".k.pt.{HOST}.{alive}.89abcdef.tmp"  # a live writer's: kept
    remote = cache / f".k.pt.otherhost.{dead}.89abcdef.tmp"  # another host's: cannot know
    unrelated = p.parent / ".notes.tmp"
    for f in mine + [orphan, running, remote, unrelated]:
        f.write_text("partial")
    record_row(p, _row(split=1))
    assert not any(f.exists() for f in mine) and orphan.exists()
    R.check_store(out, {"slam", "vanilla"})
    assert not orphan.exists() and running.exists() and remote.exists() and unrelated.exists()
