"""Shared inputs, hypothesis settings and the tolerance policy of the kernel tests (the policy
is written out in test_kernel_properties.py).

Hypothesis settings: "ci" (default) is sized for the 2-core CI machine running the kernels in
Triton's interpreter; HYPOTHESIS_PROFILE=gpu draws many more examples for a run on a CUDA
device, where a launch costs microseconds instead of milliseconds. They are applied per test
(KERNEL_SETTINGS, MINOR_SETTINGS) instead of loaded as the session's global profile, so other
test folders keep their own hypothesis configuration.
"""
from __future__ import annotations

import contextlib
import os
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, settings

pytest.importorskip("triton", reason="the kernels need Triton (Linux x86-64)")

from slam_bench.kernels import config, slam_loss_triton  # noqa: E402
from slam_bench.reference import distill_loss_reference, slam_loss_reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
GPU_PROFILE = os.environ.get("HYPOTHESIS_PROFILE") == "gpu"

# fp32 results on inputs that upcast exactly: relative error of the fp32 math.
RTOL32 = 1e-5
# Gradient entries of a row may cancel to ~0 (teacher == student); allow this fraction of the
# row's gradient scale |go_i w_i| / (T N) as absolute error on top of RTOL32 * max |row|.
ROW_SCALE_ATOL = 1e-6
# One unit in the last place of the output dtype, relative: the interpreter truncates
# fp32 -> bf16/fp16 (a GPU rounds to nearest: half of this).
ULP = {torch.float32: 0.0, torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}
# Below fp16's normal range the ulp is absolute.
ABS_ULP = {torch.float32: 0.0, torch.float16: 2.0 ** -24, torch.bfloat16: 0.0}
# The kernel's gradient error against the float64 oracle may be at most this multiple of
# PyTorch's own error when it evaluates the oracle's formula in the low precision.
TORCH_LOWP_MULTIPLE = 2.0
_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# Main property test: 150 derandomized (reproducible) examples in CI, 1000 random on a GPU.
KERNEL_SETTINGS = (settings(max_examples=1000, **_COMMON) if GPU_PROFILE
                   else settings(max_examples=150, derandomize=True, **_COMMON))
# Secondary property tests: a quarter of that.
MINOR_SETTINGS = settings(KERNEL_SETTINGS, max_examples=KERNEL_SETTINGS.max_examples // 4)


@contextlib.contextmanager
def small_blocks(single: int = 16, stream: int = 8, tile: int = 64):
    """Shrink the launch heuristic so block boundaries and streaming occur at tiny C."""
    with mock.patch.multiple(config, MAX_SINGLE_BLOCK=single, STREAM_BLOCK=stream,
                             TILE_ELEMENTS=tile):
        yield


def reference(z, y, alpha, k, *, normalize, temperature, weight, reduction, mixing):
    """The float64 oracle on exactly upcast inputs (alpha, weight upcast too)."""
    z64 = z.detach().double().requires_grad_()
    y64 = y.double()
    w64 = None if weight is None else weight.double()
    if mixing:
        a64 = alpha.double() if isinstance(alpha, torch.Tensor) else alpha
        out = slam_loss_reference(z64, y64, a64, k, normalize=normalize, temperature=temperature,
                                  weight=w64, reduction=reduction)
    else:
        out = distill_loss_reference(z64, y64, temperature=temperature, weight=w64,
                                     reduction=reduction)
    return z64, out


def lowp_reference_grad(z, y, alpha, k, *, normalize, temperature, weight, reduction, mixing, go):
    """PyTorch's own gradient when the oracle formula runs in z's low precision."""
    zl = z.detach().clone().requires_grad_()
    yl = y.to(z.dtype)
    wl = None if weight is None else weight.to(z.dtype)
    if mixing:
        al = alpha.to(z.dtype) if isinstance(alpha, torch.Tensor) else alpha
        out = slam_loss_reference(zl, yl, al, k, normalize=normalize, temperature=temperature,
                                  weight=wl, reduction=reduction)
    else:
        out = distill_loss_reference(zl, yl, temperature=temperature, weight=wl,
                                     reduction=reduction)
    out.backward(go.to(out.dtype))
    return zl.grad


def row_grad_scale(n, go, weight, temperature, reduction):
    """|go_i w_i| / (T N_mean): the factor every gradient entry of row i carries."""
    g = go.double().abs().expand(n) if go.dim() == 0 else go.double().abs()
    if weight is not None:
        g = g * weight.double()
    g = g / temperature
    return g / n if reduction == "mean" else g


def assert_loss_close(out, ref):
    assert out.dtype == torch.float32
    assert out.shape == ref.shape
    err = (out.double() - ref.detach()).abs()
    tol = RTOL32 * (ref.detach().abs() + 1.0)
    assert bool((err <= tol).all()), f"loss error {err.max().item():.3g} > tol"


def roundings(go) -> int:
    """How many times the kernels round a low-precision gradient: once when grad_output is 1
    (written in the forward), twice otherwise (the backward scales the rounded value)."""
    return 1 if bool((go == 1).all()) else 2


def assert_grad_close(grad, ref_grad, row_scale, dtype, lowp_grad=None, n_round=1):
    """Elementwise: fp32 error plus n_round output ulps; and at most TORCH_LOWP_MULTIPLE times
    PyTorch's low-precision error (or n_round ulps of the largest entry, if that is larger)."""
    assert grad.dtype == dtype and grad.shape == ref_grad.shape
    if grad.numel() == 0:
        return
    g, r = grad.double(), ref_grad.detach()
    err = (g - r).abs()
    row_max = r.abs().amax(dim=1, keepdim=True)
    tol = (RTOL32 * row_max + ROW_SCALE_ATOL * row_scale[:, None]
           + n_round * (ULP[dtype] * 1.01 * r.abs() + ABS_ULP[dtype]))
    worst = (err - tol).max()
    assert bool(worst <= 0), f"gradient error exceeds tolerance by {worst.item():.3g}"
    if lowp_grad is not None:
        # A non-finite low-precision gradient means PyTorch failed outright: no bound from it.
        torch_err = (lowp_grad.double() - r).abs().max().nan_to_num(nan=float("inf"))
        floor = n_round * (ULP[dtype] * r.abs().max() + ABS_ULP[dtype]) + RTOL32 * r.abs().max()
        bound = torch.maximum(TORCH_LOWP_MULTIPLE * torch_err, floor)
        assert bool(err.max() <= bound), (
            f"kernel error {err.max().item():.3g} > {TORCH_LOWP_MULTIPLE} x torch low-precision "
            f"error {torch_err.item():.3g}")


def oracle_inputs(n, c, z_dtype, y_dtype, seed=0):
    """z (n, c) ~ N(0, 9) in z_dtype and softmax teacher rows in y_dtype, on DEVICE."""
    gen = torch.Generator().manual_seed(seed)
    z = (torch.randn(n, c, generator=gen, dtype=torch.float64) * 3).to(z_dtype)
    y = torch.softmax(torch.randn(n, c, generator=gen, dtype=torch.float64) * 3, dim=1)
    return z.to(DEVICE), y.to(y_dtype).to(DEVICE)


def check_against_oracle(z, y, alpha, k, *, mixing, reduction="none", go=None, **kw):
    """slam_loss_triton's loss and gradient (upstream gradient go, random by default) against
    the float64 oracle, with the tolerances above. Returns the kernel's gradient."""
    kw = {**dict(normalize=False, temperature=1.0, weight=None), **kw}
    n = z.shape[0]
    go = torch.randn(n, device=z.device) if go is None else go
    zk = z.clone().requires_grad_()
    out = slam_loss_triton(zk, y, alpha, k, reduction=reduction, mixing=mixing, **kw)
    out.backward(go)
    cpu = lambda t: t.cpu() if isinstance(t, torch.Tensor) else t  # noqa: E731
    z64, ref = reference(z.cpu(), y.cpu(), cpu(alpha), cpu(k), reduction=reduction,
                         mixing=mixing, **{**kw, "weight": cpu(kw["weight"])})
    ref.backward(go.cpu().double())
    assert_loss_close(out.detach().cpu(), ref)
    scale = row_grad_scale(n, go.cpu(), cpu(kw["weight"]), kw["temperature"], reduction)
    assert_grad_close(zk.grad.cpu(), z64.grad, scale, z.dtype, n_round=roundings(go.cpu()))
    return zk.grad
