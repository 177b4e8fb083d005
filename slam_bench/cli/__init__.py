"""`slam-bench` command line: one small module per subcommand in this package.

A subcommand module provides `add_arguments(parser)` and `main(args) -> int`.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "run": ("slam_bench.cli.run", "run a benchmark suite and update its result files"),
    "leaderboard": ("slam_bench.cli.leaderboard", "regenerate leaderboards, plots and README table"),
    "list": ("slam_bench.cli.list", "list suites, methods and whether each suite's data is present"),
    "profile": ("slam_bench.cli.profile", "measure loss throughput and write results/throughput/<device>.csv"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="slam-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {}
    for name, (module, help_) in COMMANDS.items():
        try:
            modules[name] = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if not (e.name == module or module.startswith(e.name + ".")):  # a real missing dependency
                raise
            continue
        modules[name].add_arguments(sub.add_parser(name, help=help_))
    args = parser.parse_args(argv)
    return int(modules[args.command].main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
