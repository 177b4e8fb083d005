"""End-to-end pipeline behaviour on the tiny digits suite: determinism, resume, --force,
config changes, corrupt caches, missing data, a SIGKILLed run, and the CLI subcommands."""
from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slam_bench.data import DATASETS
from slam_bench.distributed import DistContext
from slam_bench.cli import leaderboard as cli_leaderboard, list as cli_list, run as cli_run
from slam_bench.pipeline import runner
from slam_bench.store import read_rows
from slam_bench.pipeline.suites import get_suite
from slam_bench.pipeline.teacher import CacheError

ID = ["labeled_size", "split_seed", "train_seed", "method"]


def tiny(trials=1, **changes):
    return get_suite("digits").with_sizes(True, trials=trials, labeled_sizes=(20,), **changes)


def cli(module, *argv) -> int:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.main(parser.parse_args(list(argv)))


@pytest.fixture
def count_students(monkeypatch):
    calls = []
    real = runner.train_student

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "train_student", counting)
    return calls


def test_same_seeds_same_accuracies_and_cli_prints_the_leaderboard(tmp_path, capsys):
    assert cli(cli_run, "digits", "--smoke", "--trials", "1", "--labeled", "20",
               "--out", str(tmp_path / "a")) == 0
    printed = capsys.readouterr().out
    assert "| `teacher` |" in printed and "| `slam` |" in printed
    # The one-process DistContext given explicitly is the same run as the CLI's default.
    runner.run_suite(tiny(), tmp_path / "b", smoke=True, ctx=DistContext.single("cpu"))
    a = read_rows(tmp_path / "a" / "runs" / "digits.csv").sort_values(ID).reset_index(drop=True)
    b = read_rows(tmp_path / "b" / "runs" / "digits.csv").sort_values(ID).reset_index(drop=True)
    assert len(a) == len(tiny().methods)
    assert a[ID + ["test_acc", "teacher_test_acc", "config_hash"]].equals(
        b[ID + ["test_acc", "teacher_test_acc", "config_hash"]])
    assert (a.device == "cpu").all() and (b.device == "cpu").all()
    assert (tmp_path / "a" / "leaderboard" / "digits.csv").exists()
    assert (tmp_path / "a" / "plots" / "digits.png").exists()


def test_rerun_resumes_force_recomputes_and_config_change_replaces(tmp_path, count_students):
    suite = tiny()
    n_students = len(suite.methods) - 1
    csv = runner.run_suite(suite, tmp_path, smoke=True)
    assert len(count_students) == n_students
    before = csv.read_bytes()
    runner.run_suite(suite, tmp_path, smoke=True)  # everything recorded: nothing recomputed
    assert len(count_students) == n_students and csv.read_bytes() == before
    runner.run_suite(suite, tmp_path, smoke=True, force=True)
    assert len(count_students) == 2 * n_students
    changed = dataclasses.replace(suite, student_options={"temperature": 2.0},
                                  methods=("teacher", "vanilla", "slam"))
    runner.run_suite(changed, tmp_path, smoke=True)  # only the changed methods rerun
    assert len(count_students) == 2 * n_students + 2
    new = read_rows(csv)
    assert len(new) == len(suite.methods)
    assert float(new.set_index("method").temperature["slam"]) == 2.0


def test_device_and_context_together_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="device must be 'auto' when a DistContext"):
        runner.run_suite(tiny(), tmp_path, smoke=True, device="cpu", ctx=DistContext.single("cpu"))
    assert not (tmp_path / "runs").exists()


def test_corrupt_teacher_cache_is_a_clear_error(tmp_path, capsys):
    suite = tiny()
    csv = runner.run_suite(suite, tmp_path, smoke=True)
    # The trial's teacher (vanilla_av's A + V teacher is cached beside it).
    key = read_rows(csv).set_index("method").teacher_key["teacher"]
    cache = tmp_path / "cache" / "teacher" / f"{key}.pt"
    cache.write_bytes(b"torn file")
    csv.unlink()
    with pytest.raises(CacheError, match=f"{cache}.*--force"):
        runner.run_suite(suite, tmp_path, smoke=True)
    assert cli(cli_run, "digits", "--smoke", "--trials", "1", "--labeled", "20",
               "--out", str(tmp_path)) == 2
    assert "unreadable" in capsys.readouterr().err
    runner.run_suite(suite, tmp_path, smoke=True, force=True)  # --force recomputes it
    assert len(read_rows(csv)) == len(suite.methods)


def test_missing_dataset_package_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    entry = DATASETS["digits"]
    monkeypatch.setitem(DATASETS, "digits", dataclasses.replace(
        entry, check=lambda root: "the Python package 'scikit-learn' is not installed"))
    assert cli(cli_run, "digits", "--smoke", "--out", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "unavailable" in err and "scikit-learn" in err and "Traceback" not in err
    assert cli(cli_list) == 0
    assert "digits" in capsys.readouterr().out.split("MISSING")[0].splitlines()[-1]


def test_cli_errors_and_leaderboard_regeneration(tmp_path, capsys):
    assert cli(cli_run, "nope", "--out", str(tmp_path)) == 2
    assert "suite must be one of" in capsys.readouterr().err
    assert cli(cli_run, "digits", "--trials", "0", "--out", str(tmp_path)) == 2
    assert cli(cli_leaderboard, "--out", str(tmp_path)) == 2  # no rows yet
    runner.run_suite(tiny(), tmp_path, smoke=True)
    assert cli(cli_leaderboard, "--out", str(tmp_path)) == 0
    board = tmp_path / "leaderboard" / "digits.csv"
    first = board.read_bytes()
    assert cli(cli_leaderboard, "--out", str(tmp_path)) == 0 and board.read_bytes() == first


DRIVER = ("import argparse, sys; from slam_bench.cli import run as cli_run; "
          "p = argparse.ArgumentParser(); cli_run.add_arguments(p); "
          "sys.exit(cli_run.main(p.parse_args(sys.argv[1:])))")


def test_sigkill_loses_at_most_the_trial_in_flight_and_rerun_completes(tmp_path, count_students):
    args = ["digits", "--smoke", "--trials", "3", "--labeled", "20", "--out", str(tmp_path)]
    csv = tmp_path / "runs" / "digits.csv"
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONHASHSEED": "0"})
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if csv.exists() and len(read_rows(csv)) >= 3:  # mid-run: some rows recorded
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    killed = read_rows(csv)  # parseable whatever the moment of the kill
    suite = get_suite("digits").with_sizes(True, trials=3, labeled_sizes=(20,))
    total = len(runner.plan(suite, True)) * len(suite.methods)
    assert 3 <= len(killed) < total
    runner.run_suite(suite, tmp_path, smoke=True)
    done = read_rows(csv)
    assert len(done) == total and not done.duplicated(ID).any()
    # Rows recorded before the kill were kept, not recomputed; only the rest were trained.
    kept = done.merge(killed[ID + ["wall_s"]], on=ID, suffixes=("", "_killed"))
    assert len(kept) == len(killed) and (kept.wall_s == kept.wall_s_killed).all()
    missing_students = int((done.method != "teacher").sum() - (killed.method != "teacher").sum())
    assert len(count_students) == missing_students
