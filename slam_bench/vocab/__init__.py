"""SLaM at LLM vocabulary scale: a sparse top-K teacher (`slam_loss_topk`) and the output
projection fused with the loss (`fused_linear_slam_loss`).

    functional.py    the two public functions: checks, backend choice, autograd
    checks.py        argument checks of the (N, K) teacher and the linear layer
    fused_linear.py  the fused function's row-chunk loop and its torch.library custom ops
    torch_backend.py the CPU / torch chunk step (the Triton one is kernels/topk_triton.py)
    reference.py     the float64 dense oracle of the tests and the GPU check
"""
from slam_bench.vocab.functional import fused_linear_slam_loss, slam_loss_topk

__all__ = ["slam_loss_topk", "fused_linear_slam_loss"]
