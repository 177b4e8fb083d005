"""`slam-bench run <paper suite> --data-root DIR --smoke` end to end on fabricated files in
the real formats; `slam-bench list` reports their data as present or names what is missing."""
from __future__ import annotations

import argparse
import csv
import math

import pytest
from scale_fixtures import make_celeba, make_cifar10, make_cifar100, make_imagenet, make_imdb, one_thread

from slam_bench.data import DatasetUnavailable, load_dataset
from slam_bench.cli import list as cli_list, run as cli_run
from slam_bench.pipeline.suites import get_suite

_single_thread = pytest.fixture(autouse=True)(one_thread)

FABRICATE = {  # enough rows for the smoke sizes: labeled + n_val < train, U capped
    "cifar10": lambda root: make_cifar10(root, per_batch=8, labels_used=2),
    "cifar100": lambda root: make_cifar100(root, n_train=40, n_test=6, labels_used=2),
    "celeba": lambda root: make_celeba(root, partitions=[0] * 16 + [1] * 2 + [2] * 4),
    "imagenet": lambda root: make_imagenet(root, classes=("n01", "n02"), per_class=6, per_class_val=2),
    "imdb": lambda root: make_imdb(root, extra_per_class=15),
}


def _cli(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.main(parser.parse_args(argv))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FABRICATE))
def test_smoke_suite_runs_end_to_end(name, tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "out"
    FABRICATE[name](data)
    rc = _cli(cli_run, [name, "--smoke", "--trials", "1", "--data-root", str(data), "--out", str(out),
                        "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    suite = get_suite(name)
    with open(out / "runs" / f"{name}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["method"] for r in rows) == sorted(suite.methods)
    for r in rows:
        acc = float(r["test_acc"])
        assert 0.0 <= acc <= 1.0 and not math.isnan(acc)
        assert r["suite"] == name and r["selection"] == "last"
        assert int(r["labeled_size"]) == suite.smoke.labeled_sizes[0]
        assert r["teacher_arch"] == suite.teacher_model.describe()
    printed = capsys.readouterr().out
    assert "`slam`" in printed and "`teacher`" in printed  # the leaderboard table was printed


def test_list_reports_present_and_missing_data(tmp_path, capsys):
    FABRICATE["cifar10"](tmp_path)
    assert _cli(cli_list, ["--data-root", str(tmp_path)]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  ")}
    assert lines["cifar10"].endswith("data: present")
    assert "MISSING" in lines["imdb"] and str(tmp_path / "aclImdb") in lines["imdb"]
    assert "MISSING" in lines["celeba"] and str(tmp_path / "celeba") in lines["celeba"]


@pytest.mark.parametrize("name, expected", [("cifar10", "cifar-10-batches-py/data_batch_1"),
                                            ("cifar100", "cifar-100-python/train"),
                                            ("celeba", "celeba/img_align_celeba"),
                                            ("imagenet", "imagenet/train"),
                                            ("imdb", "aclImdb/train/neg")])
def test_absent_data_is_unavailable_naming_the_path(name, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("SLAM_BENCH_DATA", raising=False)
    with pytest.raises(DatasetUnavailable, match=str(tmp_path / expected)):
        load_dataset(name, tmp_path)
    with pytest.raises(DatasetUnavailable, match="--data-root"):
        load_dataset(name, None)
    # The CLI turns it into one line and exit status 2, no traceback.
    assert _cli(cli_run, [name, "--smoke", "--data-root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert str(tmp_path / expected) in capsys.readouterr().err


def test_malformed_file_fails_the_run_naming_the_file(tmp_path, capsys):
    FABRICATE["cifar10"](tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "test_batch"
    bad.write_bytes(b"garbage")
    assert _cli(cli_run, ["cifar10", "--smoke", "--data-root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert str(bad) in capsys.readouterr().err
