"""Hypothesis profiles for the kernel tests.

"ci" (default) is sized for the 2-core CI machine running the kernels in Triton's interpreter;
"gpu" (HYPOTHESIS_PROFILE=gpu) draws many more examples for a run on a CUDA device, where a
launch costs microseconds instead of milliseconds.
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=150, deadline=None, derandomize=True, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "gpu", max_examples=1000, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
