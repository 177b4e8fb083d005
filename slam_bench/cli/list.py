"""`slam-bench list`: suites (and whether their data is present) and methods."""
from __future__ import annotations

import argparse
from pathlib import Path

from slam_bench.cli.common import check_data_root, fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder holding the downloaded datasets (paper-scale suites; "
                             "default: $SLAM_BENCH_DATA)")


def main(args: argparse.Namespace) -> int:
    try:
        check_data_root(args.data_root)
    except ValueError as e:
        return fail("slam-bench list", e)
    # The work's imports (the method registry and the dataset checks import torch).
    from slam_bench.data import dataset_status
    from slam_bench.pipeline.methods import METHODS
    from slam_bench.pipeline.suites import SUITES

    print("suites:")
    for s in SUITES.values():
        reason = dataset_status(s.dataset, args.data_root)
        data = "data: present" if reason is None else f"data: MISSING ({reason})"
        sizes = ",".join(map(str, s.full.labeled_sizes))
        print(f"  {s.name:<16} dataset={s.dataset} labeled={sizes} trials={s.full.trials} "
              f"teacher={s.teacher_model.describe()} student={s.student_model.describe()}; {data}")
    print("methods:")
    for m in METHODS.values():
        hp = ", ".join(f"{k}={v}" for k, v in m.hparams().items())
        print(f"  {m.name:<16} {m.description}" + (f" [{hp}]" if hp else ""))
    return 0
