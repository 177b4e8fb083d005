"""`slam-bench run` on several GPUs: the torchrun entry point for DDP student training.

    torchrun --nproc_per_node=G -m slam_bench.cli.ddp SUITE --data-root DIR [run options]

Takes the same arguments as `slam-bench run` and writes the same files with the same columns
(the `device` column says e.g. "cuda:0 (ddp x8)"). It joins the process group and hands the
rank's `DistContext` to `runner.run_suite`, the one trial loop: see its module docstring for
what ranks do differently (teacher trained on rank 0 and broadcast, inference sharded, student
in DDP on a rank-strided share of every global batch, only rank 0 writing). With one process
it behaves exactly like `slam-bench run`.
"""
from __future__ import annotations

import argparse
import sys

from slam_bench.data import DatasetUnavailable
from slam_bench.distributed import DistContext
from slam_bench.cli import run as cli_run
from slam_bench.report.leaderboard import markdown_table
from slam_bench.report.regenerate import default_readme, regenerate
from slam_bench.pipeline.results import ResultsError, read_rows
from slam_bench.pipeline.runner import run_suite
from slam_bench.pipeline.suites import get_suite
from slam_bench.pipeline.teacher import CacheError

# Collectives wait this long for a slow rank (rank 0 trains the teacher while the others wait).
TIMEOUT_S = 4 * 3600


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="torchrun --nproc_per_node=G -m slam_bench.cli.ddp",
        description="run a benchmark suite with DDP students (arguments as `slam-bench run`)")
    cli_run.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.device not in ("auto", "cpu", "cuda"):
        print("slam_bench.cli.ddp: error: --device must be auto, cpu or cuda (each rank "
              "uses cuda:LOCAL_RANK)", file=sys.stderr)
        return 2
    device = None if args.device == "auto" else args.device
    ctx = DistContext.from_env(device=device, timeout_s=TIMEOUT_S)
    try:
        suite = get_suite(args.suite)
        changes = {}
        if args.trials is not None:
            changes["trials"] = args.trials
        if args.labeled:
            changes["labeled_sizes"] = tuple(args.labeled)
        if changes:
            suite = suite.with_sizes(args.smoke, **changes)
        csv_path = run_suite(suite, args.out, smoke=args.smoke, data_root=args.data_root,
                             force=args.force, log=print, ctx=ctx)
        if ctx.is_main:
            regenerate(args.out, [suite.name], readme=default_readme(args.out))
            print(markdown_table(suite.name, read_rows(csv_path)))
            print(f"rows: {csv_path}")
        return 0
    except (ValueError, DatasetUnavailable, CacheError, ResultsError) as e:
        # Every rank meets the same configuration error; one message is enough.
        if ctx.is_main:
            print(f"slam_bench.cli.ddp: error: {e}", file=sys.stderr)
        return 2
    finally:
        ctx.cleanup()


if __name__ == "__main__":
    sys.exit(main())
