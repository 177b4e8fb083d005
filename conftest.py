"""Root conftest: switch Triton to its CPU interpreter before any kernel module is imported.

Triton reads TRITON_INTERPRET when a `@triton.jit` function is defined, so this must run
before `slam_bench.kernels` is imported by any test. On a CUDA machine the real compiler is
used unless the caller set the variable explicitly.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
