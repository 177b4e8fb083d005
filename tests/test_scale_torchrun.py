"""The DDP entry point launched by the real torchrun (torch.distributed.run) with 2 CPU
processes over gloo on a tiny CIFAR-10-format data root: it must write the same columns as a
single-process run, one row per method (rank 0 only), with valid accuracies."""
from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
from scale_fixtures import make_cifar10

from slam_bench.pipeline.suites import get_suite

REQUIRED = ["suite", "dataset", "labeled_size", "split_seed", "train_seed", "teacher_arch",
            "student_arch", "teacher_test_acc", "method", "config_hash", "test_acc", "wall_s",
            "device", "git_sha"]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="torchrun with gloo on POSIX")
def test_torchrun_two_cpu_ranks_write_one_row_per_method(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    make_cifar10(data, per_batch=8, labels_used=2)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "slam_bench.cli.ddp", "cifar10", "--smoke", "--trials", "1",
           "--data-root", str(data), "--device", "cpu", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    rows = pd.read_csv(out / "runs" / "cifar10.csv")
    assert set(REQUIRED) <= set(rows.columns)
    assert sorted(rows["method"]) == sorted(get_suite("cifar10").methods)
    assert (rows["device"] == "cpu (ddp x2)").all()
    assert rows["test_acc"].between(0, 1).all() and rows["teacher_test_acc"].between(0, 1).all()
    assert (out / "leaderboard" / "cifar10.csv").exists()
