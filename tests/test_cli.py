"""The `slam-bench` command line fails clearly: import errors are not hidden, bad --out and
--data-root are one-line errors with exit status 2 before any work, help speaks to users."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from slam_bench import cli
from slam_bench.cli import main
from slam_bench.pipeline import runner

ROOT = Path(__file__).resolve().parents[1]
MINE = ("run", "list", "leaderboard")  # `profile` is checked with the profiling code


def test_a_command_that_cannot_be_imported_is_an_error_not_a_missing_command(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "run", ("slam_bench.no_such_module", "run"))
    with pytest.raises(ModuleNotFoundError, match="slam_bench.no_such_module"):
        main(["list"])


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a run gets as far as loading its dataset."""
    def refuse(*args, **kwargs):
        raise AssertionError("the run started working before checking its arguments")

    monkeypatch.setattr(runner, "load_dataset", refuse)


def _unwritable(tmp_path: Path) -> Path:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    # root ignores permission bits; /proc refuses new files to everyone.
    return ro if not os.access(ro, os.W_OK) else Path("/proc/self")


@pytest.mark.parametrize("kind", ["file", "under a file", "read-only"])
def test_a_bad_out_is_one_line_and_exit_2_before_any_work(tmp_path, kind, no_work, capsys):
    (tmp_path / "f").write_text("x")
    out = {"file": tmp_path / "f", "under a file": tmp_path / "f" / "sub",
           "read-only": _unwritable(tmp_path)}[kind]
    try:
        assert main(["run", "digits", "--smoke", "--out", str(out)]) == 2
    finally:
        (tmp_path / "ro").exists() and (tmp_path / "ro").chmod(0o700)
    err = capsys.readouterr().err
    assert err.startswith("slam-bench run: error: --out") and len(err.strip().splitlines()) == 1, err


def test_leaderboard_out_that_is_a_file_is_exit_2(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert main(["leaderboard", "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert f"--out '{tmp_path / 'f'}' is a file" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [["run", "digits", "--smoke"], ["list"]])
def test_a_data_root_that_does_not_exist_is_exit_2_even_for_embedded_suites(tmp_path, command,
                                                                            no_work, capsys):
    missing = tmp_path / "nowhere"
    argv = command + ["--data-root", str(missing)]
    if command[0] == "run":
        argv += ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--data-root '{missing}' does not exist" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [[]] + [[c] for c in MINE])
def test_help_speaks_to_users(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv + ["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert not re.search(r"\bissue\s*#?\d+", text, re.I), text
    assert not re.search(r"\b(module|package|subcommand)\b", text), text  # words for developers
    for path in re.findall(r"[\w.-]+/[\w./<>-]*", text):  # every path named is in the repository
        if not re.fullmatch(r"[A-Z]+/[A-Z]+", path):  # a metavar such as I/N
            assert (ROOT / path.split("/")[0]).exists(), path


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_an_invalid_results_file_stops_a_run_before_any_work(tmp_path, force, no_work, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "digits.csv").write_text("suite,dataset,labeled_size,method,split_seed,train_seed,"
                                     "config_hash,test_acc\ndigits,digits,ten,slam,0,1000,h,0.5\n")
    assert main(["run", "digits", "--smoke", "--out", str(tmp_path)] + force) == 2
    err = capsys.readouterr().err
    assert f"{runs / 'digits.csv'}, line 2: labeled_size must be an integer" in err
