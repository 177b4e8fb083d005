"""The DDP suite entry point (slam_bench.cli.ddp) with 2 CPU ranks over gloo, launched
the way torchrun launches it (RANK / WORLD_SIZE / LOCAL_RANK / MASTER_* in the environment),
against the single-process `slam-bench run` on the same fabricated CIFAR-10 files."""
from __future__ import annotations

import argparse
import os
import sys

import pandas as pd
import pytest
import torch
from scale_fixtures import free_port, make_cifar10, one_thread, start_ranks

from slam_bench.distributed import DistContext
from slam_bench.cli import ddp, run as cli_run
from slam_bench.pipeline.suites import TrainSpec
from slam_bench.pipeline.train import StudentStep, train_student

_single_thread = pytest.fixture(autouse=True)(one_thread)


def _rank(rank: int, world: int, port: int, argv: list):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    if ddp.main(argv) != 0:
        raise SystemExit(f"rank {rank}: ddp.main failed")


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="starts the ranks from a fork server (POSIX)")
def test_two_rank_ddp_suite_matches_single_process_columns_and_teacher(tmp_path, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    data = tmp_path / "data"
    make_cifar10(data, per_batch=8, labels_used=2)
    common = ["cifar10", "--smoke", "--trials", "1", "--data-root", str(data), "--device", "cpu"]
    # Each rank gets exactly the environment torchrun sets.
    start_ranks(_rank, (2, free_port(), common + ["--out", str(tmp_path / "ddp")]), 2)
    parser = argparse.ArgumentParser()
    cli_run.add_arguments(parser)
    assert cli_run.main(parser.parse_args(common + ["--out", str(tmp_path / "single")])) == 0

    multi = pd.read_csv(tmp_path / "ddp" / "runs" / "cifar10.csv")
    single = pd.read_csv(tmp_path / "single" / "runs" / "cifar10.csv")
    assert list(multi.columns) == list(single.columns)
    assert sorted(multi["method"]) == sorted(single["method"])  # one row per method, rank 0 only
    assert (multi["device"] == "cpu (ddp x2)").all()
    # Rank 0 trains the teacher exactly as one process does; sharded inference gathers its
    # predictions back in row order, so the teacher's numbers are identical.
    for col in ("teacher_test_acc", "teacher_val_acc", "teacher_key", "n_unlabeled", "steps"):
        m = multi.set_index("method")[col].sort_index()
        s = single.set_index("method")[col].sort_index()
        pd.testing.assert_series_equal(m, s)
    # Smoke runs take 1-2 steps, too few to learn: accuracies are only checked to be valid
    # (test_scale_distributed checks that a DDP step equals the single-process step).
    assert multi["test_acc"].between(0, 1).all() and multi["test_acc"].notna().all()
    # Rank 0 regenerated the derived files, as `slam-bench run` does.
    assert sorted(p.name for p in (tmp_path / "ddp" / "leaderboard").iterdir()) == \
        sorted(p.name for p in (tmp_path / "single" / "leaderboard").iterdir())


def test_batch_smaller_than_world_is_a_clear_error():
    ctx = DistContext(rank=0, world_size=4)
    spec = TrainSpec(epochs=1, batch_size=2, lr=1e-3)
    step = StudentStep(torch.nn.Linear(2, 2), None, lambda i, l, f: l.sum(), 1.0)
    with pytest.raises(ValueError, match="smaller than the 4 ranks"):
        train_student(ctx, step, torch.zeros(8, 2), torch.zeros(8, dtype=torch.long),
                      torch.zeros(8, 2), spec, 0)
