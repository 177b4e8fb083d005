"""Property tests: the Triton kernel (CPU interpreter, or CUDA when present) against the
float64 oracle `slam_bench.reference`, evaluated on the exactly upcast inputs.

Tolerance policy (constants in kernel_testlib.py):
- Loss: always float32, computed in fp32 from inputs that upcast exactly, whatever their
  dtype: |loss - ref| <= 1e-5 (|ref| + 1) per row (and for the reduced scalar).
- Gradient, elementwise: |dz - ref| <= 1e-5 max_j |ref_row| + 1e-6 |go_i w_i| / (T N_mean)
  (fp32 math; the second term covers rows whose gradient cancels to ~0, teacher == student)
  + one ulp of the output dtype at |ref| (2^-7 relative for bf16, 2^-10 for fp16; a full ulp
  because the interpreter truncates fp32 -> bf16, a GPU rounds and needs half). The gradient
  is written in the forward for grad_output = 1; any other grad_output scales that rounded
  value in the backward, so then two ulps (kernel_testlib.roundings).
- Gradient, low precision: max |dz - ref| <= 2 x PyTorch's own max error when it evaluates the
  oracle formula with z, y, alpha, weight in z's low dtype (autograd in that dtype), or one ulp
  of the largest gradient entry where that is larger (PyTorch can be exact by luck on tiny
  rows; the kernel's rounding steps are its casts).

Shapes: N in {0, 1, 2, 3, 5, 17, 70} (17 and 70 are not multiples of the rows per program);
C in {2, 3, 7, 10, 100, 257, 1000} with the default launch heuristic, and C around the block
boundaries with the heuristic shrunk (single block <= 16, streaming blocks of 8, N <= 5 when
streamed): the same code paths a real C of 8193 or 65537 takes, at interpreter cost. Odd
streamed C (17, 25) in bf16/fp16 take the peeled head; per-row k above the 16 top-k slots and
tied teachers take the exact fallback. On CUDA, real streaming widths up
to 128256 and N up to 1000 are drawn too. test_kernel_cases.py covers the real boundaries and
C > 64k once each on every machine.
"""
from __future__ import annotations

import contextlib

import torch
from hypothesis import given
from hypothesis import strategies as st

from kernel_testlib import (DEVICE, KERNEL_SETTINGS, MINOR_SETTINGS, assert_grad_close,
                            assert_loss_close, lowp_reference_grad, reference, roundings,
                            row_grad_scale, small_blocks)
from slam_bench.kernels import slam_loss_triton

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
LOGITS = ["normal", "confident", "very_negative", "shifted"]
TEACHERS = ["soft", "zeros", "ties", "student", "onehot"]
# Real streaming widths and larger batches only where launches are cheap (a CUDA device).
WIDE_C = [8193, 32000, 50257, 128256] if DEVICE == "cuda" else []
WIDE_N = [256, 1000] if DEVICE == "cuda" else []


def make_logits(kind, n, c, gen):
    z = torch.randn(n, c, generator=gen, dtype=torch.float64) * 3
    if kind == "confident" and n:
        hot = torch.randint(0, c, (n,), generator=gen)
        z[torch.arange(n), hot] += 30  # one logit +30 above the rest
    elif kind == "very_negative":
        z = z - 1000
    elif kind == "shifted":
        z = z + 100
    return z


def make_teacher(kind, z, gen):
    n, c = z.shape
    y = torch.softmax(torch.randn(n, c, generator=gen, dtype=torch.float64) * 2, dim=1)
    if kind == "zeros":  # exact zeros, at least one class kept per row
        keep = torch.rand(n, c, generator=gen) < 0.5
        keep[:, 0] = True
        y = y * keep
    elif kind == "ties":  # a few distinct levels: exact ties everywhere, at the threshold too
        y = torch.randint(0, 4, (n, c), generator=gen).double() + (torch.arange(c) == 0)
    elif kind == "student":
        y = torch.softmax(z, dim=1)
    elif kind == "onehot" and n:
        y = torch.zeros(n, c, dtype=torch.float64)
        y[torch.arange(n), torch.randint(0, c, (n,), generator=gen)] = 1
    return y / y.sum(dim=1, keepdim=True)


@st.composite
def problems(draw):
    small = draw(st.booleans())
    c = draw(st.sampled_from([2, 3, 15, 16, 17, 24, 25, 40] if small
                             else [2, 3, 7, 10, 100, 257, 1000] + WIDE_C))
    # Streamed rows (c > 16 with the shrunk heuristic) cost a program per row and, in the
    # interpreter, milliseconds per top-k slot insertion: few rows there.
    streamed = small and c > 16
    n = draw(st.sampled_from([0, 1, 2, 3, 5, 17, 70] + WIDE_N if c <= 257 and not streamed
                             else [0, 1, 3, 5]))
    mixing = draw(st.booleans())
    normalize = mixing and draw(st.booleans())
    lo = 2 if normalize else 1
    per_row_k = draw(st.booleans())
    k = draw(st.sampled_from(sorted({lo, min(lo + 1, c), c})))
    per_row_alpha = draw(st.booleans())
    alpha = draw(st.sampled_from([1.0, 0.95, 0.7, 0.55]))
    return dict(
        small=small, n=n, c=c, mixing=mixing, normalize=normalize, per_row_k=per_row_k, k=k,
        per_row_alpha=per_row_alpha, alpha=alpha, lo=lo,
        z_dtype=draw(st.sampled_from(DTYPES)), y_dtype=draw(st.sampled_from(DTYPES)),
        logits=draw(st.sampled_from(LOGITS)), teacher=draw(st.sampled_from(TEACHERS)),
        temperature=draw(st.sampled_from([1.0, 0.5, 2.0, 4.0])),
        weighted=draw(st.booleans()),
        reduction=draw(st.sampled_from(["mean", "sum", "none"])),
        unit_go=draw(st.booleans()),
        seed=draw(st.integers(0, 2 ** 31 - 1)))


def build(p):
    gen = torch.Generator().manual_seed(p["seed"])
    n, c = p["n"], p["c"]
    z64 = make_logits(p["logits"], n, c, gen)
    y64 = make_teacher(p["teacher"], z64, gen)
    z = z64.to(p["z_dtype"])
    y = y64.to(p["y_dtype"])
    alpha = p["alpha"]
    if p["per_row_alpha"]:
        # Per-row values in [0.5, 1], some exactly 1 (no mixing on that row).
        alpha = torch.where(torch.rand(n, generator=gen) < 0.2, torch.ones(n),
                            0.5 + 0.5 * torch.rand(n, generator=gen))
    k = p["k"]
    if p["per_row_k"]:
        k = torch.randint(p["lo"], c + 1, (n,), generator=gen)
    weight = None
    if p["weighted"]:
        weight = torch.rand(n, generator=gen) * 2
        weight[torch.rand(n, generator=gen) < 0.3] = 0.0  # per-row weights with zeros
    # loss.backward()'s upstream gradient of 1 (the backward only checks it), or another one
    # (the backward scales the gradient written in the forward).
    if p["reduction"] == "none":
        go = torch.ones(n) if p["unit_go"] else torch.randn(n, generator=gen)
    else:
        go = torch.tensor(1.0 if p["unit_go"] else 1.7)
    mv = lambda t: t.to(DEVICE) if isinstance(t, torch.Tensor) else t  # noqa: E731
    return mv(z), mv(y), mv(alpha), mv(k), mv(weight), mv(go)


@KERNEL_SETTINGS
@given(problems())
def test_kernel_matches_float64_oracle(p):
    z, y, alpha, k, weight, go = build(p)
    kw = dict(normalize=p["normalize"], temperature=p["temperature"], weight=weight,
              reduction=p["reduction"], mixing=p["mixing"])
    zk = z.clone().requires_grad_()
    if p["small"]:
        with small_blocks():
            out = slam_loss_triton(zk, y, alpha, k, **kw)
            out.backward(go)
    else:
        out = slam_loss_triton(zk, y, alpha, k, **kw)
        out.backward(go)
    z64, ref = reference(z.cpu(), y.cpu(), _cpu(alpha), _cpu(k), **{**kw, "weight": _cpu(weight)})
    ref.backward(go.cpu().double())
    assert_loss_close(out.detach().cpu(), ref)
    lowp = None
    if z.dtype != torch.float32:
        lowp = lowp_reference_grad(z.cpu(), y.cpu(), _cpu(alpha), _cpu(k),
                                   **{**kw, "weight": _cpu(weight)}, go=go.cpu())
    scale = row_grad_scale(p["n"], go.cpu(), _cpu(weight), p["temperature"], p["reduction"])
    assert_grad_close(zk.grad.cpu(), z64.grad, scale, z.dtype, lowp, roundings(go))


def _cpu(t):
    return t.cpu() if isinstance(t, torch.Tensor) else t


@MINOR_SETTINGS
@given(st.integers(0, 2 ** 31 - 1), st.sampled_from([2, 5, 33]), st.booleans())
def test_alpha_one_is_vanilla_distillation(seed, c, small):
    """docs/method.md: alpha = 1 gives the soft-label cross-entropy. Per-row ones keep the
    MIXING kernel on (b = 0 on every row), so this compares the two kernel variants."""
    gen = torch.Generator().manual_seed(seed)
    n = 6
    z = (torch.randn(n, c, generator=gen) * 3).to(DEVICE)
    y = torch.softmax(torch.randn(n, c, generator=gen), dim=1).to(DEVICE)
    with small_blocks() if small else contextlib.nullcontext():
        slam = slam_loss_triton(z, y, torch.ones(n, device=DEVICE), min(2, c), normalize=False,
                                temperature=1.0, weight=None, reduction="none", mixing=True)
        vanilla = slam_loss_triton(z, y, 1.0, 1, normalize=False, temperature=1.0, weight=None,
                                   reduction="none", mixing=False)
    ce = -(y * torch.log_softmax(z.double(), dim=1)).sum(dim=1)
    torch.testing.assert_close(slam.double(), ce, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(vanilla.double(), ce, rtol=1e-5, atol=1e-5)


@MINOR_SETTINGS
@given(st.integers(0, 2 ** 31 - 1), st.floats(0.05, 1.0))
def test_binary_case_is_forward_correction(seed, alpha):
    """C = 2, k = 2: q = alpha f + (1 - alpha)(1 - f), the classic binary forward correction."""
    gen = torch.Generator().manual_seed(seed)
    z = (torch.randn(9, 2, generator=gen) * 4).to(DEVICE)
    y = torch.softmax(torch.randn(9, 2, generator=gen), dim=1).to(DEVICE)
    out = slam_loss_triton(z, y, alpha, 2, normalize=False, temperature=1.0, weight=None,
                           reduction="none", mixing=True)
    f = torch.softmax(z.double(), dim=1)
    alpha = float(torch.tensor(alpha, dtype=torch.float32))  # what the kernel computes with
    expected = -(y * torch.log(alpha * f + (1 - alpha) * (1 - f))).sum(dim=1)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


@MINOR_SETTINGS
@given(st.integers(0, 2 ** 31 - 1), st.booleans(), st.booleans())
def test_shift_invariance(seed, mixing, small):
    """Adding 100 to every logit changes neither loss nor gradient. Logits are multiples of
    2^-10 below 16 in magnitude, so z + 100 is exact in fp32 and the comparison is tight."""
    gen = torch.Generator().manual_seed(seed)
    n, c = 5, 21
    z = torch.round(torch.randn(n, c, generator=gen).clamp(-4, 4) * 3 * 1024) / 1024
    y = torch.softmax(torch.randn(n, c, generator=gen), dim=1)
    grads, losses = [], []
    for shift in (0.0, 100.0):
        zs = (z + shift).to(DEVICE).requires_grad_()
        with small_blocks() if small else contextlib.nullcontext():
            loss = slam_loss_triton(zs, y.to(DEVICE), 0.8, 3, normalize=False, temperature=1.0,
                                    weight=None, reduction="sum", mixing=mixing)
            loss.backward()
        losses.append(loss.detach().double())
        grads.append(zs.grad.double())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)
