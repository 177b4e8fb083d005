"""torch_backend.top_entries (torch.topk on the teacher's bit patterns) must return exactly
torch.topk's values, ties included, at indices that hold them, for float32 and float64."""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slam_bench.torch_backend import top_entries


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 31 - 1), st.integers(0, 6), st.sampled_from([1, 2, 7, 300, 1000]),
       st.integers(1, 12), st.sampled_from(["uniform", "ties", "zeros", "tiny"]),
       st.sampled_from([torch.float32, torch.float64]))
def test_top_entries_are_exactly_topk(seed, n, c, kk, kind, dtype):
    kk = min(kk, c)
    gen = torch.Generator().manual_seed(seed)
    y = torch.rand(n, c, generator=gen, dtype=torch.float64)
    if kind == "ties":  # a few levels: ties at every rank, the kk-th included
        y = torch.randint(0, 3, (n, c), generator=gen).double()
    elif kind == "zeros":
        y = y * (torch.rand(n, c, generator=gen) < 0.02)
    elif kind == "tiny":  # subnormal and normal values together
        y = y * torch.where(torch.rand(n, c, generator=gen) < 0.5, 1e-300, 1.0)
    y = y.to(dtype)
    vals, idx = top_entries(y, kk)
    assert vals.dtype == dtype
    assert torch.equal(vals, torch.topk(y, kk, dim=1).values)
    assert torch.equal(y.gather(1, idx), vals)
    assert all(len(set(row)) == kk for row in idx.tolist())


def test_non_contiguous_and_other_dtypes_use_plain_topk():
    y = torch.rand(1000, 9).t()  # column stride 9
    vals, idx = top_entries(y, 6)
    assert torch.equal(vals, torch.topk(y, 6, dim=1).values)
    yb = torch.rand(4, 50).to(torch.bfloat16)
    assert torch.equal(top_entries(yb, 3)[0], torch.topk(yb, 3, dim=1).values)
