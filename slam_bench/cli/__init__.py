"""`slam-bench` command line: one small module per subcommand in this package.

A subcommand module provides `add_arguments(parser)` and `main(args) -> int`, and imports at
its top only what parsing needs (no torch): `slam-bench --help`, `slam-bench COMMAND --help`
and every usage error answer at once; the work's imports happen inside `main`. Exit status
(`common.EXIT_STATUSES`): 0 success, 1 a run finished with failed trials, a result was not
reproduced or a target missed, 2 a usage or input error (one line on stderr naming the argument
or file, no traceback), 3 a file could not be read or written (one line naming it and the
cause), 130 interrupted (Ctrl-C, at any moment: one line).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from slam_bench.cli import common

# name -> (module, one-line help)
COMMANDS = {
    "run": ("slam_bench.cli.run", "run a benchmark suite (or one shard of it) and update its "
                                  "rows, leaderboard and plot"),
    "leaderboard": ("slam_bench.cli.leaderboard", "regenerate leaderboards, plots and the README "
                                                  "table from the recorded rows"),
    "sweep": ("slam_bench.cli.sweep", "train one method of a suite over a grid of one hyper-parameter"),
    "list": ("slam_bench.cli.list", "list suites, methods and whether each suite's data is present"),
    "profile": ("slam_bench.cli.profile", "measure the loss's throughput on CPU or GPU"),
    "reproduce": ("slam_bench.cli.reproduce", "recompute recorded rows in a temporary folder and "
                                              "say, cell by cell and row by row, whether they "
                                              "are reproduced"),
    "migrate": ("slam_bench.cli.migrate", "sign a runs file written before rows were signed, "
                                          "once, after showing its rows"),
}
DESCRIPTION = ("Benchmarks for SLaM distillation: run suites, rebuild leaderboards, reproduce "
               "recorded results, measure throughput. `slam-bench COMMAND --help` describes "
               "each command.")


def main(argv=None) -> int:
    command = "slam-bench"
    try:
        parser = argparse.ArgumentParser(prog="slam-bench", description=DESCRIPTION,
                                         epilog=common.EXIT_STATUSES)
        sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
        modules = {}
        for name, (module, help_) in COMMANDS.items():
            # No try/except: a command that cannot be imported is a broken install, and saying
            # so (with the missing module's name) beats offering no commands at all.
            modules[name] = importlib.import_module(module)
            modules[name].add_arguments(sub.add_parser(name, help=help_, description=help_,
                                                       epilog=common.EXIT_STATUSES))
        args = parser.parse_args(argv)
        command = f"slam-bench {args.command}"
        return int(modules[args.command].main(args) or 0)
    except KeyboardInterrupt:  # also during the imports of a command's work
        print(f"{command}: interrupted", file=sys.stderr)
        return common.INTERRUPTED
    except OSError as e:  # a command that does not say more itself
        return common.io_fail(command, e)


if __name__ == "__main__":
    sys.exit(main())
