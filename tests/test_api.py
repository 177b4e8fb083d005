"""Property tests of the public loss API (torch backend) against the float64 autograd oracle.

Tolerance policy. The oracle (`slam_bench.reference`) runs in float64 on the very same input
values, upcast exactly from the tested dtype, so input rounding is not part of the error. The
torch backend computes in float32 (float64 for float64 logits) and returns the gradient in the
logits' dtype. Allowed error:
- loss: relative 2e-5 (a few float32 ulps over the row sums), absolute floor 1e-6 (every term
  -y log q is >= 0, so the loss never comes from a cancellation); float64: 1e-10.
- gradient: each element dz_j = (r_j - f_j sum(r)) / T is a cancellation whose float32 error
  scales with the row's |r_j| <= y_j / alpha, not with |dz_j| (PyTorch's own softmax backward
  has the same property). So per element: relative 2e-5, plus absolute 1e-6 x the row's
  scale |grad_output_i| w_i (1/N for "mean") / (T alpha_i) (float64: 1e-10 and 1e-13); plus, for
  float16/bfloat16 logits, one rounding to that dtype: one ulp relative (2^-10, 2^-7) and the
  smallest float16 subnormal (2^-24) absolute.
alpha, like every parameter, is used in float32 by the float32 backend, so the oracle gets the
float32-rounded alpha (1 - alpha for alpha = 1 - 1e-16 is 0 in float32 and 1e-16 in float64,
which moves log q wherever f underflows: a real, input-level difference, not a compute error).
"""
from __future__ import annotations

import importlib.util
import math
import os

import pytest
import torch
from hypothesis import given, strategies as st
from torch.nn import functional as F

from slam_bench import DistillLoss, SLaMLoss, distill_loss, slam_loss
from slam_bench.reference import distill_loss_reference, slam_loss_reference

GRAD_ULP = {torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7, torch.float32: 0.0,
            torch.float64: 0.0}


def teacher_rows(gen: torch.Generator, n: int, c: int, kind: str) -> torch.Tensor:
    """(n, c) float64 rows on the simplex, of a given shape of difficulty."""
    if kind == "onehot":
        return F.one_hot(torch.randint(c, (n,), generator=gen), c).double()
    logits = torch.randn(n, c, generator=gen, dtype=torch.float64)
    if kind == "peaked":
        logits = logits * 6
    if kind == "ties":  # few distinct values: many exact ties, also at the top-k threshold
        logits = torch.randint(0, 3, (n, c), generator=gen).double()
    y = torch.softmax(logits, dim=1)
    if kind == "zeros":  # exact zeros, at least one positive entry per row
        keep = torch.rand(n, c, generator=gen) < 0.5
        keep[:, 0] = True
        y = torch.where(keep, y, torch.zeros_like(y))
        y = y / y.sum(dim=1, keepdim=True)
    return y


@st.composite
def cases(draw):
    n = draw(st.integers(0, 7))
    c = draw(st.one_of(st.integers(2, 12), st.sampled_from([31, 257, 1000, 2500])))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31 - 1)))
    normalize = draw(st.booleans())
    lo = 2 if normalize else 1
    if lo > c:
        normalize, lo = False, 1
    if draw(st.booleans()):
        k = draw(st.one_of(st.sampled_from([lo, c]), st.integers(lo, c)))
    else:
        k = torch.randint(lo, c + 1, (n,), generator=gen)
        if n:
            k[0] = draw(st.sampled_from([lo, c]))
    if draw(st.booleans()):
        alpha = draw(st.one_of(st.just(1.0), st.floats(0.02, 1.0)))
    else:
        alpha = 0.02 + 0.98 * torch.rand(n, generator=gen, dtype=torch.float64)
        if n:
            alpha[0] = 1.0
    weight = None
    if draw(st.booleans()):
        weight = torch.rand(n, generator=gen, dtype=torch.float64) * 2
        weight[::2] = 0.0
    scale = draw(st.sampled_from([1.0, 5.0, 30.0]))
    z = torch.randn(n, c, generator=gen, dtype=torch.float64) * scale
    y = teacher_rows(gen, n, c, draw(st.sampled_from(["dense", "peaked", "ties", "zeros",
                                                      "onehot"])))
    return dict(z=z, y=y, alpha=alpha, k=k, normalize=normalize, weight=weight,
                temperature=draw(st.sampled_from([1.0, 0.5, 3.0])),
                reduction=draw(st.sampled_from(["mean", "sum", "none"])), gen=gen)


def _cast(x, dtype):
    """Tensors to dtype; a float alpha rounded to float32, the precision the backend uses it in."""
    if isinstance(x, torch.Tensor):
        return x.to(dtype)
    return float(torch.tensor(x, dtype=dtype)) if isinstance(x, float) else x


def _run_pair(case, zdtype, ydtype, mixing=True):
    """Returns (loss, grad) of the torch backend and of the float64 oracle on the same values."""
    z = case["z"].to(zdtype).requires_grad_(True)
    y = case["y"].to(ydtype)
    weight = _cast(case["weight"], torch.float32)
    alpha = _cast(case["alpha"], torch.float32)
    kw = dict(temperature=case["temperature"], weight=weight, reduction=case["reduction"])
    z64 = z.detach().double().requires_grad_(True)
    y64 = y.double()
    w64 = _cast(weight, torch.float64)
    a64 = _cast(alpha, torch.float64)
    kw64 = dict(kw, weight=w64)
    if mixing:
        out = slam_loss(z, y, alpha, case["k"], normalize=case["normalize"], backend="torch", **kw)
        ref = slam_loss_reference(z64, y64, a64, case["k"], normalize=case["normalize"], **kw64)
    else:
        out = distill_loss(z, y, backend="torch", **kw)
        ref = distill_loss_reference(z64, y64, **kw64)
    g = (torch.rand(out.shape, generator=case["gen"], dtype=torch.float64) - 0.5) * 4 \
        if case["reduction"] == "none" else torch.tensor(1.0, dtype=torch.float64)
    out.backward(g.to(out.dtype))
    ref.backward(g)
    n = z.shape[0]
    row_scale = g.abs().expand(n) / case["temperature"]
    if case["reduction"] == "mean":
        row_scale = row_scale / max(n, 1)
    if w64 is not None:
        row_scale = row_scale * w64
    if mixing:
        row_scale = row_scale / torch.as_tensor(a64, dtype=torch.float64).expand(n)
    return out, z.grad, ref, z64.grad, row_scale


def _assert_matches(out, grad, ref, gref, row_scale, zdtype):
    expected_dtype = torch.float64 if zdtype == torch.float64 else torch.float32
    assert out.dtype == expected_dtype
    assert out.shape == ref.shape
    assert grad.dtype == zdtype
    rt = 1e-10 if zdtype == torch.float64 else 2e-5
    torch.testing.assert_close(out.double(), ref.detach(), rtol=rt, atol=1e-6 if rt > 1e-9 else 1e-12)
    ulp = GRAD_ULP[zdtype]
    abs_row = (1e-13 if zdtype == torch.float64 else 1e-6) * row_scale[:, None]
    allowed = (rt + ulp) * gref.abs() + abs_row + (2.0 ** -24 if ulp else 0.0)
    err = (grad.double() - gref).abs()
    assert bool((err <= allowed).all()), (
        f"gradient off by {float((err - allowed).max()):.3g} beyond the allowed error; "
        f"worst abs error {float(err.max()):.3g}")


@given(case=cases(), zdtype=st.sampled_from([torch.float32, torch.float64, torch.float16,
                                              torch.bfloat16]),
       ydtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]))
def test_slam_loss_matches_oracle(case, zdtype, ydtype):
    _assert_matches(*_run_pair(case, zdtype, ydtype), zdtype)


@given(case=cases(), zdtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]))
def test_distill_loss_matches_oracle(case, zdtype):
    _assert_matches(*_run_pair(case, zdtype, torch.float32, mixing=False), zdtype)


def _rand(n, c, seed=0, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=gen, dtype=torch.float64) * scale
    return z, teacher_rows(gen, n, c, "dense"), gen


@pytest.mark.parametrize("k", [1, 3, 7])
def test_alpha_one_is_soft_cross_entropy(k):
    z, y, _ = _rand(6, 7)
    z = z.float().requires_grad_(True)
    loss = slam_loss(z, y.float(), 1.0, k, backend="torch")
    loss.backward()
    z2 = z.detach().clone().requires_grad_(True)
    ce = F.cross_entropy(z2, y.float())  # soft-target CE, an independent implementation
    ce.backward()
    torch.testing.assert_close(loss, ce, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(z.grad, z2.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(distill_loss(z.detach(), y.float(), backend="torch"), ce.detach())


@pytest.mark.parametrize("normalize", [False, True])
def test_binary_k2_is_forward_correction(normalize):
    z, y, gen = _rand(9, 2)
    alpha = 0.5 + 0.5 * torch.rand(9, generator=gen, dtype=torch.float64)
    p1 = torch.sigmoid(z[:, 1] - z[:, 0])
    f = torch.stack([1 - p1, p1], dim=1)
    a = alpha[:, None]
    expected = -(y * torch.log(a * f + (1 - a) * (1 - f))).sum(dim=1)
    out = slam_loss(z, y, alpha, 2, normalize=normalize, reduction="none", backend="torch")
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_gradient_rows_sum_to_zero():
    z, y, _ = _rand(8, 50, scale=10.0)
    z = z.float().requires_grad_(True)
    slam_loss(z, y.float(), 0.7, 5, reduction="sum", backend="torch").backward()
    row_sums = z.grad.double().sum(dim=1)
    assert row_sums.abs().max() <= 1e-6 * z.grad.abs().sum(dim=1).max()


def test_logit_shift_invariance():
    gen = torch.Generator().manual_seed(3)
    # Multiples of 1/64 stay exact after +100 in float32, so the two inputs are the same logits.
    z = (torch.randint(-320, 320, (5, 33), generator=gen) / 64.0).float()
    y = teacher_rows(gen, 5, 33, "zeros").float()
    outs = []
    for shift in (0.0, 100.0):
        zz = (z + shift).requires_grad_(True)
        loss = slam_loss(zz, y, 0.8, 4, reduction="none", backend="torch")
        loss.sum().backward()
        outs.append((loss.detach(), zz.grad))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-5, atol=1e-7)


def test_consistent_class_permutation():
    gen = torch.Generator().manual_seed(4)
    z = torch.randn(6, 20, generator=gen, dtype=torch.float64).requires_grad_(True)
    y = teacher_rows(gen, 6, 20, "ties")
    perm = torch.randperm(20, generator=gen)
    zp = z.detach()[:, perm].clone().requires_grad_(True)
    a = slam_loss(z, y, 0.6, 3, reduction="none", backend="torch")
    b = slam_loss(zp, y[:, perm], 0.6, 3, reduction="none", backend="torch")
    a.sum().backward()
    b.sum().backward()
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(z.grad[:, perm], zp.grad, rtol=1e-12, atol=1e-14)


def test_teacher_ties_at_threshold_are_in_the_mask():
    # k = 1, but three classes tie for the top: all three get the mixed (floored) probability.
    z = torch.tensor([[0.5, -1.0, 2.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[0.3, 0.3, 0.3, 0.1]], dtype=torch.float64)
    alpha = 0.7
    f = torch.softmax(z, dim=1)[0]
    m = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    q = alpha * f + (1 - alpha) * m * (1 - f)
    expected = -(y[0] * torch.log(q)).sum()
    out = slam_loss(z, y, alpha, 1, backend="torch")
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=0.0)
    # Breaking the tie changes the loss: the mask really depends on the ties.
    y2 = torch.tensor([[0.31, 0.3, 0.29, 0.1]], dtype=torch.float64)
    assert not torch.isclose(slam_loss(z, y2, alpha, 1, backend="torch"),
                             -(y2[0] * torch.log(q)).sum())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_batch(reduction):
    z = torch.zeros(0, 5, requires_grad=True)
    y = torch.zeros(0, 5)
    for out in (slam_loss(z, y, 0.9, 2, reduction=reduction, backend="torch"),
                distill_loss(z, y, reduction=reduction, backend="torch")):
        assert out.dtype == torch.float32
        if reduction == "none":
            assert out.shape == (0,)
        else:
            assert out.shape == () and float(out.detach()) == 0.0
        out.sum().backward()
        assert z.grad.shape == (0, 5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_give_float32_loss_and_half_grad(dtype):
    z, y, _ = _rand(4, 9)
    z = z.to(dtype).requires_grad_(True)
    out = slam_loss(z, y.to(dtype), 0.8, 2, backend="auto")
    assert out.dtype == torch.float32
    out.backward()
    assert z.grad.dtype == dtype


def test_modules_match_functional():
    z, y, gen = _rand(5, 6)
    alpha = 0.6 + 0.4 * torch.rand(5, generator=gen, dtype=torch.float64)
    k = torch.tensor([1, 2, 3, 6, 2])
    w = torch.rand(5, generator=gen, dtype=torch.float64)
    mod = SLaMLoss(normalize=True, temperature=2.0, reduction="sum")
    k2 = k.clamp(min=2)
    torch.testing.assert_close(mod(z, y, alpha, k2, weight=w),
                               slam_loss(z, y, alpha, k2, normalize=True, temperature=2.0,
                                         weight=w, reduction="sum"))
    assert "normalize=True" in repr(mod)
    dmod = DistillLoss(temperature=0.5, reduction="none")
    torch.testing.assert_close(dmod(z, y, weight=w),
                               distill_loss(z, y, temperature=0.5, weight=w, reduction="none"))
    assert "temperature=0.5" in repr(dmod)
    with pytest.raises(ValueError, match="k"):
        SLaMLoss(normalize=True)(z, y, alpha, k)  # k = 1 with normalize=True


def test_temperature_divides_the_gradient():
    z, y, _ = _rand(3, 8)
    t = 4.0
    z1 = z.clone().requires_grad_(True)
    slam_loss(z1, y, 0.9, 3, temperature=t, reduction="sum", backend="torch").backward()
    z2 = (z / t).requires_grad_(True)
    slam_loss(z2, y, 0.9, 3, reduction="sum", backend="torch").backward()
    torch.testing.assert_close(z1.grad * t, z2.grad, rtol=1e-12, atol=1e-14)
    assert math.isfinite(float(z1.grad.abs().sum()))


def test_non_contiguous_inputs():
    z, y, _ = _rand(7, 5)
    zt = z.t().contiguous().t()  # same values, column-major strides
    yt = y.t().contiguous().t()
    assert not zt.is_contiguous()
    torch.testing.assert_close(slam_loss(zt, yt, 0.7, 2, reduction="none", backend="torch"),
                               slam_loss(z, y, 0.7, 2, reduction="none", backend="torch"))
    torch.testing.assert_close(slam_loss(z[:, ::2], y[:, ::2] / y[:, ::2].sum(1, keepdim=True), 0.7, 2),
                               slam_loss_reference(z[:, ::2], y[:, ::2] / y[:, ::2].sum(1, keepdim=True),
                                                   0.7, 2))


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_overwrite_logits_is_an_explicit_opt_in(backend):
    """Default: the logits keep their values. overwrite_logits=True: backend='triton' writes
    dL/dz into their storage (same gradient); the torch backend keeps them."""
    if backend == "triton":
        pytest.importorskip("triton")
        if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("backend='triton' on CPU needs TRITON_INTERPRET=1")
    gen = torch.Generator().manual_seed(4)
    z = torch.randn(6, 12, generator=gen)
    y = torch.softmax(torch.randn(6, 12, generator=gen), dim=1)
    leaf = z.clone().requires_grad_()
    slam_loss(leaf, y, 0.7, 3, backend=backend).backward()
    assert torch.equal(leaf.detach(), z)
    w = z.clone().requires_grad_()
    h = w * 1.0
    loss = slam_loss(h, y, 0.7, 3, backend=backend, overwrite_logits=True)
    assert torch.equal(h.detach(), leaf.grad if backend == "triton" else z)
    loss.backward()
    torch.testing.assert_close(w.grad, leaf.grad)
    with pytest.raises(TypeError, match="overwrite_logits"):
        slam_loss(z, y, 0.7, 3, backend=backend, overwrite_logits=1)


def _backends():
    out = ["torch"]
    if importlib.util.find_spec("triton") and (torch.cuda.is_available()
                                               or os.environ.get("TRITON_INTERPRET") == "1"):
        out.append("triton")
    return out


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("per_row", ["scalars", "leading shape", "flattened"])
def test_a_sequence_batch_is_exactly_its_flattened_rows(backend, reduction, per_row):
    """(B, T, C) logits, the shape a sequence model produces, give exactly what the
    (B*T, C) view gives: loss (of shape (B, T) for "none"), and the gradient of the logits
    in the (B, T, C) shape. Per-row alpha, k and weight may have the shape (B, T) or (B*T,)."""
    gen = torch.Generator().manual_seed(11)
    b, t, c = 2, 3, 7
    z = torch.randn(b, t, c, generator=gen)
    y = torch.softmax(torch.randn(b, t, c, generator=gen), dim=-1)
    alpha, k, w = 0.7, 2, None
    if per_row != "scalars":
        alpha = 0.5 + 0.5 * torch.rand(b, t, generator=gen)
        k = torch.randint(1, c + 1, (b, t), generator=gen)
        w = torch.rand(b, t, generator=gen)
        if per_row == "flattened":
            alpha, k, w = alpha.reshape(-1), k.reshape(-1), w.reshape(-1)
    flat = lambda v: v.reshape(-1) if isinstance(v, torch.Tensor) else v  # noqa: E731
    kw = dict(weight=w, reduction=reduction, backend=backend)
    flat_kw = dict(kw, weight=flat(w))
    for fn, args, flat_args in ((slam_loss, (alpha, k), (flat(alpha), flat(k))),
                                (distill_loss, (), ())):
        z3 = z.clone().requires_grad_()
        z2 = z.reshape(b * t, c).clone().requires_grad_()
        out3 = fn(z3, y, *args, **kw)
        out2 = fn(z2, y.reshape(b * t, c), *flat_args, **flat_kw)
        assert out3.shape == ((b, t) if reduction == "none" else ())
        torch.testing.assert_close(out3.reshape(-1) if reduction == "none" else out3, out2,
                                   rtol=0, atol=0)
        grad_out = torch.rand(out3.shape, generator=gen)
        out3.backward(grad_out)
        out2.backward(grad_out.reshape(out2.shape))
        assert z3.grad.shape == (b, t, c)
        torch.testing.assert_close(z3.grad.reshape(b * t, c), z2.grad, rtol=0, atol=0)


def test_leading_dimensions_of_any_number_and_layout():
    gen = torch.Generator().manual_seed(12)
    z = torch.randn(2, 7, 3, 4, generator=gen).permute(0, 2, 3, 1)  # (2, 3, 4, 7), not contiguous
    y = torch.softmax(torch.randn(2, 3, 4, 7, generator=gen), dim=-1)
    assert not z.is_contiguous()
    rows = slam_loss(z, y, 0.8, 3, reduction="none")
    assert rows.shape == (2, 3, 4)
    torch.testing.assert_close(rows.reshape(-1),
                               slam_loss(z.reshape(-1, 7), y.reshape(-1, 7), 0.8, 3, reduction="none"))
    torch.testing.assert_close(slam_loss(z, y, 0.8, 3), rows.mean())
    # Empty leading dimensions: "none" keeps the shape, "mean" is 0.0 as for N = 0.
    empty = torch.zeros(2, 0, 5)
    assert slam_loss(empty, empty, 0.8, 2, reduction="none").shape == (2, 0)
    assert slam_loss(empty, empty, 0.8, 2).item() == 0.0


def test_modules_take_sequence_batches():
    gen = torch.Generator().manual_seed(13)
    z = torch.randn(3, 4, 6, generator=gen)
    y = torch.softmax(torch.randn(3, 4, 6, generator=gen), dim=-1)
    w = torch.rand(3, 4, generator=gen)
    torch.testing.assert_close(SLaMLoss(reduction="none")(z, y, 0.9, 2, weight=w),
                               slam_loss(z, y, 0.9, 2, weight=w, reduction="none"))
    assert DistillLoss(reduction="none")(z, y).shape == (3, 4)


@pytest.mark.parametrize("cls", ["SLaMLoss", "DistillLoss", "SLaMTopKLoss", "FusedLinearSLaMLoss"])
def test_module_wrappers_list_and_document_their_arguments(cls):
    """No **options: every option is a named keyword argument, stored, shown by repr and
    described in the class docstring."""
    import inspect

    import slam_bench
    module = getattr(slam_bench, cls)
    params = inspect.signature(module.__init__).parameters
    assert all(p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in params.values())
    options = [n for n in params if n != "self"]
    assert options and all(params[n].kind == params[n].KEYWORD_ONLY for n in options)
    instance = module()
    for name in options:
        assert getattr(instance, name) == params[name].default
        assert f"{name}:" in module.__doc__, f"{cls}'s docstring does not describe {name}"
    forward = inspect.signature(module.forward).parameters
    assert all(p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in forward.values())
