"""Unchecked input (check_values=False) never makes a kernel read or write outside its tensors.

The interpreter does not bounds-check raw pointers, so the test builds the check itself: every
tensor a kernel touches is a view into the middle of a NaN-poisoned buffer large enough to hold
any address the bad input could reach (a logit id of +-10**6 included), with padding columns
between rows. A read outside the view hits NaN and shows up in the result (checked where the
other inputs are valid, so the result must stay finite); a write outside it overwrites the
poison (checked everywhere). What the result is for such input is unspecified; only memory
safety is promised.
"""
from __future__ import annotations

from contextlib import contextmanager
from unittest import mock

import pytest
import torch

from kernel_testlib import small_blocks
from slam_bench.kernels import kth_largest_rows, slam_loss_triton, topk_chunk_inplace
from slam_bench.kernels import slam_triton, topk_triton
from slam_bench.kernels.ops_topk import slam_loss_topk_triton

FAR = 10 ** 6  # the farthest id the test feeds: the poison reaches past it on both sides
PAD = 3  # poisoned columns after each row


class Poisoned:
    """(n, c) views with row stride c + PAD at offset FAR + PAD into a NaN buffer."""

    def __init__(self):
        self.bufs = []

    def view(self, n, c, dtype=torch.float32, fill=None):
        buf = torch.full((2 * FAR + (n + 2) * (c + PAD),), float("nan"), dtype=dtype)
        v = buf[FAR + PAD:FAR + PAD + n * (c + PAD)].view(n, c + PAD)[:, :c]
        if fill is not None:
            v.copy_(fill)
        self.bufs.append((buf, v))
        return v

    def assert_untouched(self):
        for buf, v in self.bufs:
            inside = torch.zeros_like(buf, dtype=torch.bool)
            inside.as_strided(v.shape, v.stride(), v.storage_offset()).fill_(True)
            assert torch.isnan(buf[~inside]).all(), "a kernel wrote outside its tensor"


@contextmanager
def poisoned_empty(pois: Poisoned, n: int, v: int):
    """torch.empty((n, v)) inside the top-K launchers (the gradient) -> a poisoned view."""
    real = torch.empty

    def empty(*size, **kw):
        if size == ((n, v),):
            return pois.view(n, v, dtype=kw.get("dtype") or torch.float32)
        return real(*size, **kw)

    with mock.patch.object(topk_triton.torch, "empty", empty):
        yield


def _dense(n, c, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=gen)
    y = torch.softmax(2 * torch.randn(n, c, generator=gen), 1)
    return z, y


BAD_K = [0, -3, "C+1", FAR]
BAD_ALPHA = [0.0, -0.5, 1.5, float("nan")]


def _k(k, c):
    return c + 1 if k == "C+1" else k


@pytest.mark.parametrize("c", [12, 40])  # on chip, streamed (small_blocks)
@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("k", BAD_K)
def test_dense_kernel_bad_k(c, per_row, k):
    n = 5
    pois = Poisoned()
    z0, y0 = _dense(n, c)
    z, y = pois.view(n, c, fill=z0), pois.view(n, c, fill=y0)
    dz = pois.view(n, c)
    kk = torch.full((n,), _k(k, c), dtype=torch.int64) if per_row else _k(k, c)
    with small_blocks():
        # The launcher itself, with the gradient buffer ours (poisoned around it).
        one = torch.ones(n)
        kv = (kk if per_row else torch.full((n,), _k(k, c))).to(torch.int32)
        rows = slam_triton.slam_launch(z, y, 0.7 * one, one, kv, one / n, 1.0, True, 0,
                                       0 if per_row else _k(k, c), dz)
        fwd = slam_loss_triton(z, y, 0.7, kk, normalize=False, temperature=1.0, weight=None,
                               reduction="none")
        t = kth_largest_rows(y, kv, extract_k=16)
    pois.assert_untouched()
    assert torch.isfinite(rows).all() and torch.isfinite(dz).all() and torch.isfinite(fwd).all()
    assert torch.isfinite(t).all()
    # The documented clamp: k outside [1, C] acts as the nearest end of the range.
    kc = min(max(_k(k, c), 1), c)
    with small_blocks():
        ref = slam_loss_triton(z0, y0, 0.7, kc, normalize=False, temperature=1.0, weight=None,
                               reduction="none")
    torch.testing.assert_close(fwd, ref)


@pytest.mark.parametrize("c", [12, 40])
@pytest.mark.parametrize("alpha", BAD_ALPHA)
def test_dense_kernel_bad_alpha(c, alpha):
    n = 4
    pois = Poisoned()
    z0, y0 = _dense(n, c, 1)
    z, y = pois.view(n, c, fill=z0), pois.view(n, c, fill=y0)
    z.requires_grad_()
    with small_blocks():
        out = slam_loss_triton(z, y, torch.full((n,), alpha), 3, normalize=True, temperature=1.0,
                               weight=None, reduction="sum")
        out.backward()
        slam_loss_triton(z.detach(), y, alpha, 3, normalize=False, temperature=1.0, weight=None,
                         reduction="none", overwrite_logits=True)
    pois.assert_untouched()


def _topk_inputs(n, v, kk, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, v, generator=gen)
    ids = torch.stack([torch.randperm(v, generator=gen)[:kk] for _ in range(n)])
    p = torch.softmax(torch.randn(n, kk, generator=gen), 1) * 0.9
    return z, ids, p


BAD_IDS = ["V", FAR, -1, -FAR]


@pytest.mark.every_kernel
@pytest.mark.parametrize("v", [24, 9000])  # on chip, streamed (above MAX_SINGLE_BLOCK)
@pytest.mark.parametrize("bad", BAD_IDS)
def test_topk_kernels_bad_ids(v, bad):
    n, kk = 2, 4
    pois = Poisoned()
    z0, ids0, p0 = _topk_inputs(n, v, kk)
    ids0[:, 1] = v if bad == "V" else bad  # column 0 stays valid: it marks ignored rows
    z = pois.view(n, v, fill=z0)
    ids = ids0.clone()
    p = pois.view(n, kk, fill=p0)
    a = torch.full((n,), 0.7)
    s = torch.ones(n)
    th = p0.topk(2, dim=1).values[:, 1].contiguous()
    z.requires_grad_()
    with poisoned_empty(pois, n, v):
        rows = slam_loss_topk_triton(z, ids, p, a, s, th, 1.0, -100, True)
        (g,) = torch.autograd.grad(rows.sum(), z)
    assert torch.isfinite(rows).all() and torch.isfinite(g).all()
    logits = pois.view(n, v, fill=z0)
    loss = topk_chunk_inplace(logits, ids, p, a, s, th, torch.ones(n), 1.0, -100, True)
    assert torch.isfinite(loss).all() and torch.isfinite(logits).all()
    pois.assert_untouched()
    # An id outside [0, V) is dropped: the loss is that of the row without it.
    keep = torch.ones(kk, dtype=torch.bool)
    keep[1] = False
    ref = slam_loss_topk_triton(z0, ids0[:, keep].contiguous(), p0[:, keep].contiguous(), a, s,
                                th, 1.0, -100, True)
    torch.testing.assert_close(rows.detach(), ref)


@pytest.mark.parametrize("k", [0, -2, 5, FAR])
@pytest.mark.parametrize("per_row", [False, True])
def test_topk_threshold_clamps_k(k, per_row):
    """The top-K mask threshold (computed in torch before the kernels) clamps k into [1, K]."""
    from slam_bench.vocab.functional import kth_largest
    p = torch.tensor([[0.5, 0.2, 0.1, 0.05]])
    kk = torch.tensor([k]) if per_row else k
    assert float(kth_largest(p, kk)) == float(p[0, min(max(k, 1), 4) - 1])
