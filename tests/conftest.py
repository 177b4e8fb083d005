"""Hypothesis profiles for tests/.

"ci" (the default) is deterministic: derandomize=True draws the same examples on every run, so
CI never flakes, and deadline=None because the shared CI machine's timing varies. "dev" explores
new random examples (HYPOTHESIS_PROFILE=dev pytest tests/) with more of them.
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=500,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
