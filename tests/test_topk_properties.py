"""Property tests of `slam_loss_topk` and `fused_linear_slam_loss` on both backends (torch, and
Triton under the CPU interpreter) against the float64 dense oracle; policy in topk_cases.py.

Drawn: N in {0, 1, 2, 3, 5, 9}, V from 2 to 3000, K from 1 to 64, k (scalar or per row) in
range, normalize, alpha (scalar, 1 = distillation, per row), ignored rows (their other ids out
of range and their probabilities NaN, so reading them would show), every teacher kind
(flat, peaked, ties, zeros, summing to 1), temperature, weights with zeros, every reduction,
a non-trivial grad_output, logits shifted by +100 and confident rows; on Triton, also the
streaming path at small V (the on-chip limit shrunk to 16 logits, blocks of 8).
tests/kernels/test_kernel_topk.py runs the real limit once.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slam_bench import fused_linear_slam_loss, slam_loss_topk
from topk_cases import (LOWP_MULTIPLE, ULP, assert_logit_grad_close, assert_loss_close,
                        assert_matmul_grad_close, build, fused_oracle, grad_output, kwargs_of,
                        lowp_dense_grads, oracle_logits, row_scale, topk_cases)

HAS_TRITON = importlib.util.find_spec("triton") is not None
BACKENDS = ["torch"] + (["triton"] if HAS_TRITON else [])
LOWP = (torch.float16, torch.bfloat16)
DTYPES = {"torch": (torch.float32, torch.float64) + LOWP, "triton": (torch.float32,) + LOWP}
# Sized for the 2-core CI machine (the interpreter runs each program in Python);
# HYPOTHESIS_PROFILE=gpu draws 10x more on a GPU, where launches cost microseconds.
_SCALE = 10 if os.environ.get("HYPOTHESIS_PROFILE") == "gpu" else 1
SETTINGS = {"torch": settings(max_examples=60, deadline=None, derandomize=True),
            "triton": settings(max_examples=35 * _SCALE, deadline=None, derandomize=True)}


def _blocks(backend: str, small: bool):
    """Shrink the Triton launch heuristic so that tiny V takes the streaming path."""
    if backend != "triton" or not small:
        return contextlib.nullcontext()
    from slam_bench.kernels import topk_triton
    return mock.patch.multiple(topk_triton, MAX_SINGLE_BLOCK=16, STREAM_BLOCK=8)


def _device(backend: str) -> str:
    # Triton runs on CUDA where there is a GPU, in the interpreter on CPU tensors elsewhere.
    return "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"


def _result_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_topk(backend, case, small_blocks):
    t = build(case, _device(backend))
    z = t["z"].clone().requires_grad_()
    with _blocks(backend, small_blocks):
        out = slam_loss_topk(z, t["ids"], t["probs"], t["alpha"], t["k"], backend=backend,
                             **kwargs_of(case, t))
        z64 = t["z"].double().requires_grad_()
        ref = oracle_logits(case, t, z64)
        assert_loss_close(out, ref, _result_dtype(case["dtype"]))
        go = grad_output(ref, case["seed"])
        out.backward(go.to(out.dtype))
    ref.backward(go)
    assert_logit_grad_close(z.grad, z64.grad, row_scale(case, t, go), case["dtype"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_slam_loss_topk_matches_dense_oracle(backend):
    @SETTINGS[backend]
    @given(case=topk_cases(dtypes=DTYPES[backend]), small_blocks=st.booleans())
    def run(case, small_blocks):
        check_topk(backend, case, small_blocks)
    run()


def check_fused(backend, case, small_blocks):
    t = build(case, _device(backend))
    h = t["hidden"].clone().requires_grad_()
    w = t["lm_weight"].clone().requires_grad_()
    b = t["bias"].clone().requires_grad_() if t["bias"] is not None else None
    with _blocks(backend, small_blocks):
        out = fused_linear_slam_loss(h, w, t["ids"], t["probs"], t["alpha"], t["k"], bias=b,
                                     chunk_size=case["chunk_size"], backend=backend,
                                     **kwargs_of(case, t))
        ref, refs, go = fused_oracle(case, t)
        out.backward(go.to(out.dtype))
    got = {"hidden": h.grad, "lm_weight": w.grad, "bias": b.grad if b is not None else None}
    dtype = case["dtype"]
    if dtype not in LOWP:
        assert_loss_close(out, ref, _result_dtype(dtype))
        for name, (rg, bound) in refs.items():
            assert_matmul_grad_close(name, got[name], rg, bound)
        return
    # Low precision: logits, d(logits) and matmuls in the input dtype; judged against
    # PyTorch's own dense path in that dtype.
    assert out.dtype == torch.float32
    lowp = lowp_dense_grads(case, t, go)
    for name, (rg, _) in refs.items():
        assert got[name].dtype == dtype
        if not rg.numel():
            continue
        err = (got[name].double() - rg).abs().max()
        torch_err = (lowp[name].double() - rg).abs().max().nan_to_num(nan=float("inf"))
        floor = 4 * ULP[dtype] * rg.abs().max()
        assert bool(err <= torch.maximum(LOWP_MULTIPLE * torch_err, floor)), (
            f"{name}: error {err.item():.3g} > {LOWP_MULTIPLE} x PyTorch's {torch_err.item():.3g}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_linear_matches_dense_oracle(backend):
    @SETTINGS[backend]
    @given(case=topk_cases(dtypes=DTYPES[backend], widths=(100, 257, 1000), fused=True),
           small_blocks=st.booleans())
    def run(case, small_blocks):
        check_fused(backend, case, small_blocks)
    run()
