"""`slam-bench run SUITE`: run a suite, update its rows, leaderboards and plot, print the
absolute and paired tables."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from slam_bench.data import DatasetUnavailable
from slam_bench.report.leaderboard import markdown_table
from slam_bench.report.paired import paired_markdown
from slam_bench.report.regenerate import default_readme, regenerate
from slam_bench.pipeline.results import ResultsError, read_rows
from slam_bench.pipeline.runner import run_suite
from slam_bench.pipeline.suites import SUITES, get_suite
from slam_bench.pipeline.teacher import CacheError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", help=f"one of: {', '.join(SUITES)}")
    parser.add_argument("--trials", type=int, default=None, help="trials per labeled size")
    parser.add_argument("--labeled", type=int, nargs="+", default=None, metavar="N",
                        help="labeled-set sizes (default: the suite's)")
    parser.add_argument("--smoke", action="store_true", help="the suite's tiny smoke variant")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="directory of downloaded datasets (paper-scale suites)")
    parser.add_argument("--out", type=Path, default=Path("results"),
                        help="results directory (default: results/)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    parser.add_argument("--force", action="store_true",
                        help="recompute rows and teachers even if already recorded or cached")


def main(args: argparse.Namespace) -> int:
    try:
        suite = get_suite(args.suite)
        changes = {}
        if args.trials is not None:
            if args.trials < 1:
                raise ValueError(f"--trials must be >= 1, got {args.trials}")
            changes["trials"] = args.trials
        if args.labeled:
            if min(args.labeled) < 1:
                raise ValueError(f"--labeled sizes must be >= 1, got {args.labeled}")
            changes["labeled_sizes"] = tuple(args.labeled)
        if changes:
            suite = suite.with_sizes(args.smoke, **changes)
        csv_path = run_suite(suite, args.out, smoke=args.smoke, device=args.device,
                             data_root=args.data_root, force=args.force, progress=True)
        regenerate(args.out, [suite.name], readme=default_readme(args.out))
        rows = read_rows(csv_path)
        print(markdown_table(suite.name, rows))
        print(paired_markdown(suite.name, rows))
        print(f"rows: {csv_path}")
        return 0
    except (ValueError, DatasetUnavailable, CacheError, ResultsError) as e:
        print(f"slam-bench run: error: {e}", file=sys.stderr)
        return 2
