"""The top-k threshold found inside the loss pass (kernels/threshold.py): every route (on-chip
extraction, on-chip bit bisection, the streamed top slots and their exact fallback) must return
exactly the k-th largest positive value of each row (ties included), or 0 when a row has fewer
than k positive entries, for every teacher dtype and k."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kernel_testlib import DEVICE, MINOR_SETTINGS
from slam_bench.kernels import kth_largest_rows

# (extract_k, stream_block, kcap): extraction only, bisection only, streamed with slots that
# usually hold the top k, streamed with slots too small (always the fallback).
ROUTES = [(64, 0, 8), (0, 0, 8), (16, 8, 8), (16, 8, 2)]


def expected(y, k):
    """Exact float64 k-th largest positive value per row (0 when fewer than k are positive)."""
    top = torch.sort(torch.where(y > 0, y.double(), 0.0), dim=1, descending=True).values
    return top.gather(1, (k.long() - 1)[:, None]).squeeze(1)


@MINOR_SETTINGS
@given(st.integers(0, 2 ** 31 - 1),
       st.sampled_from([(1, 2), (5, 3), (9, 16), (4, 17), (30, 5), (3, 40)]),
       st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
       st.sampled_from(["soft", "ties", "zeros", "tiny", "uniform"]), st.sampled_from(ROUTES))
def test_threshold_is_the_kth_largest_positive(seed, shape, dtype, kind, route):
    gen = torch.Generator().manual_seed(seed)
    n, c = shape
    extract_k, stream_block, kcap = route
    if stream_block:
        # A program per row, up to 31 fallback passes: keep the interpreter's work small.
        n, c = min(n, 2), min(c, 17)
    y = torch.softmax(torch.randn(n, c, generator=gen) * 3, dim=1)
    if kind == "ties":
        y = torch.randint(0, 3, (n, c), generator=gen).float() / c
    elif kind == "zeros":
        y = y * (torch.rand(n, c, generator=gen) < 0.4)
    elif kind == "uniform":  # every entry tied
        y = torch.full((n, c), 1.0 / c)
    elif kind == "tiny":
        # fp32: subnormals. bf16 keeps to tiny normal values: Triton's interpreter converts
        # bf16 subnormals (< 1.2e-38) to fp32 wrongly; a GPU converts them exactly.
        y = y * (1e-38 if dtype == torch.float32 else 1e-30)
    y = y.to(dtype)
    k = torch.randint(1, c + 1, (n,), generator=gen, dtype=torch.int32)
    got = kth_largest_rows(y.to(DEVICE), k.to(DEVICE), extract_k=extract_k,
                           stream_block=stream_block, kcap=kcap).cpu()
    assert got.dtype == torch.float32
    assert torch.equal(got.double(), expected(y, k))


@pytest.mark.every_kernel
@pytest.mark.parametrize("route", ROUTES)
def test_threshold_at_a_tie_keeps_every_tied_entry(route):
    y = torch.tensor([[0.4, 0.2, 0.2, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0]], device=DEVICE)
    extract_k, stream_block, kcap = route
    for k, want in ((1, 0.4), (2, 0.2), (4, 0.2), (5, 0.0), (9, 0.0)):
        kk = torch.tensor([k], dtype=torch.int32, device=DEVICE)
        got = kth_largest_rows(y, kk, extract_k=extract_k, stream_block=stream_block, kcap=kcap)
        assert got.item() == pytest.approx(want)
