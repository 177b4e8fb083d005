"""slam-bench: the SLaM distillation loss (Kontonis et al., NeurIPS 2023), its baselines,
fused Triton kernels and benchmark suites."""
import importlib

# Where each public name lives. They are imported on first use (PEP 562), so that
# `slam-bench --help` and the other parts that need no torch (the command line's parsing, the
# results store) start without importing it.
_EXPORTS = {
    "slam_loss": "slam_bench.functional", "distill_loss": "slam_bench.functional",
    "SLaMLoss": "slam_bench.modules", "DistillLoss": "slam_bench.modules",
    "SLaMTopKLoss": "slam_bench.modules", "FusedLinearSLaMLoss": "slam_bench.modules",
    "slam_loss_topk": "slam_bench.vocab", "fused_linear_slam_loss": "slam_bench.vocab",
}
__all__ = ["slam_loss", "distill_loss", "SLaMLoss", "DistillLoss", "slam_loss_topk",
           "fused_linear_slam_loss", "SLaMTopKLoss", "FusedLinearSLaMLoss"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'slam_bench' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
