"""`slam-bench leaderboard`: rebuild leaderboards, plots and the README table from raw rows."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from slam_bench.report.regenerate import default_readme, regenerate
from slam_bench.pipeline.results import ResultsError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("results"),
                        help="results directory holding runs/ (default: results/)")
    parser.add_argument("--readme", type=Path, default=None,
                        help="README whose leaderboard markers to fill (default: README.md "
                             "beside the results/ directory, only when --out is results/)")


def main(args: argparse.Namespace) -> int:
    if not (Path(args.out) / "runs").is_dir():
        print(f"slam-bench leaderboard: error: no raw rows under {Path(args.out) / 'runs'}; "
              f"run `slam-bench run SUITE --out {args.out}` first", file=sys.stderr)
        return 2
    try:
        paths = regenerate(args.out, readme=args.readme or default_readme(args.out))
    except ResultsError as e:
        print(f"slam-bench leaderboard: error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0
