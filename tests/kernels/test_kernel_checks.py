"""The default value checks on the Triton path are fused into the loss kernel: it writes each
row's check numbers (min y, sum y, sum z * 0) from the loads it makes anyway, the host reads
four numbers with one copy, and the errors are the torch backend's, word for word. No aten op
reads z's or y's storage besides the kernel launch (counted with a TorchDispatchMode), and
check_values=False writes no stats at all.
"""
from __future__ import annotations

import contextlib
import math
import sys
from unittest import mock

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from kernel_testlib import DEVICE, oracle_inputs, small_blocks
from slam_bench import checks, distill_loss, slam_loss
from slam_bench.kernels import ops, slam_triton


def _set(t, idx, value):
    t = t.clone()
    t[idx] = value
    return t


# (id, bad (z, y) from good ones); every entry lands in the last row, late in it (the
# streamed rows' tail tile), except where a case says otherwise.
BAD = {
    "logits_nan": lambda z, y: (_set(z, (-1, -2), math.nan), y),
    "logits_inf": lambda z, y: (_set(z, (-1, -1), math.inf), y),
    "logits_neg_inf": lambda z, y: (_set(z, (0, 3), -math.inf), y),
    "probs_nan": lambda z, y: (z, _set(y, (-1, -3), math.nan)),
    "probs_inf": lambda z, y: (z, _set(y, (-1, 1), math.inf)),
    "probs_neg_inf": lambda z, y: (z, _set(y, (0, -1), -math.inf)),
    "probs_negative": lambda z, y: (z, _set(_set(y, (-1, -1), -0.1), (-1, 0), y[-1, 0] + 0.1)),
    "probs_not_simplex": lambda z, y: (z, _set(y, -1, y[-1] * 1.01)),
    "probs_and_logits": lambda z, y: (_set(z, (0, 0), math.nan), _set(y, -1, y[-1] * 1.5)),
}

# Launch paths: rows on chip; streamed (small blocks: C = 37 streams in blocks of 8 with a
# peeled head for fp32 and an odd C) for SLaM with top-k slots, k = C (pass 1 reads only z)
# and vanilla distillation.
PATHS = {
    "on_chip_slam": dict(c=13, streamed=False, loss="slam", k=3),
    "on_chip_distill": dict(c=13, streamed=False, loss="distill", k=None),
    "streamed_slam": dict(c=37, streamed=True, loss="slam", k=3),
    "streamed_all_mixed": dict(c=37, streamed=True, loss="slam", k=37),
    "streamed_distill": dict(c=37, streamed=True, loss="distill", k=None),
}


def _call(path, z, y, backend, **kw):
    if path["loss"] == "slam":
        return slam_loss(z, y, 0.7, path["k"], backend=backend, **kw)
    return distill_loss(z, y, backend=backend, **kw)


def _error(path, z, y, backend, **kw):
    try:
        _call(path, z, y, backend, **kw)
    except ValueError as e:
        return str(e)
    return None


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("pid", sorted(PATHS))
def test_fused_checks_raise_the_torch_backends_errors(pid, case):
    path = PATHS[pid]
    z, y = oracle_inputs(3, path["c"], torch.float32, torch.float32)
    z, y = BAD[case](z, y)
    want = _error(path, z, y, "torch")
    assert want is not None
    with small_blocks() if path["streamed"] else contextlib.nullcontext():
        got = _error(path, z.clone().requires_grad_(), y, "triton")
        assert got == want
        with torch.no_grad():  # the forward-only op checks too
            assert _error(path, z, y, "triton") == want
        h = z.clone().requires_grad_() * 1.0  # and the op writing dL/dz over the logits
        assert _error(path, h, y, "triton", overwrite_logits=True) == want


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-3), (torch.bfloat16, 1e-2),
                                        (torch.float16, 1e-2)])
def test_simplex_tolerance_follows_the_teacher_dtype(dtype, atol):
    z, y = oracle_inputs(4, 11, torch.float32, torch.float32)
    ok = (y.double() * (1 + atol / 2)).to(dtype)  # off by about atol / 2: accepted
    bad = (y.double() * (1 + 2 * atol)).to(dtype)
    slam_loss(z, ok, 0.7, 2, backend="triton")
    with pytest.raises(ValueError, match=f"teacher_probs rows must sum to 1 within {atol:g}"):
        slam_loss(z, bad, 0.7, 2, backend="triton")


class _StorageReads(TorchDispatchMode):
    """Records every op whose tensor arguments share storage with the watched tensors, and
    (deep=True) also the ops inside this project's custom ops (their Python bodies rerun
    under the mode), except those the Triton interpreter makes to stage a launch's arguments:
    a check pass hidden in a custom op would show up too."""

    def __init__(self, *watched, deep=False):
        super().__init__()
        self.ptrs = {t.untyped_storage().data_ptr() for t in watched}
        self.deep = deep
        self.ops = []

    def _reads(self, args, kwargs):
        flat, _ = tree_flatten((args, kwargs))
        return any(isinstance(a, torch.Tensor) and a.untyped_storage().data_ptr() in self.ptrs
                   for a in flat)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self._reads(args, kwargs) and not _in_triton_launch():
            self.ops.append(str(func))
        body = (getattr(getattr(ops, func._opname, None), "_init_fn", None)
                if self.deep and func.namespace == "slam_bench" else None)
        if body is not None:
            with self:
                return body(*args, **kwargs)
        return func(*args, **kwargs)


def _in_triton_launch() -> bool:
    f = sys._getframe(1)
    while f is not None:
        if "triton" in f.f_code.co_filename and "interpreter" in f.f_code.co_filename:
            return True
        f = f.f_back
    return False


@pytest.mark.every_kernel
@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("deep", [False, True])
def test_default_checks_read_z_and_y_only_in_the_kernel(streamed, deep):
    """With check_values=True (the default), the only op touching z's or y's storage is the
    loss op itself (the kernel launch); a separate check pass would add aten reads."""
    z, y = oracle_inputs(6, 21, torch.float32, torch.float32)
    z.requires_grad_()
    # The mode sees a check pass: the one the Triton path ran before the checks were fused.
    with _StorageReads(z, y, deep=deep) as seen:
        checks.value_stats(y, z.detach())
    assert any("aminmax" in op or "sum" in op for op in seen.ops)
    frozen = z.detach()  # the forward-only op
    with small_blocks() if streamed else contextlib.nullcontext():
        for fn in (lambda: slam_loss(z, y, 0.7, 3, backend="triton"),
                   lambda: distill_loss(z, y, backend="triton"),
                   lambda: slam_loss(frozen, y, 0.7, 3, backend="triton")):
            with _StorageReads(z, y, deep=deep) as seen:
                loss = fn()
                if loss.requires_grad:
                    loss.backward()
            assert [op for op in seen.ops if not op.startswith("slam_bench.")] == [], seen.ops
            assert len([op for op in seen.ops if op.startswith("slam_bench.slam_rows")]) == 1


def test_stats_are_read_with_one_copy_and_only_when_checking():
    """check_values=True: one (N, 3) stats buffer goes to the kernel and one (4,) tensor to
    the host, the only read back (no .item()). check_values=False: no stats buffer, nothing
    read back."""
    z, y = oracle_inputs(5, 9, torch.float32, torch.float32)
    launch = mock.MagicMock(wraps=slam_triton.slam_launch)
    reads = []
    real_tolist, real_item = torch.Tensor.tolist, torch.Tensor.item

    def tolist(t):
        reads.append(("tolist", tuple(t.shape)))
        return real_tolist(t)

    def item(t):
        reads.append(("item", tuple(t.shape)))
        return real_item(t)

    with mock.patch.object(ops, "slam_launch", launch), \
            mock.patch.object(torch.Tensor, "tolist", tolist), \
            mock.patch.object(torch.Tensor, "item", item):
        slam_loss(z.clone().requires_grad_(), y, 0.7, 3, backend="triton").backward()
        stats = launch.call_args.args[-1]
        assert stats.shape == (5, 3) and stats.dtype == torch.float32
        assert reads == [("tolist", (4,))]
        launch.reset_mock()
        reads.clear()
        bad = _set(y, (0, 0), math.nan)
        slam_loss(z.clone().requires_grad_(), bad, 0.7, 3, backend="triton",
                  check_values=False).backward()
        distill_loss(z, bad, backend="triton", check_values=False)
        assert launch.call_count == 2
        assert all(c.args[-1] is None for c in launch.call_args_list)
        assert reads == []


def test_kernel_stats_per_row():
    """The kernel's per-row numbers themselves, on chip and streamed."""
    z, y = oracle_inputs(4, 29, torch.float32, torch.bfloat16)
    z = _set(z, (2, 28), math.inf)
    one = torch.ones(1, device=DEVICE).expand(4)
    k = torch.full((4,), 2, dtype=torch.int32, device=DEVICE)
    for streamed in (False, True):
        with small_blocks() if streamed else contextlib.nullcontext():
            st = torch.full((4, 3), -7.0, device=DEVICE)
            ops.slam_rows(z, y, 0.7 * one, one, k, 1.0, True, 0, 2, st)
        torch.testing.assert_close(st[:, 0], y.float().amin(dim=1), rtol=0, atol=0)
        torch.testing.assert_close(st[:, 1], y.float().sum(dim=1), rtol=1e-6, atol=1e-6)
        assert st[:, 2].isnan().tolist() == [False, False, True, False]
        assert (st[[0, 1, 3], 2] == 0).all()
