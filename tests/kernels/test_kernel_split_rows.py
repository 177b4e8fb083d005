"""Streamed rows split over several programs (kernels/split_rows.py), under the interpreter.

The split applies where a GPU has more SMs than a few wide rows can fill; on CPU there are no
SMs, so these tests set config.SM_COUNT_OVERRIDE and shrink the blocks (small_blocks) to run
it at tiny C, and count the split launches so that a silent fallback to the unsplit kernel
fails. Every case is checked against the float64 oracle (or the torch backend for ties), as
the unsplit paths are: scalar and per-row k, distillation, temperature, weights, upstream
gradients, a threshold tied across ranges and k above the slots (the exact fallback), the
forward-only and overwrite_logits variants, the fused value checks, NaN-poisoned padding, and
unchecked k outside [1, C].
"""
from __future__ import annotations

import contextlib
from unittest import mock

import pytest
import torch

from kernel_testlib import DEVICE, check_against_oracle, oracle_inputs, small_blocks
from slam_bench import distill_loss, slam_loss
from slam_bench.kernels import config, slam_loss_triton
from slam_bench.kernels import split_rows as SR

SMS = 4  # a pretend GPU: fewer than 2 x 4 rows get split


@contextlib.contextmanager
def split(sms=SMS):
    """Small blocks (8-wide streamed tiles above 16 columns), the pretend SM count, and a
    counter of split launches."""
    calls = []
    real = SR.split_launch

    def counted(*args, **kw):
        calls.append(kw.get("parts", args[10] if len(args) > 10 else None))
        return real(*args, **kw)

    with small_blocks(single=16, stream=8, tile=64), \
            mock.patch.object(config, "SM_COUNT_OVERRIDE", sms), \
            mock.patch.object(SR, "split_launch", counted):
        yield calls


@pytest.mark.parametrize("n,c,blocks,parts,span", [
    (3, 45, 8, 3, 2),    # 6 tiles, ceil(8 / 3) = 3 wanted: spans of 2 tiles
    (2, 100, 8, 4, 4),   # 13 tiles, 4 wanted: spans of 4, the last range holds 1 tile
    (7, 45, 8, 2, 3),    # 7 rows: 2 parts wanted
    (8, 45, 8, 1, 0),    # 8 rows fill 2 x 4 SMs: no split
    (1, 8, 8, 1, 0),     # one tile: nothing to split
    (1, 10 ** 6, 8, 8, 15625),  # one row, 2 x 4 programs wanted
])
def test_split_parts_cover_each_row_with_whole_tiles(n, c, blocks, parts, span):
    got = config.split_parts(n, c, blocks, SMS)
    assert got == (parts, span)
    if parts > 1:
        tiles = -(-c // blocks)
        assert (parts - 1) * span < tiles <= parts * span  # every range non-empty, row covered
    assert config.split_parts(n, c, blocks, None) == (1, 0)  # CPU: never split


def test_no_split_turns_the_split_off_and_restores_it_after_an_error():
    assert config.split_parts(1, 10 ** 6, 8, SMS) == (8, 15625)
    with pytest.raises(RuntimeError, match="inside"):
        with config.no_split():
            assert config.split_parts(1, 10 ** 6, 8, SMS) == (1, 0)
            raise RuntimeError("inside")
    assert config.split_parts(1, 10 ** 6, 8, SMS) == (8, 15625)


def test_split_parts_are_capped_for_the_combine_step():
    assert config.split_parts(1, 10 ** 6, 8, 1000) == (config.MAX_SPLITS, 3907)


def test_cpu_default_never_splits():
    z, y = oracle_inputs(2, 45, torch.float32, torch.float32)
    with small_blocks(single=16, stream=8, tile=64), \
            mock.patch.object(SR, "split_launch", side_effect=AssertionError("split on CPU")):
        slam_loss_triton(z, y, 0.7, 2, normalize=False, temperature=1.0, weight=None,
                         reduction="sum")


def test_no_split_launches_one_program_per_row_with_the_same_loss():
    """config.no_split() (the profiler's unsplit provider) really takes the unsplit kernel on a
    case that splits, and gives the split launch's loss and gradient."""
    z, y = oracle_inputs(3, 45, torch.float32, torch.float32, seed=3)
    results = []
    for off in (False, True):
        with split() as calls, (config.no_split() if off else contextlib.nullcontext()):
            zz = z.clone().requires_grad_(True)
            loss = slam_loss(zz, y, 0.7, 3, backend="triton", reduction="sum")
            loss.backward()
        assert len(calls) == (0 if off else 1)
        results.append((loss.detach(), zz.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-5, atol=1e-6)


@pytest.mark.every_kernel
@pytest.mark.parametrize("case", ["scalar_k", "per_row_k", "distill", "normalized_t_weight",
                                  "bf16", "k1"])
def test_split_rows_match_the_oracle(case):
    n, c = 3, 45
    z, y = oracle_inputs(n, c, torch.bfloat16 if case == "bf16" else torch.float32,
                         torch.float32, seed=7)
    alpha = torch.tensor([0.6, 0.75, 0.9], device=DEVICE)
    k = {"per_row_k": torch.tensor([1, 3, 5], device=DEVICE), "k1": 1}.get(case, 3)
    kw = {}
    if case == "normalized_t_weight":
        kw = dict(normalize=True, temperature=2.0,
                  weight=torch.tensor([0.5, 1.0, 2.0], device=DEVICE))
    with split() as calls:
        check_against_oracle(z, y, alpha, k, mixing=case != "distill", **kw)
        check_against_oracle(z, y, alpha, k, mixing=case != "distill", reduction="mean",
                             go=torch.ones((), device=DEVICE), **kw)
    assert len(calls) == 2 and all(p == 3 for p in calls)


@pytest.mark.parametrize("k", [2, 20])
def test_ties_across_ranges_and_k_above_the_slots_take_the_exact_fallback(k):
    """Three ranges of 72 columns, each wider than its 16 slots: a threshold tied over 196
    entries spread over every range, and k = 20 above the slots: the combine step's full-row
    fallback (a radix select for k = 20) must agree with the torch backend."""
    c = 200
    y = torch.full((3, c), 1.0 / c, device=DEVICE)
    y[1, :4] = 3.0 / c
    y[1] /= y[1].sum()
    z = torch.randn(3, c, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    kk = torch.full((3,), k, device=DEVICE)  # per-row: 16 slots, so k = 20 overflows them
    assert config.split_parts(3, c, 8, SMS) == (3, 9)
    grads, losses = [], []
    for backend in ("triton", "torch"):
        zz = z.clone().requires_grad_()
        with split() as calls:
            loss = slam_loss(zz, y, 0.7, kk, reduction="none", backend=backend)
        loss.backward(torch.ones(3, device=DEVICE))
        losses.append(loss.detach())
        grads.append(zz.grad)
        assert len(calls) == (backend == "triton")
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_forward_only_and_overwrite_logits_variants():
    z, y = oracle_inputs(2, 100, torch.float32, torch.float32, seed=3)
    with split() as calls:
        ref = slam_loss(z.clone().requires_grad_(), y, 0.8, 4, backend="triton", reduction="sum")
        with torch.no_grad():
            fwd = slam_loss(z, y, 0.8, 4, backend="triton", reduction="sum")
        h = z.clone().requires_grad_()
        hh = h * 1.0
        out = slam_loss(hh, y, 0.8, 4, backend="triton", reduction="sum", overwrite_logits=True)
        out.backward()
    want = slam_loss(z, y, 0.8, 4, backend="torch", reduction="sum")
    torch.testing.assert_close(fwd, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ref.detach(), want, rtol=1e-5, atol=1e-5)
    zt = z.clone().requires_grad_()
    slam_loss(zt, y, 0.8, 4, backend="torch", reduction="sum").backward()
    torch.testing.assert_close(h.grad, zt.grad, rtol=1e-5, atol=1e-6)
    assert len(calls) == 3


@pytest.mark.parametrize("bad", ["nan_logit", "negative_teacher", "teacher_sum"])
def test_fused_checks_in_split_rows_raise_the_torch_backends_errors(bad):
    z, y = oracle_inputs(3, 45, torch.float32, torch.float32, seed=4)
    if bad == "nan_logit":
        z[1, 40] = float("nan")  # in the last range
    elif bad == "negative_teacher":
        y[2, 3], y[2, 4] = -0.01, y[2, 4] + 0.01
    else:
        y[0] *= 1.5
    errors = []
    for backend in ("torch", "triton"):
        with split() as calls:
            try:
                slam_loss(z.clone().requires_grad_(), y, 0.7, 3, backend=backend)
            except ValueError as e:
                errors.append(str(e))
            try:
                distill_loss(z.clone().requires_grad_(), y, backend=backend)
            except ValueError as e:
                errors.append(str(e))
        assert len(calls) == (2 if backend == "triton" else 0)
    assert len(errors) == 4 and errors[:2] == errors[2:]


@pytest.mark.parametrize("k", [0, -3, 46, 10 ** 9])
def test_unchecked_k_outside_the_row_is_clamped_and_poisoned_padding_never_read(k):
    """Views into NaN-filled buffers (row stride past C, rows past N): any load outside the
    view turns the result NaN; k outside [1, C] acts as the nearest end, as unsplit."""
    n, c = 3, 45
    big_z = torch.full((n + 2, c + 7), float("nan"), device=DEVICE)
    big_y = torch.full((n + 2, c + 7), float("nan"), device=DEVICE)
    z0, y0 = oracle_inputs(n, c, torch.float32, torch.float32, seed=6)
    big_z[:n, :c], big_y[:n, :c] = z0, y0
    z, y = big_z[:n, :c], big_y[:n, :c]
    kk = torch.full((n,), k, dtype=torch.int64, device=DEVICE)
    with split() as calls:
        zz = z.clone().requires_grad_()
        got = slam_loss(zz, y, 0.7, kk, reduction="sum", backend="triton", check_values=False)
        got.backward()
    assert len(calls) == 1
    kc = min(max(k, 1), c)
    zt = z0.clone().requires_grad_()
    want = slam_loss(zt, y0, 0.7, kc, reduction="sum", backend="torch")
    want.backward()
    torch.testing.assert_close(got.detach(), want.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(zz.grad, zt.grad, rtol=1e-5, atol=1e-6)
