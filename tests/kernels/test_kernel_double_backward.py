"""create_graph=True through any of the four losses raises, on both backends.

Every backend computes the first-order gradient in the forward (or in a kernel) and hands it
back without a graph, so a second-order term built on it would be silently wrong (it would
miss d(grad)/dz). The backward refuses when autograd runs it with create_graph=True; a plain
backward, and one under torch.no_grad / retain_graph=False, still work.
"""
from __future__ import annotations

import pytest
import torch

from kernel_testlib import DEVICE
from slam_bench import distill_loss, slam_loss
from slam_bench.vocab.functional import fused_linear_slam_loss, slam_loss_topk

N, C, K, H = 4, 16, 4, 8


def _inputs():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(N, C, generator=gen).to(DEVICE).requires_grad_()
    y = torch.softmax(torch.randn(N, C, generator=gen), 1).to(DEVICE)
    ids = torch.stack([torch.randperm(C, generator=gen)[:K] for _ in range(N)]).to(DEVICE)
    p = (torch.softmax(torch.randn(N, K, generator=gen), 1) * 0.9).to(DEVICE)
    h = torch.randn(N, H, generator=gen).to(DEVICE).requires_grad_()
    w = torch.randn(C, H, generator=gen).to(DEVICE).requires_grad_()
    return z, y, ids, p, h, w


LOSSES = {
    "slam_loss": lambda z, y, ids, p, h, w, be, red: (
        slam_loss(z, y, 0.7, 3, backend=be, reduction=red), z),
    "distill_loss": lambda z, y, ids, p, h, w, be, red: (
        distill_loss(z, y, backend=be, reduction=red), z),
    "slam_loss_topk": lambda z, y, ids, p, h, w, be, red: (
        slam_loss_topk(z, ids, p, 0.7, 2, backend=be, reduction=red), z),
    "fused_linear_slam_loss": lambda z, y, ids, p, h, w, be, red: (
        fused_linear_slam_loss(h, w, ids, p, 0.7, 2, backend=be, reduction=red), h),
}


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("loss", list(LOSSES))
def test_create_graph_raises(loss, backend, reduction):
    z, y, ids, p, h, w = _inputs()
    out, wrt = LOSSES[loss](z, y, ids, p, h, w, backend, reduction)
    with pytest.raises(RuntimeError, match="second-order gradients"):
        torch.autograd.grad(out.sum(), wrt, create_graph=True)
    # The same graph still gives the first-order gradient without create_graph.
    (g,) = torch.autograd.grad(out.sum(), wrt)
    assert torch.isfinite(g).all() and not g.requires_grad
