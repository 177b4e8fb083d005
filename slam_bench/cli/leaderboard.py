"""`slam-bench leaderboard`: rebuild leaderboards, paired and summary files, plots and the README
table from raw rows."""
from __future__ import annotations

import argparse
from pathlib import Path

from slam_bench.cli.common import fail, io_fail, user_errors
from slam_bench.fileio import ensure_writable_dir

PROG = "slam-bench leaderboard"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("results"),
                        help="the results folder that `slam-bench run` wrote to (default: results/)")
    parser.add_argument("--readme", type=Path, default=None,
                        help="a Markdown file whose leaderboard markers to fill (default: the "
                             "README.md beside --out when --out is a folder named results)")


def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    try:  # the usage errors, answered without importing the work's modules
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {str(out)!r} is a file, expected the results folder")
        if not (out / "runs").is_dir():
            raise ValueError(f"no recorded rows under {out / 'runs'}; run "
                             f"`slam-bench run SUITE --out {out}` first")
        if args.readme is not None and not Path(args.readme).is_file():
            raise ValueError(f"--readme {str(args.readme)!r} is not a file")
        ensure_writable_dir(out)
    except ValueError as e:
        return fail(PROG, e)
    try:
        from slam_bench.report.regenerate import default_readme, regenerate
        paths = regenerate(out, readme=args.readme or default_readme(out))
    except user_errors() as e:
        return fail(PROG, e)
    except OSError as e:
        return io_fail(PROG, e, "the recorded rows are unchanged")
    for p in paths:
        print(p)
    return 0
