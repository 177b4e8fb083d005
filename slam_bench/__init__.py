"""slam-bench: the SLaM distillation loss (Kontonis et al., NeurIPS 2023), its baselines,
fused Triton kernels and benchmark suites."""
from slam_bench.functional import distill_loss, slam_loss
from slam_bench.modules import DistillLoss, FusedLinearSLaMLoss, SLaMLoss, SLaMTopKLoss
from slam_bench.vocab import fused_linear_slam_loss, slam_loss_topk

__all__ = ["slam_loss", "distill_loss", "SLaMLoss", "DistillLoss", "slam_loss_topk",
           "fused_linear_slam_loss", "SLaMTopKLoss", "FusedLinearSLaMLoss"]
__version__ = "0.1.0"
