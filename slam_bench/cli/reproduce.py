"""`slam-bench reproduce SUITE [--trials N] [--labeled N ...] [--results DIR]`: recompute
recorded rows and say whether they are reproduced.

Reads the rows recorded in `<DIR>/runs/<SUITE>.csv` (validated like any read of the store),
runs the chosen trials from scratch (teachers included) into a temporary folder that is
removed afterwards, and compares every recorded row of those trials with its recomputation,
cell by cell: the config hash first (a different one means the code's configuration changed
since the row was recorded), then every measured value. Wall times, the device and the
versions are not compared.

Runs on CPU with the suites' one thread are deterministic: there the cells must be identical as
recorded (six significant digits). On a GPU, kernels may reorder floating-point sums, so rows
recorded or recomputed on CUDA compare numbers within a tolerance (absolute; accuracies are
fractions, so 0.01 is one point), 0.01 unless --tolerance says otherwise. Exit status 0 when
every compared row is reproduced, 1 when one is not, 2 when there is nothing to compare.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from slam_bench.cli.common import (FAILED, INTERRUPTED, OK, check_data_root, fail, io_fail,
                                   user_errors)
from slam_bench.cli.run import build_suite, parse_methods
from slam_bench.pipeline.suites import SUITES

PROG = "slam-bench reproduce"
# Not results: they differ between runs of the same computation (a step's peak memory is a
# measurement too: the allocator's and the profiler's own blocks vary with the process).
NOT_COMPARED = {"wall_s", "device", "git_sha", "slam_bench_version", "torch_version",
                "triton_version", "row_digest", "student_peak_bytes"}
GPU_TOLERANCE = 0.01


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", help=f"one of: {', '.join(SUITES)}")
    parser.add_argument("--trials", type=int, default=None,
                        help="the first N trials per labeled size (default: the suite's)")
    parser.add_argument("--labeled", type=int, nargs="+", default=None, metavar="N",
                        help="labeled-set sizes (default: the suite's)")
    parser.add_argument("--methods", type=parse_methods, default=None, metavar="A,B",
                        help="only these of the suite's methods (default: all of them)")
    parser.add_argument("--smoke", action="store_true",
                        help="reproduce the recorded smoke rows (default: the full rows)")
    parser.add_argument("--results", type=Path, default=Path("results"),
                        help="the results folder holding the recorded rows (default: results/)")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder holding the downloaded datasets (paper-scale suites; "
                             "default: $SLAM_BENCH_DATA)")
    parser.add_argument("--device", default="cpu",
                        help="where to recompute: cpu (default, deterministic), cuda, cuda:N")
    parser.add_argument("--tolerance", type=float, default=None, metavar="T",
                        help="largest absolute difference accepted in a numeric cell (default: "
                             f"0, identical cells, for CPU rows; {GPU_TOLERANCE} where the row "
                             "was recorded or is recomputed on CUDA)")


def compare_rows(recorded, recomputed, tolerance: float) -> List[str]:
    """The differences between a recorded row and its recomputation (dicts of typed cells, as
    `store.read_rows` gives them), one phrase per cell; [] when reproduced. Only the columns
    the recorded file has are compared: a column added to the rows after it was written (e.g.
    `teacher_cache_bytes`) was never recorded, so it cannot differ."""
    if recorded.get("config_hash") != recomputed.get("config_hash"):
        return [f"config_hash {recorded.get('config_hash')} -> {recomputed.get('config_hash')} "
                f"(the configuration changed since the row was recorded)"]
    diffs = []
    for col in sorted(set(recorded) - NOT_COMPARED):
        a, b = recorded.get(col), recomputed.get(col)
        if _same(a, b, tolerance):
            continue
        diffs.append(f"{col} {_show(a)} -> {_show(b)}")
    return diffs


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _same(a, b, tolerance: float) -> bool:
    if _missing(a) or _missing(b):
        return _missing(a) and _missing(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
            and not isinstance(a, bool) and not isinstance(b, bool):
        return a == b if tolerance == 0 else abs(float(a) - float(b)) <= tolerance
    return a == b


def _show(v) -> str:
    return "(empty)" if _missing(v) else str(v)


def main(args: argparse.Namespace) -> int:
    try:  # the usage errors, answered before the trial loop is imported
        suite = build_suite(argparse.Namespace(suite=args.suite, trials=args.trials,
                                               labeled=args.labeled, smoke=args.smoke,
                                               methods=args.methods))
        check_data_root(args.data_root)
        if args.tolerance is not None and not (args.tolerance >= 0 and math.isfinite(args.tolerance)):
            raise ValueError(f"--tolerance must be a finite number >= 0, got {args.tolerance}")
        path = Path(args.results) / "runs" / f"{suite.name}.csv"  # store.runs_path
        if not path.is_file():
            raise ValueError(f"--results {str(args.results)!r}: no recorded rows of suite "
                             f"{suite.name!r} ({path} does not exist)")
    except ValueError as e:
        return fail(PROG, e)
    try:
        return _reproduce(args, suite, path)
    except KeyboardInterrupt:  # first: evaluating user_errors() imports the work's modules
        print(f"{PROG}: interrupted; nothing was compared, {path} is unchanged", file=sys.stderr)
        return INTERRUPTED
    except user_errors() as e:
        return fail(PROG, e)
    except OSError as e:
        return io_fail(PROG, e, f"{path} is unchanged")


def _reproduce(args: argparse.Namespace, suite, path: Path) -> int:
    from slam_bench.pipeline.methods import METHODS
    from slam_bench.pipeline.runner import TrialsFailed, plan, resolve_device, run_suite
    from slam_bench.report.cells import DEFAULT_ESTIMATOR_DATA, cell_name
    from slam_bench.store import ids_of_frame_row, read_rows, runs_path

    variant = "smoke" if args.smoke else "full"
    device = resolve_device(args.device)
    trials = set(plan(suite, args.smoke))
    runs = set(suite.runs())
    recorded = {}
    for r in read_rows(path, known_methods=METHODS).to_dict("records"):
        if r["variant"] == variant and (r["method"], r["targets"]) in runs \
                and (r["labeled_size"], r["split_seed"], r["train_seed"]) in trials:
            recorded[ids_of_frame_row(r)] = r
    if not recorded:
        raise ValueError(f"{path} holds no {variant} rows of the chosen trials and methods "
                         f"({len(trials)} trials); nothing to reproduce")
    print(f"recomputing {len(trials)} trial(s) of {suite.name} ({variant}) on {device} to "
          f"compare {len(recorded)} recorded rows of {path}", flush=True)
    with tempfile.TemporaryDirectory(prefix="slam-bench-reproduce-") as tmp:
        failed = None
        try:
            csv = run_suite(suite, Path(tmp), smoke=args.smoke, device=str(device),
                            data_root=args.data_root, force=True,
                            log=lambda s: print(f"  {s}", flush=True))
        except TrialsFailed as e:
            failed, csv = e, runs_path(Path(tmp), suite.name)
        again = {ids_of_frame_row(r): r for r in read_rows(csv).to_dict("records")}
    if failed is not None:
        print(f"{PROG}: {failed}", file=sys.stderr)

    per_cell: Dict[str, List[int]] = {}
    print("rows:")
    order = {r: k for k, r in enumerate(suite.runs())}
    for rid in sorted(recorded, key=lambda i: (i.targets != "soft", i.labeled_size, i.split_seed,
                                               order[(i.method, i.targets)])):
        row = recorded[rid]
        on_gpu = "cuda" in str(row.get("device")) or device.type == "cuda"
        tol = args.tolerance if args.tolerance is not None else (GPU_TOLERANCE if on_gpu else 0.0)
        if rid not in again:
            diffs = ["not recomputed (its trial failed)"]
        else:
            diffs = compare_rows(row, again[rid], tol)
        # The leaderboards' cell name (crossfit, scenario and top-K suffixes included).
        est, scenario = row.get("estimator_data"), row.get("teacher_scenario")
        cell = cell_name(rid.dataset, rid.labeled_size, rid.targets,
                         est if isinstance(est, str) and est else DEFAULT_ESTIMATOR_DATA,
                         scenario if isinstance(scenario, str) else "", rid.teacher_topk)
        counts = per_cell.setdefault(cell, [0, 0])
        counts[0] += not diffs
        counts[1] += 1
        how = ("identical" if tol == 0 else f"within {tol:g}") if not diffs else "; ".join(diffs)
        print(f"  {'ok  ' if not diffs else 'DIFF'} {cell} split={rid.split_seed} "
              f"train={rid.train_seed} {rid.method}: {how}")
    print("cells:")
    for cell, (ok, n) in per_cell.items():
        print(f"  {cell}: {ok} of {n} rows reproduced")
    ok = sum(c[0] for c in per_cell.values())
    n = sum(c[1] for c in per_cell.values())
    print(f"{suite.name}: {ok} of {n} recorded rows reproduced"
          + ("" if ok == n else f"; {n - ok} not"))
    return OK if ok == n else FAILED
