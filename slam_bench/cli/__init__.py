"""`slam-bench` command line: one small module per subcommand in this package.

A subcommand module provides `add_arguments(parser)` and `main(args) -> int`. Exit status:
0 success, 1 a run finished with failed trials or a target missed, 2 a usage or input error
(one line on stderr naming the argument or file, no traceback), 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "run": ("slam_bench.cli.run", "run a benchmark suite (or one shard of it) and update its "
                                  "rows, leaderboard and plot"),
    "leaderboard": ("slam_bench.cli.leaderboard", "regenerate leaderboards, plots and the README "
                                                  "table from the recorded rows"),
    "sweep": ("slam_bench.cli.sweep", "train one method of a suite over a grid of one hyper-parameter"),
    "list": ("slam_bench.cli.list", "list suites, methods and whether each suite's data is present"),
    "profile": ("slam_bench.cli.profile", "measure the loss's throughput on CPU or GPU"),
}
DESCRIPTION = ("Benchmarks for SLaM distillation: run suites, rebuild leaderboards, measure "
               "throughput. `slam-bench COMMAND --help` describes each command.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="slam-bench", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {}
    for name, (module, help_) in COMMANDS.items():
        # No try/except: a command that cannot be imported is a broken install, and saying so
        # (with the missing module's name) beats offering no commands at all.
        modules[name] = importlib.import_module(module)
        modules[name].add_arguments(sub.add_parser(name, help=help_, description=help_))
    args = parser.parse_args(argv)
    try:
        return int(modules[args.command].main(args) or 0)
    except KeyboardInterrupt:
        print(f"slam-bench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
