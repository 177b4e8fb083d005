"""Fixed cases the property tests cannot reach cheaply: the real block boundaries, C > 64k and
odd streamed C (the peeled head), NaN-poisoned padding, teacher ties against the torch backend
(including ties that overflow a streamed row's top-k slots), N = 0 without a launch,
non-contiguous inputs, dtype rejection, the block heuristic, the op registration, and the
gradient's life cycle: written once in the forward, adopted by autograd without a copy, scaled
only where grad_output != 1, written into the logits only on request, never reused twice.
Tolerances as in test_kernel_properties.py.
"""
from __future__ import annotations

import contextlib
from unittest import mock

import pytest
import torch

from kernel_testlib import DEVICE, check_against_oracle, oracle_inputs, small_blocks
from slam_bench import distill_loss, slam_loss
from slam_bench.kernels import block_config, config, ops, slam_loss_triton, slam_triton

KW = dict(normalize=False, temperature=1.0, weight=None)


@pytest.mark.parametrize("mixing", [True, False])
@pytest.mark.parametrize("c,dtype", [
    (config.MAX_SINGLE_BLOCK, torch.float32),       # the widest row kept in one block
    (config.MAX_SINGLE_BLOCK + 1, torch.bfloat16),  # just above: the first streamed width
    (16 * config.STREAM_BLOCK + 1, torch.float16),  # C > 64k, one element past a block
])
def test_real_block_boundaries(c, dtype, mixing):
    z, y = oracle_inputs(2, c, dtype, torch.bfloat16)
    k = torch.tensor([5, 2], device=DEVICE)  # per-row k: the bisection threshold kernel too
    check_against_oracle(z, y, 0.7, k, mixing=mixing)


def test_largest_vocabulary():
    """C = 262,144 (the top of the supported range), bf16, per-row alpha, 64 streamed blocks."""
    z, y = oracle_inputs(2, 262144, torch.bfloat16, torch.bfloat16, seed=1)
    alpha = torch.tensor([0.6, 0.9], device=DEVICE)
    check_against_oracle(z, y, alpha, 3, mixing=True, normalize=True,
                          go=torch.ones(2, device=DEVICE))


@pytest.mark.parametrize("c", [32001, 50257])
def test_odd_streamed_width_peels_a_head(c):
    """An odd row stride: row 1 starts 1 element past a 16-byte boundary (bf16), so its head
    is 7 elements, then unmasked 4096-wide blocks, then a masked tail."""
    z, y = oracle_inputs(2, c, torch.bfloat16, torch.bfloat16, seed=2)
    lay = config.launch_layout(c, [c, c, c], 2, False, 4)
    assert lay.peel and lay.vec == 8
    check_against_oracle(z, y, 0.8, 4, mixing=True, go=torch.ones(2, device=DEVICE))


@pytest.mark.every_kernel
@pytest.mark.parametrize("small", [False, True])
@pytest.mark.parametrize("mixing", [True, False])
def test_nan_poisoned_padding_is_never_read(small, mixing):
    """Views into NaN-filled buffers: every element outside the view (the rest of each row's
    stride, rows past N) is NaN, so any unmasked load turns the result NaN."""
    n, c = 13, 10  # width 16: lanes 10..15 of each block fall in the poisoned padding
    big_z = torch.full((n + 3, c + 7), float("nan"), device=DEVICE)
    big_y = torch.full((n + 3, c + 5), float("nan"), device=DEVICE)
    z0, y0 = oracle_inputs(n, c, torch.float32, torch.float32)
    big_z[:n, :c], big_y[:n, :c] = z0, y0
    z, y = big_z[:n, :c], big_y[:n, :c]
    assert z.stride(0) == c + 7 and not z.is_contiguous()
    ctx = small_blocks(single=4, stream=4, tile=8) if small else contextlib.nullcontext()
    with ctx:
        grad = check_against_oracle(z, y, 0.75, 2, mixing=mixing)
    assert bool(torch.isfinite(grad).all())


def test_transposed_inputs_are_copied_not_misread():
    z0, y0 = oracle_inputs(6, 9, torch.float32, torch.float32)
    z, y = z0.t().contiguous().t(), y0.t().contiguous().t()  # column stride != 1
    assert z.stride(1) != 1
    check_against_oracle(z, y, 0.8, 3, mixing=True)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("small", [False, True])
def test_ties_agree_with_torch_backend(k, small):
    """The top-k mask keeps every entry equal to the k-th largest: kernel and torch backend
    must select the same entries. Rows are built so the threshold falls inside a tie."""
    y = torch.tensor([[0.3, 0.2, 0.2, 0.2, 0.1],
                      [0.25, 0.25, 0.25, 0.25, 0.0],
                      [0.2, 0.2, 0.2, 0.2, 0.2],
                      [0.0, 0.5, 0.0, 0.5, 0.0]], device=DEVICE)
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(4, 5, generator=gen).to(DEVICE)
    for per_row in (False, True):
        kk = torch.full((4,), k, device=DEVICE) if per_row else k
        grads, losses = [], []
        for backend in ("triton", "torch"):
            zz = z.clone().requires_grad_()
            with small_blocks(single=4, stream=2, tile=4) if small else contextlib.nullcontext():
                loss = slam_loss(zz, y, 0.6, kk, reduction="none", backend=backend)
                loss.backward(torch.arange(1.0, 5.0, device=DEVICE))
            losses.append(loss.detach())
            grads.append(zz.grad)
        torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [2, 20])
def test_ties_overflowing_the_streamed_slots_take_the_exact_fallback(k):
    """A streamed row whose threshold is tied across more entries than its top-k slots (a
    uniform row; or k > the slots): the exact fallback must agree with the torch backend."""
    c = 40
    y = torch.full((3, c), 1.0 / c, device=DEVICE)
    y[1, :4] = 3.0 / c  # four above a 36-way tie
    y[1] /= y[1].sum()
    z = torch.randn(3, c, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    grads, losses = [], []
    for backend in ("triton", "torch"):
        zz = z.clone().requires_grad_()
        with small_blocks():
            loss = slam_loss(zz, y, 0.7, k, reduction="none", backend=backend)
        loss.backward(torch.ones(3, device=DEVICE))
        losses.append(loss.detach())
        grads.append(zz.grad)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("mixing", [True, False])
def test_empty_batch_launches_nothing(reduction, mixing):
    z = torch.zeros(0, 7, device=DEVICE, requires_grad=True)
    y = torch.zeros(0, 7, device=DEVICE)
    boom = mock.MagicMock(side_effect=AssertionError("kernel launched for N = 0"))
    with mock.patch.object(slam_triton, "_slam_kernel", boom), \
            mock.patch.object(slam_triton, "_scale_kernel", boom):
        out = slam_loss_triton(z, y, 0.7, 2, reduction=reduction, mixing=mixing, **KW)
        if reduction == "none":
            assert out.shape == (0,)
            out.sum().backward()
        else:
            assert out.item() == 0.0
            out.backward()
    assert out.dtype == torch.float32
    assert z.grad.shape == (0, 7)
    assert not boom.called


def test_float64_logits_are_rejected_by_name():
    z = torch.randn(3, 4, dtype=torch.float64, device=DEVICE)
    y = torch.softmax(torch.randn(3, 4, device=DEVICE), dim=1)
    with pytest.raises(TypeError, match="student_logits.*float64.*backend='torch'"):
        slam_loss(z, y, 0.7, 2, backend="triton")


def test_float64_teacher_is_accepted_like_torch_backend():
    z, y = oracle_inputs(4, 6, torch.float32, torch.float64)
    a = distill_loss(z, y, backend="triton", reduction="none")
    b = distill_loss(z, y, backend="torch", reduction="none")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_gradient_dtype_follows_logits_and_loss_is_float32():
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        z, y = oracle_inputs(3, 5, dtype, torch.float32)
        z.requires_grad_()
        out = slam_loss(z, y, 0.7, 2, backend="triton")
        out.backward()
        assert out.dtype == torch.float32 and z.grad.dtype == dtype


@pytest.mark.every_kernel
def test_forward_only_calls_never_compute_a_gradient():
    """Evaluation (no_grad, or logits that do not require grad) takes the forward-only op."""
    z, y = oracle_inputs(5, 11, torch.float32, torch.float32)
    boom = mock.MagicMock(side_effect=AssertionError("gradient computed for a forward-only call"))
    with mock.patch.object(ops, "slam_rows_grad", boom):
        with torch.no_grad():
            a = slam_loss(z.clone().requires_grad_(), y, 0.7, 3, backend="triton")
        b = slam_loss(z, y, 0.7, 3, backend="triton")
    ref = slam_loss(z, y, 0.7, 3, backend="torch")
    torch.testing.assert_close(a, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b, ref, rtol=1e-5, atol=1e-6)
    assert not boom.called


def _saved_pointers():
    """A saved_tensors_hooks context that records the data pointer of every saved tensor."""
    ptrs = []

    def pack(t):
        ptrs.append(t.data_ptr())
        return t
    return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ptrs


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradient_is_written_once_and_adopted_without_a_copy(reduction):
    """The forward's gradient buffer becomes z.grad itself (no N x C copy in the backward),
    and the logits are left intact."""
    z, y = oracle_inputs(6, 13, torch.bfloat16, torch.float32)
    zk = z.clone().requires_grad_()
    hooks, ptrs = _saved_pointers()
    with hooks:
        loss = slam_loss_triton(zk, y, 0.7, 3, reduction=reduction, mixing=True, **KW)
    loss.backward(torch.ones_like(loss))
    assert zk.grad.data_ptr() in ptrs
    assert torch.equal(zk.detach(), z)


@pytest.mark.every_kernel
def test_grad_output_is_applied_per_row_including_ones_and_nan():
    """reduction="none": rows whose upstream gradient is 1 keep the forward's values, the
    others are scaled, and a NaN upstream gradient reaches its row."""
    z, y = oracle_inputs(5, 9, torch.float32, torch.float32)
    go = torch.tensor([1.0, 2.0, 1.0, -0.5, float("nan")], device=DEVICE)
    ref = z.clone().requires_grad_()
    slam_loss_triton(ref, y, 0.7, 3, reduction="none", mixing=True, **KW).backward(
        torch.ones(5, device=DEVICE))
    zk = z.clone().requires_grad_()
    slam_loss_triton(zk, y, 0.7, 3, reduction="none", mixing=True, **KW).backward(go)
    finite = torch.isfinite(go)
    torch.testing.assert_close(zk.grad[finite], ref.grad[finite] * go[finite, None])
    assert bool(torch.isnan(zk.grad[~finite]).all())


@pytest.mark.parametrize("small", [False, True])
def test_overwrite_logits_writes_the_gradient_into_their_storage(small):
    """Opt-in: the logits' storage holds dL/dz after the forward, equal to the default path's
    gradient; the default path leaves the logits untouched (tested above)."""
    z, y = oracle_inputs(4, 21, torch.bfloat16, torch.bfloat16)
    ctx = small_blocks() if small else contextlib.nullcontext()
    with ctx:
        ref = z.clone().requires_grad_()
        slam_loss_triton(ref, y, 0.7, 2, reduction="sum", mixing=True, **KW).backward()
        logits = z.clone().requires_grad_()
        h = logits * 1.0  # an intermediate, as a model's output layer would produce
        out = slam_loss_triton(h, y, 0.7, 2, reduction="sum", mixing=True, overwrite_logits=True,
                               **KW)
    torch.testing.assert_close(h.detach(), ref.grad, rtol=0, atol=0)  # the gradient, in place
    out.backward()
    torch.testing.assert_close(logits.grad, ref.grad, rtol=0, atol=0)


def test_second_backward_is_an_error_not_a_double_scaling():
    z, y = oracle_inputs(3, 7, torch.float32, torch.float32)
    zk = z.clone().requires_grad_()
    loss = slam_loss_triton(zk, y, 0.7, 2, reduction="mean", mixing=True, **KW) * 2.0
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second backward through the same loss"):
        loss.backward()


@pytest.mark.parametrize("c", [1, 2, 3, 1000, 8192, 8193, 16385, 131072, 262144])
def test_block_config_limits(c):
    cfg = block_config(c)
    assert cfg.block <= 32768 and cfg.block & (cfg.block - 1) == 0
    assert cfg.rows >= 1 and cfg.rows & (cfg.rows - 1) == 0
    assert cfg.single == (c <= cfg.block)
    if not cfg.single:
        assert cfg.rows == 1  # a streamed row gets a program of its own
    assert 4 <= cfg.num_warps <= config.MAX_WARPS


def test_block_config_rejects_bad_width():
    with pytest.raises(ValueError, match="n_cols"):
        block_config(0)


def test_custom_ops_pass_opcheck():
    """Schema, fake (meta) kernels and mutation declarations, as torch.compile relies on."""
    z, y = oracle_inputs(5, 9, torch.bfloat16, torch.float32)
    n = z.shape[0]
    one = torch.ones(1, device=DEVICE).expand(n)
    alpha = torch.full((n,), 0.7, device=DEVICE)
    k = torch.full((n,), 3, dtype=torch.int32, device=DEVICE)
    gscale = torch.full((n,), 0.2, device=DEVICE)
    torch.library.opcheck(ops.slam_rows, (z, y, alpha, one, k, 0.5, True, 0, 3))
    torch.library.opcheck(ops.slam_rows_grad, (z, y, alpha, one, k, gscale, 0.5, True, 0, 0))
    torch.library.opcheck(ops.slam_rows_grad_into_logits,
                          (z.clone(), y, alpha, one, k, gscale, 0.5, True, 0, 3))
    dz = torch.randn(n, 9, device=DEVICE)
    for go in (torch.tensor(1.5, device=DEVICE), torch.randn(n, device=DEVICE)):
        torch.library.opcheck(ops.scale_grad_, (dz.clone(), go))
        torch.library.opcheck(ops.scale_grad, (dz, go))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_capture_and_replay():
    """No host sync in forward or backward: a captured training step replays correctly."""
    z, y = oracle_inputs(64, 5000, torch.bfloat16, torch.bfloat16)
    alpha = torch.rand(64, device=DEVICE) * 0.5 + 0.5
    k = torch.randint(1, 10, (64,), device=DEVICE)
    zs = z.clone().requires_grad_()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm up (Triton compiles) outside the capture
        for _ in range(2):
            zs.grad = None
            slam_loss(zs, y, alpha, k, check_values=False).backward()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    zs.grad = None
    with torch.cuda.graph(graph):
        loss = slam_loss(zs, y, alpha, k, check_values=False)
        loss.backward()
    with torch.no_grad():
        zs.copy_(z.float().mul(0.5).to(z.dtype))
    graph.replay()
    torch.cuda.synchronize()
    zr = zs.detach().clone().requires_grad_()
    ref = slam_loss(zr, y, alpha, k, backend="torch")
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(zs.grad.float(), zr.grad.float(), rtol=2e-2, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available()
                    or torch.cuda.get_device_properties(0).total_memory < 40 * 2 ** 30,
                    reason="needs a GPU with room for three > 2**31-element bf16 tensors")
def test_int64_offsets_past_two_to_the_31_elements():
    """Rows past element 2**31 are addressed correctly (int32 offsets would wrap)."""
    n, c = 8200, 262144  # N * C = 2.15e9 > 2**31
    assert n * c > 2 ** 31
    z = torch.randn(n, c, device=DEVICE, dtype=torch.bfloat16)
    y = torch.softmax(torch.randn(n, c, device=DEVICE, dtype=torch.bfloat16), dim=1)
    zz = z.requires_grad_()
    out = slam_loss_triton(zz, y, 0.7, 4, reduction="none", mixing=True, **KW)
    go = torch.zeros(n, device=DEVICE)
    go[-2:] = 1.0
    out.backward(go)
    tail = slice(n - 2, n)
    zt = z[tail].detach().clone().requires_grad_()
    ref = slam_loss(zt, y[tail], 0.7, 4, reduction="none", backend="torch")
    ref.sum().backward()
    torch.testing.assert_close(out[tail], ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(zz.grad[tail].float(), zt.grad.float(), rtol=2e-2, atol=1e-7)
