"""Each baseline loss against an independent formula and hand-computable cases."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from slam_bench import slam_loss
from slam_bench.losses import (UPSSelection, VIDHead, forward_correction_loss, mc_dropout_probs,
                               taylor_ce_loss, ups_loss, ups_select)


def rand_case(n=6, c=7, seed=0, scale=2.0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=gen, dtype=torch.float64) * scale
    y = torch.softmax(torch.randn(n, c, generator=gen, dtype=torch.float64) * 2, dim=1)
    return z, y, gen


# ---------------------------------------------------------------- Taylor-CE

def test_taylor_ce_hand_values():
    z = torch.zeros(1, 2, dtype=torch.float64)  # f = (1/2, 1/2)
    y = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert float(taylor_ce_loss(z, y, order=1)) == pytest.approx(0.5, abs=1e-15)  # MAE
    assert float(taylor_ce_loss(z, y, order=2)) == pytest.approx(0.5 + 0.125, abs=1e-15)
    assert float(taylor_ce_loss(z, y, order=3)) == pytest.approx(0.5 + 0.125 + 0.125 / 3, abs=1e-15)


@pytest.mark.parametrize("order", [1, 2, 3, 6])
def test_taylor_ce_matches_series(order):
    z, y, gen = rand_case()
    w = torch.rand(6, generator=gen, dtype=torch.float64)
    f = torch.softmax(z / 1.5, dim=1)
    series = sum((1 - f) ** n / n for n in range(1, order + 1))
    rows = (y * series).sum(dim=1)
    out = taylor_ce_loss(z, y, order=order, temperature=1.5, weight=w, reduction="none")
    torch.testing.assert_close(out, rows * w, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(taylor_ce_loss(z, y, order=order, temperature=1.5, weight=w),
                               (rows * w).mean(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(taylor_ce_loss(z, y, order=order, temperature=1.5, reduction="sum"),
                               rows.sum(), rtol=1e-12, atol=1e-14)


def test_taylor_ce_approaches_cross_entropy():
    z, y, _ = rand_case(scale=1.0)
    ce = float(F.cross_entropy(z, y))
    gaps = [ce - float(taylor_ce_loss(z, y, order=t)) for t in (1, 2, 4, 16, 64, 400)]
    # Every series term is positive: the partial sums rise to -log f, the gap shrinks to 0.
    assert all(a > b > 0 for a, b in zip(gaps, gaps[1:]))
    assert gaps[-1] < 1e-4 * ce


def test_taylor_ce_grad_dtype_and_errors():
    z, y, _ = rand_case()
    zb = z.to(torch.bfloat16).requires_grad_(True)
    out = taylor_ce_loss(zb, y.float())
    assert out.dtype == torch.float32
    out.backward()
    assert zb.grad.dtype == torch.bfloat16 and bool(torch.isfinite(zb.grad.float()).all())
    for bad, exc in ((0, ValueError), (2.0, TypeError), (True, TypeError)):
        with pytest.raises(exc, match="order"):
            taylor_ce_loss(z, y, order=bad)
    with pytest.raises(ValueError, match="teacher_probs"):
        taylor_ce_loss(z, y * 2)
    with pytest.raises(ValueError, match="reduction"):
        taylor_ce_loss(z, y, reduction="avg")
    assert float(taylor_ce_loss(z[:0], y[:0])) == 0.0


# ---------------------------------------------------------------- forward correction

def test_forward_correction_identity_is_cross_entropy():
    z, y, _ = rand_case()
    z1 = z.clone().requires_grad_(True)
    z2 = z.clone().requires_grad_(True)
    a = forward_correction_loss(z1, y, torch.eye(7, dtype=torch.float64))
    b = F.cross_entropy(z2, y)
    a.backward()
    b.backward()
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-10, atol=1e-14)


def test_forward_correction_hand_value():
    t = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
    z = torch.zeros(1, 2)  # f = (1/2, 1/2): q = f^T T = (0.55, 0.45)
    y = torch.tensor([[1.0, 0.0]])
    assert float(forward_correction_loss(z, y, t)) == pytest.approx(-math.log(0.55), rel=1e-6)


def test_forward_correction_matches_formula_and_binary_slam():
    z, y, gen = rand_case(c=5)
    t = torch.softmax(torch.randn(5, 5, generator=gen, dtype=torch.float64) * 2, dim=1)
    f = torch.softmax(z, dim=1)
    q = torch.stack([sum(f[:, i] * t[i, j] for i in range(5)) for j in range(5)], dim=1)
    expected = -(y * torch.log(q)).sum(dim=1)
    torch.testing.assert_close(forward_correction_loss(z, y, t, reduction="none"), expected,
                               rtol=1e-12, atol=1e-14)
    # Binary symmetric noise is SLaM with C = k = 2 and a global alpha.
    zb, yb, _ = rand_case(c=2, seed=1)
    alpha = 0.7
    tb = torch.tensor([[alpha, 1 - alpha], [1 - alpha, alpha]], dtype=torch.float64)
    torch.testing.assert_close(forward_correction_loss(zb, yb, tb, reduction="none"),
                               slam_loss(zb, yb, alpha, 2, reduction="none"), rtol=1e-12, atol=1e-14)


def test_forward_correction_zero_column():
    # Class 2 is never a teacher label: q_2 = 0. Rows with y_2 = 0 stay finite with finite grads.
    t = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.0]])
    z = torch.randn(3, 3, requires_grad=True)
    y = torch.tensor([[0.6, 0.4, 0.0]] * 3)
    out = forward_correction_loss(z, y, t)
    out.backward()
    assert math.isfinite(out.item()) and bool(torch.isfinite(z.grad).all())
    assert float(forward_correction_loss(z.detach(), torch.tensor([[0.0, 0.0, 1.0]] * 3), t)) == math.inf


@pytest.mark.parametrize("bad,exc,pattern", [
    (torch.eye(4), ValueError, r"transition must have shape \(3, 3\)"),
    (torch.eye(3) * 2, ValueError, "transition rows must sum to 1"),
    (torch.tensor([[1.2, -0.2, 0.0], [0, 1, 0], [0, 0, 1.0]]), ValueError, "transition must be non-negative"),
    (torch.tensor([[math.nan, 1, 0], [0, 1, 0], [0, 0, 1.0]]), ValueError, "transition must be finite"),
    (torch.eye(3, dtype=torch.int64), TypeError, "transition must be a float"),
    ([[1, 0, 0], [0, 1, 0], [0, 0, 1]], TypeError, "transition must be a torch.Tensor"),
    (torch.eye(3, device="meta"), ValueError, "transition must be on cpu"),
])
def test_forward_correction_rejects_bad_transition(bad, exc, pattern):
    z, y, _ = rand_case(c=3)
    with pytest.raises(exc, match=pattern):
        forward_correction_loss(z, y, bad)


# ---------------------------------------------------------------- UPS

def test_ups_select_thresholds():
    # Exact binary fractions so the >= / <= boundaries are tested exactly.
    p = torch.tensor([[0.75, 0.125, 0.125],     # max = tau_p, u = kappa_p: positive
                      [0.75, 0.125, 0.125],     # uncertainty of the max above kappa_p: no
                      [0.5, 0.25, 0.25],        # max below tau_p: no
                      [0.875, 0.0625, 0.0625]])
    u = torch.tensor([[0.0625, 0.0, 0.03125],
                      [0.125, 0.0, 0.0],
                      [0.0, 0.0, 0.0],
                      [0.0, 0.0625, 0.0]])
    sel = ups_select(p, u, tau_p=0.75, kappa_p=0.0625, tau_n=0.125, kappa_n=0.03125)
    assert sel.pos_mask.tolist() == [True, False, False, True]
    assert sel.pos_label.tolist() == [0, 0, 0, 0] and sel.pos_label.dtype == torch.int64
    assert sel.neg_mask.tolist() == [[False, True, True],
                                     [False, True, True],
                                     [False, False, False],
                                     [False, False, True]]  # (3, 1): u = 0.0625 > kappa_n
    stats = sel.stats()
    assert stats["ups_pos_fraction"] == 0.5
    assert stats["ups_neg_per_row"] == 5 / 4
    assert stats["ups_ignored_fraction"] == 0.25
    assert stats["ups_labeled_fraction"] == 0.75
    assert stats["ups_tau_p"] == 0.75 and stats["ups_kappa_n"] == 0.03125
    # A minibatch of the selection: rows 3 and 0, in that order.
    sub = sel.subset(torch.tensor([3, 0]))
    assert sub.pos_mask.tolist() == [True, True]
    assert sub.neg_mask.tolist() == [[False, False, True], [False, True, True]]
    assert sub.tau_p == 0.75 and sel.subset(slice(1, 3)).pos_mask.tolist() == [False, False]


def test_ups_loss_matches_formula():
    z, _, gen = rand_case(n=8, c=5)
    pos_mask = torch.tensor([True, False, True, True, False, False, True, False])
    pos_label = torch.randint(5, (8,), generator=gen)
    neg_mask = torch.rand(8, 5, generator=gen) < 0.4
    neg_mask[1] = False  # row 1: nothing selected
    sel = UPSSelection(pos_mask, pos_label, neg_mask, 0.7, 0.05, 0.05, 0.005)
    f = torch.softmax(z, dim=1)
    expected = torch.zeros(8, dtype=torch.float64)
    for i in range(8):
        if pos_mask[i]:
            expected[i] -= math.log(f[i, pos_label[i]])
        negs = [j for j in range(5) if neg_mask[i, j]]
        for j in negs:  # the negative term is averaged over the row's negatives
            expected[i] -= math.log(1 - f[i, j]) / len(negs)
    torch.testing.assert_close(ups_loss(z, sel, reduction="none"), expected, rtol=1e-12, atol=1e-14)
    assert float(ups_loss(z, sel, reduction="none")[1]) == 0.0
    torch.testing.assert_close(ups_loss(z, sel), expected.sum() / 8, rtol=1e-12, atol=1e-14)
    w = torch.rand(8, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(ups_loss(z, sel, weight=w, reduction="sum"), (expected * w).sum(),
                               rtol=1e-12, atol=1e-14)


def test_ups_negative_term_is_normalised_by_the_number_of_negatives():
    """Rizve et al.: -(1/|neg|) sum_neg log(1 - f_j). Hand-made: uniform logits over 4 classes
    (f_j = 1/4), so every negative costs log(4/3) and a row's term is log(4/3) whether it has
    one negative or three; a positive adds log 4."""
    z = torch.zeros(3, 4, dtype=torch.float64)
    neg = torch.tensor([[False, True, False, False], [False, True, True, True],
                        [False, False, True, True]])
    sel = UPSSelection(torch.tensor([False, False, True]), torch.tensor([0, 0, 0]), neg,
                       0.7, 0.05, 0.05, 0.005)
    expected = torch.tensor([math.log(4 / 3), math.log(4 / 3), math.log(4) + math.log(4 / 3)],
                            dtype=torch.float64)
    torch.testing.assert_close(ups_loss(z, sel, reduction="none"), expected, rtol=1e-12, atol=0)


def test_ups_negative_on_a_confident_class_is_stable():
    # f_0 = 1 - 2e-87 rounds to 1 in float32; -log(1 - f_0) must still be 87 - log 2, not inf.
    z = torch.tensor([[87.0, 0.0, 0.0]], requires_grad=True)
    sel = UPSSelection(torch.tensor([False]), torch.tensor([0]), torch.tensor([[True, False, False]]),
                       0.7, 0.05, 0.05, 0.005)
    out = ups_loss(z, sel)
    out.backward()
    assert out.item() == pytest.approx(87.0 - math.log(2.0), rel=1e-6)
    # d/dz of lse(all) - lse(others) = f - (0, 1/2, 1/2) ~ (1, -1/2, -1/2).
    torch.testing.assert_close(z.grad, torch.tensor([[1.0, -0.5, -0.5]]), rtol=1e-6, atol=1e-6)


def test_ups_errors():
    p = torch.softmax(torch.randn(4, 3), dim=1)
    u = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="tau_n must be smaller than tau_p"):
        ups_select(p, u, tau_p=0.5, tau_n=0.5)
    with pytest.raises(ValueError, match="kappa_p"):
        ups_select(p, u, kappa_p=-0.1)
    with pytest.raises(TypeError, match="tau_p"):
        ups_select(p, u, tau_p="0.7")
    with pytest.raises(ValueError, match="uncertainty must have the shape"):
        ups_select(p, u[:, :2])
    with pytest.raises(ValueError, match="uncertainty must be finite and non-negative"):
        ups_select(p, -torch.ones(4, 3))
    with pytest.raises(ValueError, match="teacher_probs rows must sum to 1"):
        ups_select(p * 2, u)
    with pytest.raises(TypeError, match="uncertainty must be a float"):
        ups_select(p, torch.zeros(4, 3, dtype=torch.int64))
    sel = ups_select(p, u)
    with pytest.raises(ValueError, match="selection must be made for"):
        ups_loss(torch.randn(5, 3), sel)
    with pytest.raises(TypeError, match="selection must be a UPSSelection"):
        ups_loss(torch.randn(4, 3), {"pos_mask": sel.pos_mask})
    with pytest.raises(TypeError, match="student_logits"):
        ups_loss(torch.zeros(4, 3, dtype=torch.int64), sel)


def test_mc_dropout_probs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(16, 3))
    model.eval()
    x = torch.randn(10, 4)
    mean, std = mc_dropout_probs(model, x, passes=8)
    assert mean.shape == std.shape == (10, 3)
    torch.testing.assert_close(mean.sum(dim=1), torch.ones(10))
    assert float(std.max()) > 0  # dropout was on
    assert not model.training and not model[3].training  # modes restored
    det = nn.Sequential(nn.Linear(4, 3))
    _, std0 = mc_dropout_probs(det, x, passes=3)
    assert float(std0.abs().max()) == 0.0
    with pytest.raises(ValueError, match="passes"):
        mc_dropout_probs(model, x, passes=0)


# ---------------------------------------------------------------- VID

@pytest.mark.parametrize("hidden", [None, 8])
def test_vid_matches_formula(hidden):
    torch.manual_seed(0)
    head = VIDHead(5, 3, hidden=hidden, eps=1e-4, init_var=2.0)
    s, t = torch.randn(6, 5), torch.randn(6, 3)
    var = F.softplus(head.rho) + 1e-4
    torch.testing.assert_close(var, torch.full((3,), 2.0), rtol=1e-6, atol=1e-6)
    mu = head.regressor(s)
    expected = (0.5 * (torch.log(var) + (t - mu) ** 2 / var)).mean()
    torch.testing.assert_close(head(s, t), expected)
    assert head.params() == {"vid_hidden": hidden or 0, "vid_eps": 1e-4, "vid_init_var": 2.0}


def test_vid_term_decreases_when_fitted():
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(256, 6, generator=gen)
    a = torch.randn(6, 4, generator=gen)
    t = s @ a + 0.1 * torch.randn(256, 4, generator=gen)  # predictable up to noise variance 0.01
    head = VIDHead(6, 4)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    first = head(s, t).item()
    for _ in range(150):
        opt.zero_grad()
        loss = head(s, t)
        loss.backward()
        opt.step()
    last = head(s, t).item()
    # The optimum is the noise's Gaussian NLL, 0.5 (log 0.01 + 1) = -1.80 (less a little
    # overfitting of 28 parameters to 256 rows); the start has variance 5 and mu far off.
    assert first > 1.0
    assert last < -1.7
    assert 0.005 < head.variance().min().item() <= head.variance().max().item() < 0.02


def test_vid_teacher_is_detached_and_empty_batch():
    head = VIDHead(3, 2)
    t = torch.randn(4, 2, requires_grad=True)
    head(torch.randn(4, 3), t).backward()
    assert t.grad is None and head.rho.grad is not None
    out = head(torch.randn(0, 3), torch.randn(0, 2))
    assert out.item() == 0.0 and out.dtype == torch.float32


def test_vid_errors():
    head = VIDHead(3, 2)
    with pytest.raises(ValueError, match=r"student_feat must have shape \(N, 3\)"):
        head(torch.randn(4, 4), torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"teacher_feat must have shape \(N, 2\)"):
        head(torch.randn(4, 3), torch.randn(4))
    with pytest.raises(ValueError, match="teacher_feat must have the N=4 rows"):
        head(torch.randn(4, 3), torch.randn(5, 2))
    with pytest.raises(TypeError, match="student_feat must be a float tensor"):
        head(torch.ones(4, 3, dtype=torch.int64), torch.randn(4, 2))
    with pytest.raises(ValueError, match="teacher_feat must be on"):
        head(torch.randn(4, 3), torch.randn(4, 2, device="meta"))
    for kw, pattern in ((dict(eps=0.0), "eps"), (dict(hidden=0), "hidden"),
                        (dict(init_var=1e-9), "init_var")):
        with pytest.raises(ValueError, match=pattern):
            VIDHead(3, 2, **kw)
    with pytest.raises(ValueError, match="student_dim"):
        VIDHead(0, 2)
