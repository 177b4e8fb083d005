"""Moved to `slam_bench.store` (the results store is below the pipeline and the report);
this alias keeps older imports working and will be removed."""
from slam_bench.store import *  # noqa: F401,F403
