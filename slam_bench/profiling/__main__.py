"""`python -m slam_bench.profiling ...`: the same as `slam-bench profile ...`."""
import argparse
import sys

from slam_bench.profiling.cli import add_arguments, main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m slam_bench.profiling",
                                     description="measure loss throughput")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
