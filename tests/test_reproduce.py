"""`slam-bench reproduce` recomputes recorded rows and says, row by row and cell by cell,
whether they are reproduced (exit 0) or not (exit 1); `run --methods` runs a subset of a
suite's methods; rows record the versions that computed them; trial lines estimate the time
left."""
from __future__ import annotations

import importlib.metadata
import math

import pytest

from slam_bench import store
from slam_bench.cli import main
from slam_bench.cli.reproduce import compare_rows
from slam_bench.pipeline import runner
from slam_bench.provenance import git_sha

METHODS = "teacher,vanilla,slam"
SMOKE = ["digits", "--smoke", "--trials", "1", "--methods", METHODS]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("recorded")
    assert main(["run", *SMOKE, "--out", str(out)]) == 0
    return out


def test_run_methods_runs_only_those_and_rows_record_their_versions(recorded):
    df = store.read_rows(store.runs_path(recorded, "digits"))
    assert sorted(df.method) == ["slam", "teacher", "vanilla"]
    assert set(df.slam_bench_version) == {importlib.metadata.version("slam-bench")}
    assert set(df.torch_version) == {importlib.metadata.version("torch")}
    assert set(df.triton_version) == {importlib.metadata.version("triton")}
    assert set(df.git_sha) == {git_sha()} and git_sha() not in ("", "unknown")


def test_recorded_rows_are_reproduced_bit_for_bit(recorded, capsys):
    assert main(["reproduce", *SMOKE, "--results", str(recorded)]) == 0
    out = capsys.readouterr().out
    for method in METHODS.split(","):
        assert f"ok   digits_30 split=0 train=1000 {method}: identical" in out
    assert "digits_30: 3 of 3 rows reproduced" in out
    assert out.rstrip().endswith("digits: 3 of 3 recorded rows reproduced")


def test_rows_computed_otherwise_are_not_reproduced(tmp_path, monkeypatch, capsys):
    # Rows the pipeline computed and signed, with the students seeded otherwise than their
    # rows say: every check of the store passes, only recomputing them tells.
    train = runner._run_student
    monkeypatch.setattr(runner, "_run_student", lambda *a: train(*a[:-1], a[-1] + 17))
    assert main(["run", *SMOKE, "--out", str(tmp_path)]) == 0
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["reproduce", *SMOKE, "--results", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "ok   digits_30 split=0 train=1000 teacher: identical" in out
    assert "DIFF digits_30 split=0 train=1000 vanilla: " in out and "test_acc" in out
    assert "digits: 1 of 3 recorded rows reproduced; 2 not" in out


def test_reproduce_refuses_an_edited_row_and_an_empty_choice(recorded, tmp_path, capsys):
    csv = store.runs_path(recorded, "digits")
    edited = store.runs_path(tmp_path, "digits")
    edited.parent.mkdir(parents=True)
    lines = csv.read_text().splitlines()
    last = lines[-1].split(",")
    last[lines[0].split(",").index("test_acc")] = "0.99"
    edited.write_text("\n".join(lines[:-1] + [",".join(last)]) + "\n")
    assert main(["reproduce", *SMOKE, "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{edited}, line {len(lines)}: the row does not match its row_digest" in err
    assert main(["reproduce", "digits", "--trials", "1", "--results", str(recorded)]) == 2
    assert "holds no full rows of the chosen trials" in capsys.readouterr().err


def test_compare_rows_is_exact_or_within_the_tolerance():
    row = {"config_hash": "h", "test_acc": 0.5, "k": 3, "rule": "auto", "wall_s": 1.0,
           "alpha": math.nan}
    assert compare_rows(row, {**row, "wall_s": 9.0}, 0.0) == []
    assert compare_rows(row, {**row, "test_acc": 0.5001}, 0.0) == ["test_acc 0.5 -> 0.5001"]
    assert compare_rows(row, {**row, "test_acc": 0.5001}, 0.001) == []
    assert compare_rows(row, {**row, "rule": "fixed"}, 1.0) == ["rule auto -> fixed"]
    assert compare_rows(row, {**row, "alpha": 0.1}, 1.0) == ["alpha (empty) -> 0.1"]
    # A column the recorded file lacks (added to the rows later) is not a difference; one it
    # has is compared, also when the recomputation lacks it.
    assert compare_rows(row, {**row, "teacher_cache_bytes": 64}, 0.0) == []
    less = {c: v for c, v in row.items() if c != "k"}
    assert compare_rows(row, less, 0.0) == ["k 3 -> (empty)"]
    assert compare_rows(row, {**row, "config_hash": "g", "test_acc": 0.1}, 1.0)[0].startswith(
        "config_hash h -> g (the configuration changed")


def test_trial_lines_estimate_the_time_left():
    lines = []
    report = runner._Report("s", "full", 4, 4, None, False, lines.append)
    report.skipped()
    report.finished(10, 1, 1001, {"slam": 0.5}, 30.0)
    report.finished(10, 2, 1002, {"slam": 0.5}, 90.0)
    report.finished(10, 3, 1003, {"slam": 0.5}, 60.0)
    assert lines[1].endswith("(30.0 s, about 60 s left)")  # 2 left at 30 s each
    assert lines[2].endswith("(90.0 s, about 60 s left)")  # 1 left at the mean, 60 s
    assert lines[3].endswith("(60.0 s)")  # the last
    assert runner._duration(5400) == "1 h 30 min" and runner._duration(600) == "10 min"


@pytest.mark.parametrize("inside_a_repository", [False, True])
def test_a_package_outside_its_checkout_records_no_commit(tmp_path, inside_a_repository):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import slam_bench.provenance as prov

    root = tmp_path / "site"
    (root / "slam_bench").mkdir(parents=True)
    shutil.copy(prov.__file__, root / "slam_bench" / "provenance.py")
    (root / "slam_bench" / "__init__.py").write_text("")
    if inside_a_repository:  # e.g. a venv inside some other project's checkout
        subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
        subprocess.run(["git", "-C", str(tmp_path), "add", "."], check=True)
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t",
                        "commit", "-qm", "x"], check=True)
    proc = subprocess.run([sys.executable, "-c", "from slam_bench.provenance import git_sha; "
                           "print(git_sha())"], capture_output=True, text=True, cwd=tmp_path,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, check=True)
    assert proc.stdout.strip() == "none"
    assert Path(prov.__file__).parent.name == "slam_bench"


def test_dirty_means_the_code_changed_not_the_results(tmp_path):
    """A benchmark writes results/ suite after suite: those rows must not make the checkout
    "-dirty" for the suites that follow; a change to tracked code must."""
    import shutil
    import subprocess
    import sys

    import slam_bench.provenance as prov

    (tmp_path / "slam_bench").mkdir()
    shutil.copy(prov.__file__, tmp_path / "slam_bench" / "provenance.py")
    (tmp_path / "slam_bench" / "__init__.py").write_text("")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "digits.csv").write_text("a\n1\n")
    git = ["git", "-C", str(tmp_path)]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"],
                   check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()

    def sha():
        return subprocess.run([sys.executable, "-c", "from slam_bench.provenance import "
                               "git_sha; print(git_sha())"], capture_output=True, text=True,
                              cwd=tmp_path, env={"PYTHONPATH": str(tmp_path),
                                                 "PATH": "/usr/bin:/bin"},
                              check=True).stdout.strip()

    assert sha() == head[:12]
    (tmp_path / "results" / "digits.csv").write_text("a\n1\n2\n")  # a run's new row
    (tmp_path / "results" / "new.csv").write_text("a\n")  # untracked output
    assert sha() == head[:12]
    with open(tmp_path / "slam_bench" / "__init__.py", "a") as f:
        f.write("# edited\n")
    assert sha() == head[:12] + "-dirty"
