"""Fused Triton kernels for the SLaM loss family, imported as `slam_bench.kernels`.

Self-contained: imports torch and triton only (never other slam_bench modules), so the
dependency direction stays suites -> slam_bench -> kernels.
"""
from .config import BlockConfig, block_config
from .ops import slam_loss_triton, taylor_ce_triton
from .ops_topk import slam_loss_topk_triton, topk_chunk_inplace
from .threshold import kth_largest_rows

__all__ = ["slam_loss_triton", "taylor_ce_triton", "block_config", "BlockConfig",
           "kth_largest_rows", "slam_loss_topk_triton", "topk_chunk_inplace"]
