"""Hypothesis profiles for tests/.

"ci" (the default) is deterministic: derandomize=True draws the same examples on every run, so
CI never flakes, and deadline=None because the shared CI machine's timing varies. "dev" explores
new random examples (HYPOTHESIS_PROFILE=dev pytest tests/) with more of them. "gpu" is for a
run on a CUDA device (HYPOTHESIS_PROFILE=gpu pytest tests/kernels): the kernel tests read it
and draw many more examples (tests/kernels/kernel_testlib.py); elsewhere it acts as "dev".
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=500,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("gpu", settings.get_profile("dev"))
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
