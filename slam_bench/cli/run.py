"""`slam-bench run SUITE`: run a suite (or one shard of it), update its rows, leaderboards and
plot, print the absolute and paired tables.

Parsing and the usage errors need only the suite registry (no torch); the trial loop and the
report are imported once the arguments are known to be valid.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Tuple

from slam_bench.cli.common import (INTERRUPTED, IO_ERROR, USAGE, check_data_root, fail, io_fail,
                                   user_errors)
from slam_bench.fileio import ensure_writable_dir
from slam_bench.store import ESTIMATOR_DATA
from slam_bench.pipeline.suites import SUITES, Suite, get_suite

if TYPE_CHECKING:
    from slam_bench.distributed import DistContext


def parse_shard(text: str) -> Tuple[int, int]:
    """'I/N' -> (I, N) with 1 <= I <= N."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N such as 1/4, got {text!r}") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"expected I/N with 1 <= I <= N, got {text!r}")
    return i, n


def parse_methods(text: str) -> Tuple[str, ...]:
    """'a,b' -> ('a', 'b'): a comma-separated list of method names, none repeated."""
    names = tuple(n.strip() for n in text.split(","))
    if not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected method names separated by commas, each "
                                         f"once, such as vanilla,slam; got {text!r}")
    return names


def parse_topk(text: str) -> Optional[int]:
    """'dense' -> None (the dense teacher), 'K' -> K, an int >= 1 (a top-K teacher cache)."""
    if text == "dense":
        return None
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1:
        raise argparse.ArgumentTypeError(f"expected an int K >= 1 or 'dense', got {text!r}")
    return k


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", help=f"one of: {', '.join(SUITES)}")
    parser.add_argument("--trials", type=int, default=None,
                        help="trials per labeled size (default: the suite's)")
    parser.add_argument("--labeled", type=int, nargs="+", default=None, metavar="N",
                        help="labeled-set sizes (default: the suite's)")
    parser.add_argument("--smoke", action="store_true",
                        help="the suite's tiny smoke variant (its rows are kept apart from full rows)")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder holding the downloaded datasets (paper-scale suites; "
                             "default: $SLAM_BENCH_DATA)")
    parser.add_argument("--out", type=Path, default=Path("results"),
                        help="results folder (default: results/)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    parser.add_argument("--recompute", "--force", dest="force", action="store_true",
                        help="recompute every row and teacher of the chosen trials, even if "
                             "already recorded or cached (--force is the same option)")
    parser.add_argument("--methods", type=parse_methods, default=None, metavar="A,B",
                        help="run only these of the suite's methods, e.g. teacher,vanilla,slam "
                             "(default: all of them; `slam-bench list` shows each suite's)")
    parser.add_argument("--estimator-data", choices=ESTIMATOR_DATA, default=None,
                        help="where estimators fit: val (a labeled V, |V| labels spent) or "
                             "crossfit (out-of-fold teachers on A, no label beyond A); default: "
                             "the suite's")
    parser.add_argument("--teacher-topk", type=parse_topk, nargs="+", default=None,
                        metavar="K",
                        help="teacher caches to run every trial on, one or more of: K (the "
                             "teacher's top-K ids and probabilities per row, the mass outside "
                             "dropped; K <= the dataset's classes) or 'dense', e.g. "
                             "--teacher-topk 20 or --teacher-topk 1 5 dense; each is its own "
                             "cell (docs/vocab.md). "
                             "Methods that need the dense teacher are refused on a top-K cache. "
                             "Default: the suite's")
    parser.add_argument("--shard", type=parse_shard, default=None, metavar="I/N",
                        help="run only part I of N of the suite's trials (I from 1 to N), e.g. "
                             "one per GPU or per Slurm array task, all with the same --out")


def build_suite(args: argparse.Namespace) -> Suite:
    """The suite named on the command line with its --trials / --labeled changes."""
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
    if getattr(args, "teacher_topk", None):
        changes["teacher_topk"] = tuple(args.teacher_topk)
    if getattr(args, "estimator_data", None) is not None:  # reproduce's suites take the rows'
        suite = dataclasses.replace(suite, estimator_data=args.estimator_data)
    suite = suite.with_sizes(args.smoke, **changes) if changes else suite
    return only_methods(suite, getattr(args, "methods", None))


def only_methods(suite: Suite, methods: Optional[Tuple[str, ...]]) -> Suite:
    """The suite restricted to `methods` (in the suite's order), each of which it must run."""
    if methods is None:
        return suite
    unknown = [m for m in methods if m not in suite.methods]
    if unknown:
        raise ValueError(f"--methods {', '.join(unknown)}: not a method of suite {suite.name!r} "
                         f"(its methods: {', '.join(suite.methods)})")
    return dataclasses.replace(suite, methods=tuple(m for m in suite.methods if m in methods),
                               hard_methods=tuple(m for m in suite.hard_methods if m in methods))


def main(args: argparse.Namespace, ctx: Optional["DistContext"] = None,
         prog: str = "slam-bench run") -> int:
    """Run the suite; with `ctx` (torchrun), as one rank of a DDP job (rank 0 talks and writes)."""
    talk = ctx is None or ctx.is_main

    def say(text: str) -> None:
        if talk:
            print(text, flush=True)  # flushed: logs and `| tee` see each trial as it ends

    variant = "smoke" if args.smoke else "full"
    try:  # the usage errors, answered before the trial loop is imported
        suite = build_suite(args)
        check_data_root(args.data_root)
        ensure_writable_dir(args.out)
    except ValueError as e:
        return fail(prog, e) if talk else USAGE
    from slam_bench.store import read_rows, runs_path, select_variant
    csv_path = runs_path(args.out, suite.name)
    try:
        from slam_bench.pipeline.runner import TrialsFailed, run_suite
        from slam_bench.report.leaderboard import markdown_table
        from slam_bench.report.paired import paired_markdown
        from slam_bench.report.regenerate import default_readme, regenerate
        try:
            run_suite(suite, args.out, smoke=args.smoke, device="auto" if ctx else args.device,
                      data_root=args.data_root, force=args.force, progress=True, log=say,
                      ctx=ctx, shard=args.shard)
            failed = None
        except TrialsFailed as e:
            failed = e
        if talk:
            regenerate(args.out, [suite.name], readme=default_readme(args.out))
            rows = select_variant(read_rows(csv_path), variant)
            say(f"{markdown_table(suite.name, rows)}\n{paired_markdown(suite.name, rows)}"
                if len(rows) else "no rows recorded")
            say(f"rows: {csv_path}")
        if failed is not None:
            if talk:
                print(f"{prog}: {failed}", file=sys.stderr)
            return 1
        return 0
    except KeyboardInterrupt:  # first: evaluating user_errors() imports the work's modules
        if talk:
            print(f"{prog}: interrupted; {_kept(csv_path, variant)} rerun the same "
                  f"command to resume (recorded trials are skipped)", file=sys.stderr)
        return INTERRUPTED
    except user_errors() as e:
        return fail(prog, e) if talk else USAGE
    except OSError as e:  # permission, read-only or full disk, quota: rows so far are whole
        if talk:
            io_fail(prog, e, _kept(csv_path, variant).rstrip(";"))
        return IO_ERROR


def _kept(csv_path: Optional[Path], variant: str) -> str:
    """What an interrupted run leaves: every row recorded so far (each is written whole)."""
    if csv_path is None or not csv_path.exists():
        return "no rows were recorded;"
    try:
        from slam_bench.store import read_rows
        n = int((read_rows(csv_path)["variant"] == variant).sum())
    except Exception:  # never a traceback on the way out
        return f"the rows recorded so far are kept in {csv_path};"
    return f"{n} {variant} rows are kept in {csv_path};"
