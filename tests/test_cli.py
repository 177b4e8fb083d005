"""The `slam-bench` command line fails clearly: import errors are not hidden, bad --out and
--data-root are one-line errors with exit status 2 before any work, help speaks to users."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
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


def _signed_file(path: Path, header: str, *rows: str) -> bytes:
    """A runs file whose rows carry valid digests (what only a bug could record): the checks
    after the digest's must still refuse it."""
    from slam_bench.store import DIGEST, _digest

    cols = header.split(",")
    lines = [f"{header},{DIGEST}"] + [f"{r},{_digest(dict(zip(cols, r.split(','))))}" for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path.read_bytes()


HEADER = "suite,variant,dataset,labeled_size,method,targets,split_seed,train_seed,config_hash,test_acc"


@pytest.mark.parametrize("force", [[], ["--recompute"]])
@pytest.mark.parametrize("row, problem", [
    ("digits,smoke,digits,ten,slam,soft,0,1000,h,0.5", "line 2: labeled_size must be an integer"),
    # A method the registry does not know (issue 18: run used to train first, then fail).
    ("digits,smoke,digits,30,slamm,soft,0,1000,h,0.5", "line 2: unknown method 'slamm'"),
])
def test_an_invalid_results_file_stops_a_run_before_any_work(tmp_path, force, row, problem,
                                                            no_work, capsys):
    before = _signed_file(tmp_path / "runs" / "digits.csv", HEADER, row)
    assert main(["run", "digits", "--smoke", "--out", str(tmp_path)] + force) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'runs' / 'digits.csv'}, {problem}" in err and len(err.splitlines()) == 1
    assert (tmp_path / "runs" / "digits.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.rglob("*")) == [".digits.csv.lock", "digits.csv",
                                                          "runs"]


def test_every_runs_file_of_the_store_is_checked_not_only_the_suites(tmp_path, no_work, capsys):
    row = "mnist,full,mnist,10,ghost,soft,0,1000,h,0.5"
    _signed_file(tmp_path / "runs" / "mnist.csv", HEADER, row)
    assert main(["run", "digits", "--smoke", "--out", str(tmp_path)]) == 2
    assert "mnist.csv, line 2: unknown method 'ghost'" in capsys.readouterr().err


# ------------------------------------------------------------------ answers at once

def _cli(*argv, env=None, **kw) -> subprocess.CompletedProcess:
    """`python -X importtime -m slam_bench ARGV` (importtime lists every module imported)."""
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "slam_bench", *argv],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, **(env or {})}, **kw)


def _imported(stderr: str) -> set:
    return {m.group(1).strip() for m in re.finditer(r"^import time:.*\|\s*([\w.]+)$", stderr, re.M)}


@pytest.mark.parametrize("argv, code", [
    (["--help"], 0), (["run", "--help"], 0), (["leaderboard", "--help"], 0),
    (["list", "--help"], 0), (["profile", "--help"], 0), (["reproduce", "--help"], 0),
    (["migrate", "--help"], 0), (["list"], 0),
    (["run", "digitz"], 2), (["run", "digits", "--methods", "slam,slamm"], 2),
    (["run", "digits", "--methods", "slam,slam"], 2), (["run", "digits", "--trials", "0"], 2),
    (["run", "digits", "--data-root", "/no/such/folder"], 2), (["nosuch"], 2),
    (["leaderboard", "--out", "/no/such/folder"], 2),
    (["reproduce", "digits", "--results", "/no/such/folder"], 2),
    (["migrate", "/no/such/file.csv"], 2),
])
def test_help_and_usage_errors_import_no_torch(argv, code):
    proc = _cli(*argv)
    assert proc.returncode == code, proc.stderr[-2000:]
    imported = _imported(proc.stderr)
    assert "slam_bench.cli" in imported  # the listing is read right
    assert not {m for m in imported if m.split(".")[0] in ("torch", "triton")}, argv
    if code == 2:
        assert "Traceback" not in proc.stderr
        assert [line for line in proc.stderr.splitlines()
                if not line.startswith(("import time:", "usage:", " "))][-1].startswith(
            ("slam-bench", "slam-bench:")), proc.stderr


def test_python_m_slam_bench_is_the_same_cli(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert _cli("--help").stdout == capsys.readouterr().out


def test_ctrl_c_while_the_work_is_imported_is_one_line_and_exit_130(tmp_path):
    # A Ctrl-C that lands while torch is being imported, at the same place every time.
    driver = textwrap.dedent("""
        import sys
        class Interrupt:
            def find_spec(self, name, path=None, target=None):
                if name == "torch":
                    raise KeyboardInterrupt
        sys.meta_path.insert(0, Interrupt())
        from slam_bench.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    proc = subprocess.run([sys.executable, "-c", driver, "run", "digits", "--smoke", "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.splitlines() == ["slam-bench run: interrupted; no rows were recorded; "
                                        "rerun the same command to resume (recorded trials are "
                                        "skipped)"]


def test_exit_statuses_are_documented_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for status in ("0 done", "1 some trials failed", "2 a usage or input error",
                   "3 a file could not be read or written", "130 interrupted"):
        assert status in text


# ------------------------------------------------------------------ an I/O failure mid-run

LIMITED = textwrap.dedent("""
    import resource, sys
    # Like a quota or a full disk: no file may grow beyond LIMIT bytes (EFBIG on write).
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from slam_bench.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def test_a_write_that_fails_mid_run_is_one_line_exit_3_and_keeps_every_row(tmp_path):
    out = tmp_path / "out"
    base = ["run", "digits", "--smoke", "--trials", "1", "--out", str(out)]
    assert main(base + ["--methods", "teacher,vanilla"]) == 0
    csv = out / "runs" / "digits.csv"
    before = csv.read_bytes()
    # The teacher is cached and the split is rewritten at its size: the first file to grow
    # past the limit is the runs file, when the slam row is added.
    limit = max(f.stat().st_size for f in (out / "runs").rglob("*") if f.is_file()) + 64
    proc = subprocess.run([sys.executable, "-c", LIMITED, str(limit), *base, "--methods",
                           "teacher,vanilla,slam"], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert proc.returncode == 3, proc.stderr[-3000:]
    err = proc.stderr.splitlines()
    assert err == [f"slam-bench run: error: {csv}: File too large; 2 smoke rows are kept in "
                   f"{csv}"], proc.stderr
    assert csv.read_bytes() == before
    assert not list(csv.parent.glob(".digits.csv.*.tmp"))
