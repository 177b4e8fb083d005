"""Fused Triton kernels for the SLaM loss family, imported as `slam_bench.kernels`."""
