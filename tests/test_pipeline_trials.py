"""The trial loop's bookkeeping on the tiny digits suite: a diverging trial records nothing,
the teacher cache is checksummed, smoke and full rows coexist, shards partition the plan (and
two concurrent shard processes give the leaderboard of one run), progress lines, Ctrl-C."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from slam_bench.cli import main as cli_main
from slam_bench.pipeline import methods as M
from slam_bench.pipeline import runner
from slam_bench.store import read_rows
from slam_bench.pipeline.suites import get_suite
from slam_bench.pipeline.teacher import CacheError, TeacherOutputs
from slam_bench.pipeline.train import NonFiniteLoss, train_supervised
from slam_bench.report.regenerate import regenerate

ROOT = Path(__file__).resolve().parents[1]


def tiny(trials=1, smoke=True, **changes):
    return get_suite("digits").with_sizes(smoke, trials=trials, labeled_sizes=(20,), **changes)


# ------------------------------------------------------------------ non-finite losses

def test_a_diverging_trial_records_nothing_and_the_others_are_kept(tmp_path, monkeypatch):
    real = M.METHODS["taylor_ce"]

    def loss(b):  # NaN in the trial with train seed 1001 only (the runner seeds torch with it)
        value = real.loss(b)
        return value * float("nan") if torch.initial_seed() == 1001 else value

    monkeypatch.setitem(M.METHODS, "taylor_ce", dataclasses.replace(real, loss=loss))
    suite = tiny(trials=2)
    with pytest.raises(runner.TrialsFailed, match=r"(?s)1 trial\(s\) failed.*split=1 train=1001: "
                                                  r"the student's training loss became non-finite"):
        runner.run_suite(suite, tmp_path, smoke=True)
    rows = read_rows(tmp_path / "runs" / "digits.csv")
    # Trial 0 complete; trial 1's teacher and vanilla rows (recorded before taylor_ce diverged,
    # on the same teacher outputs) did not survive.
    assert sorted(set(rows.train_seed)) == [1000] and len(rows) == len(suite.methods)


def test_a_diverging_teacher_is_a_clear_failure():
    x = torch.randn(16, 4)
    x[3, 0] = float("nan")
    net = torch.nn.Linear(4, 3)
    spec = tiny().smoke.teacher
    with pytest.raises(NonFiniteLoss, match=r"teacher's cross-entropy loss became non-finite .* at step 1 of"):
        train_supervised(net, x, torch.zeros(16, dtype=torch.int64), spec, seed=0)


# ------------------------------------------------------------------ teacher cache

def _flip_inside(path: Path, tensor: torch.Tensor) -> None:
    """Flip one byte inside `tensor`'s data as stored in `path`."""
    data = bytearray(path.read_bytes())
    raw = tensor.numpy().tobytes()
    at = data.find(raw[:64])
    assert at > 0, "tensor bytes not found in the cache file"
    data[at + 40] ^= 0x10
    path.write_bytes(bytes(data))


def _teacher_cache(out: Path, csv: Path) -> Path:
    """The trial's teacher's cache file (vanilla_av's A + V teacher is cached beside it)."""
    key = read_rows(csv).set_index("method").teacher_key["teacher"]
    return out / "cache" / "teacher" / f"{key}.pt"


def test_flipped_bytes_in_the_teacher_cache_are_detected(tmp_path, capsys):
    suite = tiny()
    csv = runner.run_suite(suite, tmp_path, smoke=True)
    cache = _teacher_cache(tmp_path, csv)
    state = torch.load(cache, weights_only=True)
    _flip_inside(cache, state["probs_u"])
    csv.unlink()
    with pytest.raises(CacheError, match=f"{cache} does not match its checksum.*delete that file.*--force"):
        runner.run_suite(suite, tmp_path, smoke=True)
    assert cli_main(["run", "digits", "--smoke", "--trials", "1", "--labeled", "20",
                     "--out", str(tmp_path)]) == 2
    assert str(cache) in capsys.readouterr().err
    cache.unlink()  # as the message says: the teacher is retrained
    runner.run_suite(suite, tmp_path, smoke=True)
    assert len(read_rows(csv)) == len(suite.methods)


def test_unusable_teacher_outputs_are_refused_even_with_a_valid_checksum(tmp_path):
    suite = tiny()
    cache = _teacher_cache(tmp_path, runner.run_suite(suite, tmp_path, smoke=True))
    out = TeacherOutputs.from_state(torch.load(cache, weights_only=True))
    out.probs_u[0, 0] = float("nan")
    torch.save(out.to_state(), cache)  # a consistent checksum over bad values
    (tmp_path / "runs" / "digits.csv").unlink()
    with pytest.raises(CacheError, match=f"{cache} is unusable: probs_u holds NaN"):
        runner.run_suite(suite, tmp_path, smoke=True)


def test_a_cache_from_before_checksums_is_recomputed(tmp_path):
    suite = tiny()
    csv = runner.run_suite(suite, tmp_path, smoke=True)
    cache = _teacher_cache(tmp_path, csv)
    state = torch.load(cache, weights_only=True)
    del state["checksum"]
    torch.save(state, cache)
    before = read_rows(csv)
    csv.unlink()
    runner.run_suite(suite, tmp_path, smoke=True)
    assert "checksum" in torch.load(cache, weights_only=True)
    assert list(read_rows(csv).test_acc) == list(before.test_acc)


# ------------------------------------------------------------------ variants

def test_a_smoke_run_never_replaces_full_rows(tmp_path, capsys):
    full = tiny(smoke=False)
    runner.run_suite(full, tmp_path, smoke=False)
    csv = tmp_path / "runs" / "digits.csv"
    before = read_rows(csv)
    split = runner.split_path(tmp_path, "digits", "digits", 20, 0, "full")
    split_bytes = split.read_bytes()
    assert cli_main(["run", "digits", "--smoke", "--trials", "1", "--labeled", "20",
                     "--out", str(tmp_path)]) == 0
    # The split the full rows were trained on is untouched; the smoke split lies apart.
    assert split.read_bytes() == split_bytes
    assert runner.split_path(tmp_path, "digits", "digits", 20, 0, "smoke").exists()
    printed = capsys.readouterr().out
    assert "**digits** (smoke variant" in printed  # the table of what was just run
    rows = read_rows(csv)
    kept = rows[rows.variant == "full"].reset_index(drop=True)
    assert kept.drop(columns=["row_digest"], errors="ignore").equals(
        before.drop(columns=["row_digest"], errors="ignore"))
    assert (rows.variant == "smoke").sum() == len(full.methods)
    # The leaderboard shows the full rows only.
    board = (tmp_path / "leaderboard" / "digits.csv").read_text()
    teacher_full = 100 * float(kept[kept.method == "teacher"].test_acc.iloc[0])
    assert f"teacher,{teacher_full:.2f} +- n/a" in board


# ------------------------------------------------------------------ shards

def test_shards_partition_the_plan_one_teacher_each():
    trials = runner.plan(get_suite("digits"), smoke=False)
    for n in (1, 2, 3, 7, len(trials) + 2):
        parts = [runner.shard_of(trials, (i, n)) for i in range(1, n + 1)]
        assert sorted(t for p in parts for t in p) == sorted(trials)  # all, each exactly once
        assert sum(len(p) for p in parts) == len(trials)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        assert parts == [runner.shard_of(trials, (i, n)) for i in range(1, n + 1)]  # deterministic
    for bad in ((0, 2), (3, 2), (1, 0), (1.0, 2), "1/2"):
        with pytest.raises(ValueError, match="shard must be"):
            runner.shard_of(trials, bad)


@pytest.mark.parametrize("arg", ["0/2", "3/2", "1/0", "a/b", "1"])
def test_a_bad_shard_is_a_usage_error(arg, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["run", "digits", "--shard", arg])
    assert e.value.code == 2 and "--shard" in capsys.readouterr().err


def small_suite():
    s = get_suite("digits").with_sizes(True, trials=3, labeled_sizes=(20,))
    return dataclasses.replace(s, name="digits3", methods=("teacher", "vanilla", "slam"))


# The real CLI in a fresh process, with that suite registered (a run takes a few seconds).
# The driver restores Python's own SIGINT handler: a process started in the background by a
# shell without job control (e.g. `nohup .ci/run &`) inherits SIGINT ignored, and the Ctrl-C
# test would then see a run that never hears its interrupt.
DRIVER = textwrap.dedent("""
    import signal
    import sys
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, sys.argv[1])
    from test_pipeline_trials import small_suite
    from slam_bench.cli import main
    from slam_bench.pipeline.suites import SUITES
    SUITES["digits3"] = small_suite()
    sys.exit(main(sys.argv[2:]))
""")


def _driver(args, tmpdir: Path, **kw) -> subprocess.Popen:
    tmpdir.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0"}
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(Path(__file__).parent), *args],
                            env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_two_concurrent_shards_give_the_leaderboard_of_one_run(tmp_path):
    shared, single = tmp_path / "shared", tmp_path / "single"
    base = ["run", "digits3", "--smoke", "--device", "cpu"]
    procs = [_driver(base + ["--out", str(shared), "--shard", f"{i}/2"], tmp_path / f"tmp{i}")
             for i in (1, 2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "shard 1/2: 2 of 3 trials" in outs[0][0] and "shard 2/2: 1 of 3 trials" in outs[1][0]
    runner.run_suite(small_suite(), single, smoke=True)  # the same trials in one run
    regenerate(single, ["digits3"])
    a, b = read_rows(shared / "runs" / "digits3.csv"), read_rows(single / "runs" / "digits3.csv")
    assert len(a) == len(b) == 9
    assert (shared / "leaderboard" / "digits3.csv").read_bytes() == \
        (single / "leaderboard" / "digits3.csv").read_bytes()
    # Each teacher was trained once, by one shard: one cache file per trial.
    assert len(list((shared / "cache" / "teacher").glob("*.pt"))) == 3


# ------------------------------------------------------------------ what the user sees

def test_one_progress_line_per_finished_trial_when_stdout_is_not_a_terminal(tmp_path, capsys):
    assert cli_main(["run", "digits", "--smoke", "--trials", "2", "--labeled", "20",
                     "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    done = [ln for ln in lines if ln.startswith("[")]
    assert [ln.split()[0] for ln in done] == ["[1/2]", "[2/2]"]
    assert "train=1000" in done[0] and "slam " in done[0] and "teacher " in done[0]


def test_ctrl_c_says_what_was_kept_and_how_to_resume(tmp_path):
    # Far more trials than can finish before the interrupt, however the machine schedules the
    # two processes.
    proc = _driver(["run", "digits3", "--smoke", "--trials", "1000", "--out", str(tmp_path)],
                   tmp_path / "tmp")
    csv = tmp_path / "runs" / "digits3.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (csv.exists() and len(read_rows(csv)) >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    n = len(read_rows(csv))
    assert f"interrupted; {n} smoke rows are kept in {csv}; rerun the same command to resume" in err
