"""The top-k threshold pre-step: the bisection kernel and the torch paths must return exactly
the k-th largest value of each row (ties included), for every dtype, k and block layout."""
from __future__ import annotations

import contextlib

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kernel_testlib import DEVICE, MINOR_SETTINGS, small_blocks
from slam_bench.kernels import ops, topk_threshold


def kth_largest(y, k):
    """Exact float64 k-th largest per row, by a full sort."""
    top = torch.sort(y.double(), dim=1, descending=True).values
    return top.gather(1, (k.long() - 1)[:, None]).squeeze(1)


@MINOR_SETTINGS
@given(st.integers(0, 2 ** 31 - 1),
       st.sampled_from([(1, 2), (5, 3), (9, 16), (4, 17), (70, 5), (3, 40), (2, 300)]),
       st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
       st.sampled_from(["soft", "ties", "zeros", "tiny"]), st.booleans())
def test_bisection_threshold_is_the_kth_largest(seed, shape, dtype, kind, small):
    gen = torch.Generator().manual_seed(seed)
    n, c = shape
    c = min(c, 40) if small else c  # streamed rows are re-read 31 times: keep them short here
    y = torch.softmax(torch.randn(n, c, generator=gen) * 3, dim=1)
    if kind == "ties":
        y = torch.randint(0, 3, (n, c), generator=gen).float() / c
    elif kind == "zeros":
        y = y * (torch.rand(n, c, generator=gen) < 0.4)
    elif kind == "tiny":
        # fp32: subnormals. bf16 keeps to tiny normal values: Triton's interpreter converts
        # bf16 subnormals (< 1.2e-38) to fp32 wrongly; a GPU converts them exactly.
        y = y * (1e-38 if dtype == torch.float32 else 1e-30)
    y = y.to(dtype)
    k = torch.randint(1, c + 1, (n,), generator=gen)
    with small_blocks() if small else contextlib.nullcontext():
        got = topk_threshold(y.to(DEVICE), k.to(DEVICE)).cpu()
    assert got.dtype == torch.float32
    assert torch.equal(got.double(), kth_largest(y, k))


@pytest.mark.parametrize("k", [1, 2, ops.TOPK_MAX_K, ops.TOPK_MAX_K + 1, 199, 200])
def test_scalar_k_paths_agree(k):
    """k = 1, k <= TOPK_MAX_K (torch.topk), larger k (bisection kernel) and k = C."""
    gen = torch.Generator().manual_seed(k)
    y = torch.randint(0, 50, (6, 200), generator=gen).float().to(torch.bfloat16) / 200
    got = topk_threshold(y.to(DEVICE), k).cpu()
    assert torch.equal(got.double(), kth_largest(y, torch.full((6,), k)))


def test_threshold_op_passes_opcheck():
    y = torch.softmax(torch.randn(5, 9), dim=1).to(DEVICE)
    k = torch.tensor([1, 2, 3, 9, 4], dtype=torch.int32, device=DEVICE)
    torch.library.opcheck(ops.topk_threshold_op, (y, k))
