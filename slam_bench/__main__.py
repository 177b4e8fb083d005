"""`python -m slam_bench`: the `slam-bench` command line."""
import sys

from slam_bench.cli import main

sys.exit(main())
