"""Memory traffic of each path of the loss kernel, counted in Triton's interpreter: how many
times each element of z and y is read, and of dz written, against the design note at the top
of kernels/slam_triton.py (README's kernel table gives the same bytes). In particular a
streamed row whose k exceeds its top-k slots finds its threshold in radix_passes(LOW_BIT)
reads of y (2 for a bf16 teacher, 4 for fp32), not in one read per bit of the key (15-31).

The counter wraps the interpreter's masked load and store (every tl.load and tl.store goes
through them) and counts the lanes whose mask is on and whose address lies inside a tensor's
storage. The loss calls use overwrite_logits=True, so dz is written into the counted logits.
Every call is also checked against the float64 oracle. Interpreter only.
"""
from __future__ import annotations

import contextlib
import os
from unittest import mock
from typing import Dict, Iterator

import numpy as np
import pytest
import torch

from kernel_testlib import (DEVICE, assert_grad_close, assert_loss_close, oracle_inputs,
                            reference, row_grad_scale, small_blocks)
from slam_bench.kernels import kth_largest_rows, ops, slam_loss_triton
from slam_bench.kernels.threshold import LOW_BIT, radix_passes

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" or DEVICE != "cpu",
                                reason="counts the loads and stores of Triton's interpreter")


@contextlib.contextmanager
def traffic(**tensors: torch.Tensor) -> Iterator[Dict[str, Dict[str, float]]]:
    """Filled on exit: {name: {"read": r, "write": w}}, accesses per element of each tensor."""
    import triton.runtime.interpreter as ti

    spans = {name: (t.data_ptr(), t.data_ptr() + t.numel() * t.element_size())
             for name, t in tensors.items()}
    counts = {name: {"read": 0, "write": 0} for name in tensors}
    builder = ti.InterpreterBuilder
    load, store = builder.create_masked_load, builder.create_masked_store

    def count(kind, ptrs, mask):
        addr = np.asarray(ptrs.data).astype(np.uint64)
        on = np.broadcast_to(np.asarray(mask.data, dtype=bool), addr.shape)
        for name, (lo, hi) in spans.items():
            counts[name][kind] += int((on & (addr >= lo) & (addr < hi)).sum())

    def counting_load(self, ptrs, mask, *args):
        count("read", ptrs, mask)
        return load(self, ptrs, mask, *args)

    def counting_store(self, ptrs, value, mask, *args):
        count("write", ptrs, mask)
        return store(self, ptrs, value, mask, *args)

    result: Dict[str, Dict[str, float]] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builder, "create_masked_load", counting_load)
        mp.setattr(builder, "create_masked_store", counting_store)
        yield result
    for name, t in tensors.items():
        result[name] = {kind: n / t.numel() for kind, n in counts[name].items()}


@pytest.mark.every_kernel
@pytest.mark.parametrize("y_dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_streamed_threshold_beyond_the_slots_is_a_bounded_radix_select(y_dtype):
    """k above the slots: one read of y fills them, then radix_passes reads find t exactly."""
    n, c = 2, 40
    gen = torch.Generator().manual_seed(0)
    y = (torch.randint(1, 4, (n, c), generator=gen).float() / c).to(y_dtype)  # ties everywhere
    k = torch.tensor([9, 30], dtype=torch.int32)
    y, k = y.to(DEVICE), k.to(DEVICE)
    with traffic(y=y) as seen:
        got = kth_largest_rows(y, k, extract_k=16, stream_block=8, kcap=4)
    want = torch.sort(y.double(), dim=1, descending=True).values.gather(1, k.long()[:, None] - 1)
    assert torch.equal(got.double().cpu(), want.squeeze(1).cpu())
    passes = {torch.bfloat16: 2, torch.float16: 3, torch.float32: 4}[y_dtype]
    assert radix_passes(LOW_BIT[y_dtype]) == passes
    assert seen["y"]["read"] == 1 + passes


def _loss_traffic(c, k, dtype, teacher, grad, checked=False):
    """(z reads, y reads, dz writes) per element of one slam_loss_triton call on 2 rows,
    checked against the float64 oracle. checked: with the value checks' per-row stats (as
    check_values=True calls it), whose buffer must be read 0 and written exactly once."""
    z, y = oracle_inputs(2, c, dtype, dtype, seed=1)
    if teacher == "uniform":  # every entry tied at the threshold
        y = torch.full_like(y, 1.0 / c)
    leaf = z.clone().requires_grad_(grad)
    x = leaf * 1.0 if grad else leaf  # overwrite_logits writes dz into x's storage
    kw = dict(normalize=False, temperature=1.0, weight=None, reduction="none", mixing=True)
    stats = torch.empty((2, 3), dtype=torch.float32, device=DEVICE)
    watched = dict(z=x, y=y, stats=stats) if checked else dict(z=x, y=y)
    with traffic(**watched) as seen, \
            mock.patch.object(ops, "_stats_buffer", lambda z, on: stats if on else None):
        out = slam_loss_triton(x, y, 0.7, k, overwrite_logits=grad, value_stats=checked, **kw)
        if checked:
            out, _ = out
        if grad:
            out.sum().backward()
    if checked:
        assert seen["stats"] == {"read": 0, "write": 1}
    z64, ref = reference(z.cpu(), y.cpu(), 0.7, k.cpu() if torch.is_tensor(k) else k, **kw)
    assert_loss_close(out.detach().cpu(), ref)
    if grad:
        ref.sum().backward()
        scale = row_grad_scale(2, torch.ones(2), None, 1.0, "none")
        assert_grad_close(leaf.grad.cpu(), z64.grad, scale, dtype)
    return seen["z"]["read"], seen["y"]["read"], seen["z"]["write"]


# (path, C, k, teacher, reads of z, reads of y) with forward + backward (one write of dz).
# small_blocks makes C > 16 streamed in blocks of 8, as a real C > 8192 is; the design note's
# bytes per element are these counts times the bytes of z, y and dz. "rows" is a per-row k.
PATHS = [
    ("rows on chip", 16, 3, "soft", 1, 1),
    ("streamed", 40, 3, "soft", 2, 2),
    ("streamed, ties overflow the slots (k <= KCAP)", 40, 3, "uniform", 3, 3),
    ("streamed, k > KCAP (scalar k: 64 slots)", 80, 70, "soft", 3, "3+P"),
    ("streamed, per-row k > KCAP (16 slots)", 40, "rows", "soft", 3, "3+P"),
    ("streamed, k = C (pass 1 reads only z)", 40, 40, "soft", 3, 2),
]


@pytest.mark.parametrize("path,c,k,teacher,z_reads,y_reads", PATHS, ids=[p[0] for p in PATHS])
def test_bytes_per_element_of_each_path(path, c, k, teacher, z_reads, y_reads):
    dtype = torch.bfloat16
    if k == "rows":
        k = torch.tensor([20, 33], device=DEVICE)
    if y_reads == "3+P":
        y_reads = 3 + radix_passes(LOW_BIT[dtype])
    with small_blocks():
        got = _loss_traffic(c, k, dtype, teacher, grad=True)
        fwd = _loss_traffic(c, k, dtype, teacher, grad=False)
    assert got == (z_reads, y_reads, 1), path
    # The default value checks: the same passes over z and y, plus 12 B of stats per row.
    with small_blocks():
        assert _loss_traffic(c, k, dtype, teacher, grad=True, checked=True) == got, path
    # Forward only: no dz, and no gradient pass over z and y.
    extra = 0 if path == "rows on chip" else 1
    assert fwd == (z_reads - extra, y_reads - extra, 0), path
