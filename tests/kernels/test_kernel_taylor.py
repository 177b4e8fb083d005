"""Taylor-CE from the same kernel family (TAYLOR = order) against its plain float64 formula,
sum_j y_j sum_{n=1..t} (1 - f_j)^n / n with f = softmax(z / T), differentiated by autograd.
Tolerances as in test_kernel_properties.py (without the low-precision PyTorch comparison).
"""
from __future__ import annotations

import contextlib

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kernel_testlib import (DEVICE, MINOR_SETTINGS, assert_grad_close, assert_loss_close,
                            roundings, row_grad_scale, small_blocks)
from slam_bench.kernels import taylor_ce_triton


def taylor_ce_float64(z, y, order, temperature, weight, reduction):
    f = torch.softmax(z / temperature, dim=1)
    series = sum((1 - f) ** n / n for n in range(1, order + 1))
    rows = (y * series).sum(dim=1)
    if weight is not None:
        rows = rows * weight
    if reduction == "none":
        return rows
    return rows.sum() / max(rows.shape[0], 1) if reduction == "mean" else rows.sum()


@pytest.mark.every_kernel
@MINOR_SETTINGS
@given(st.integers(0, 2 ** 31 - 1), st.sampled_from([1, 2, 3, 6]),
       st.sampled_from([(0, 5), (1, 2), (7, 10), (3, 17), (70, 3), (2, 40)]), st.booleans(),
       st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
       st.sampled_from(["mean", "sum", "none"]), st.booleans(), st.sampled_from([1.0, 2.0]))
def test_taylor_ce_matches_float64_formula(seed, order, shape, small, dtype, reduction,
                                           weighted, temperature):
    gen = torch.Generator().manual_seed(seed)
    n, c = shape
    z64 = torch.randn(n, c, generator=gen, dtype=torch.float64) * 3
    y64 = torch.softmax(torch.randn(n, c, generator=gen, dtype=torch.float64) * 2, dim=1)
    z, y = z64.to(dtype), y64.to(dtype)
    weight = torch.rand(n, generator=gen) if weighted else None
    go = torch.randn(n, generator=gen) if reduction == "none" else torch.tensor(0.8)
    zk = z.to(DEVICE).clone().requires_grad_()
    with small_blocks() if small else contextlib.nullcontext():
        out = taylor_ce_triton(zk, y.to(DEVICE), order, temperature=temperature,
                               weight=None if weight is None else weight.to(DEVICE),
                               reduction=reduction)
        out.backward(go.to(DEVICE))
    zr = z.detach().double().requires_grad_()
    ref = taylor_ce_float64(zr, y.double(), order, temperature,
                            None if weight is None else weight.double(), reduction)
    ref.backward(go.double())
    assert_loss_close(out.detach().cpu(), ref)
    scale = row_grad_scale(n, go, weight, temperature, reduction)
    assert_grad_close(zk.grad.cpu(), zr.grad, scale, dtype, n_round=roundings(go))


@pytest.mark.parametrize("order", [0, 17, 2.0, True])
def test_taylor_order_is_validated(order):
    z = torch.randn(2, 3, device=DEVICE)
    with pytest.raises(ValueError, match="order"):
        taylor_ce_triton(z, torch.softmax(z, dim=1), order)


def test_taylor_shape_mismatch_is_named():
    z = torch.randn(2, 3, device=DEVICE)
    with pytest.raises(ValueError, match="teacher_probs"):
        taylor_ce_triton(z, torch.full((2, 4), 0.25, device=DEVICE))
