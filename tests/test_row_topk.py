"""slam_bench.row_topk.largest: the kk largest entries of every row through group maxima must
be exactly torch.topk's values, ties included, at indices that hold them (distinct)."""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slam_bench import row_topk


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 31 - 1), st.integers(0, 6),
       st.sampled_from([2, 255, 256, 300, 1000, 1001, 4099]), st.integers(1, 80),
       st.sampled_from(["uniform", "ties", "all_equal", "zeros", "peaked"]))
def test_largest_is_exactly_topk(seed, n, c, kk, kind):
    kk = min(kk, c)
    gen = torch.Generator().manual_seed(seed)
    y = torch.rand(n, c, generator=gen)
    if kind == "ties":  # a few levels: ties at every rank, the kk-th included
        y = torch.randint(0, 3, (n, c), generator=gen).float()
    elif kind == "all_equal":
        y = torch.full((n, c), 0.25)
    elif kind == "zeros":
        y = y * (torch.rand(n, c, generator=gen) < 0.01)
    elif kind == "peaked":  # the top entries gathered in one column group
        y[:, ::max(1, c // 7)] += 10.0
    vals, idx = row_topk.largest(y, kk)
    assert torch.equal(vals, torch.topk(y, kk, dim=1).values)
    assert torch.equal(y.gather(1, idx), vals)
    assert all(len(set(row)) == kk for row in idx.tolist())


def test_grouping_is_used_on_wide_rows_and_not_on_narrow_ones():
    assert row_topk.group_size(1000, 6) > 1
    assert row_topk.group_size(100, 6) == 1  # below MIN_GROUPED_COLUMNS
    assert row_topk.group_size(300, 200) == 1  # too few groups to save anything


def test_non_contiguous_rows_fall_back_to_topk():
    y = torch.rand(1000, 9).t()  # (9, 1000) with column stride 9
    vals, idx = row_topk.largest(y, 6)
    assert torch.equal(vals, torch.topk(y, 6, dim=1).values)
    assert torch.equal(y.gather(1, idx), vals)
