"""Every bad input of the public losses raises the right error type, naming the argument."""
from __future__ import annotations

import math

import pytest
import torch

from slam_bench import DistillLoss, SLaMLoss, distill_loss, slam_loss

N, C = 4, 5


def good():
    z = torch.randn(N, C)
    y = torch.softmax(torch.randn(N, C), dim=1)
    return dict(student_logits=z, teacher_probs=y, alpha=0.8, k=2)


def bad_teacher(fn):
    def make():
        kw = good()
        kw["teacher_probs"] = fn(kw["teacher_probs"].clone())
        return kw
    return make


def with_(**over):
    def make():
        kw = good()
        for key, val in over.items():
            kw[key] = val() if callable(val) else val
        return kw
    return make


def _set(t, idx, value):
    t[idx] = value
    return t


# (id, kwargs factory, error type, regex the message must match)
CASES = [
    ("logits_rank1", with_(student_logits=lambda: torch.randn(C)), ValueError,
     r"student_logits must have shape \(\*, C\) with at least one leading dimension"),
    ("logits_rank3", with_(student_logits=lambda: torch.randn(N, C, 1)), ValueError,
     r"teacher_probs must have the shape of student_logits \(4, 5, 1\)"),
    ("probs_rank1", with_(teacher_probs=lambda: torch.full((C,), 1 / C)), ValueError, "teacher_probs.*shape"),
    ("probs_rank3", with_(teacher_probs=lambda: torch.full((N, 1, C), 1 / C)), ValueError,
     "teacher_probs.*shape"),
    ("shape_mismatch", with_(teacher_probs=lambda: torch.full((N, C + 1), 1 / (C + 1))), ValueError,
     "teacher_probs.*shape"),
    ("rows_mismatch", with_(teacher_probs=lambda: torch.full((N + 1, C), 1 / C)), ValueError,
     "teacher_probs.*shape"),
    ("one_class", with_(student_logits=lambda: torch.zeros(N, 1), teacher_probs=lambda: torch.ones(N, 1),
                        k=1), ValueError, "student_logits.*C >= 2"),
    ("logits_int", with_(student_logits=lambda: torch.zeros(N, C, dtype=torch.int64)), TypeError,
     "student_logits.*float"),
    ("logits_not_tensor", with_(student_logits=lambda: [[0.0] * C] * N), TypeError, "student_logits.*Tensor"),
    ("probs_int", with_(teacher_probs=lambda: torch.zeros(N, C, dtype=torch.int32)), TypeError,
     "teacher_probs.*float"),
    ("logits_nan", with_(student_logits=lambda: _set(torch.randn(N, C), (0, 0), math.nan)), ValueError,
     "student_logits.*finite"),
    ("logits_inf", with_(student_logits=lambda: _set(torch.randn(N, C), (3, 4), math.inf)),
     ValueError, "student_logits.*finite"),
    ("logits_neg_inf", with_(student_logits=lambda: _set(torch.randn(N, C), (1, 2), -math.inf)),
     ValueError, "student_logits.*finite"),
    ("probs_neg_inf", bad_teacher(lambda y: _set(y, (0, 1), -math.inf)), ValueError,
     "teacher_probs.*finite"),
    ("probs_bf16_not_simplex", with_(teacher_probs=lambda: torch.full((N, C), 0.3,
                                                                     dtype=torch.bfloat16)),
     ValueError, "teacher_probs.*sum to 1 within 0.01"),
    ("probs_negative", bad_teacher(lambda y: _set(_set(y, (1, 0), -0.1), (1, 1), y[1, 1] + 0.1)),
     ValueError, "teacher_probs.*non-negative"),
    ("probs_nan", bad_teacher(lambda y: _set(y, (2, 3), math.nan)), ValueError, "teacher_probs.*finite"),
    ("probs_inf", bad_teacher(lambda y: _set(y, (2, 3), math.inf)), ValueError, "teacher_probs.*finite"),
    ("probs_not_simplex", bad_teacher(lambda y: y * 1.01), ValueError, "teacher_probs.*sum to 1"),
    ("alpha_zero", with_(alpha=0.0), ValueError, r"alpha.*\(0, 1\]"),
    ("alpha_negative", with_(alpha=-0.5), ValueError, r"alpha.*\(0, 1\]"),
    ("alpha_above_one", with_(alpha=1.5), ValueError, r"alpha.*\(0, 1\]"),
    ("alpha_nan", with_(alpha=math.nan), ValueError, r"alpha.*\(0, 1\]"),
    ("alpha_tensor_zero", with_(alpha=lambda: torch.tensor([0.5, 0.0, 0.9, 1.0])), ValueError, "alpha"),
    ("alpha_tensor_above", with_(alpha=lambda: torch.tensor([0.5, 1.01, 0.9, 1.0])), ValueError, "alpha"),
    ("alpha_tensor_nan", with_(alpha=lambda: torch.tensor([0.5, math.nan, 0.9, 1.0])), ValueError, "alpha"),
    ("alpha_tensor_shape", with_(alpha=lambda: torch.full((N, 1), 0.9)), ValueError, "alpha.*shape"),
    ("alpha_tensor_int", with_(alpha=lambda: torch.ones(N, dtype=torch.int64)), TypeError, "alpha.*float"),
    ("alpha_str", with_(alpha="0.9"), TypeError, "alpha"),
    ("alpha_bool", with_(alpha=True), TypeError, "alpha"),
    ("k_zero", with_(k=0), ValueError, r"k must lie in \[1, C=5\]"),
    ("k_above_c", with_(k=C + 1), ValueError, r"k must lie in \[1, C=5\]"),
    ("k_float", with_(k=2.0), TypeError, "k must be an int"),
    ("k_bool", with_(k=True), TypeError, "k must be an int"),
    ("k_tensor_zero", with_(k=lambda: torch.tensor([1, 0, 2, 3])), ValueError, "k must lie in"),
    ("k_tensor_above", with_(k=lambda: torch.tensor([1, 6, 2, 3])), ValueError, "k must lie in"),
    ("k_tensor_float", with_(k=lambda: torch.ones(N)), TypeError, "k must be an int"),
    ("k_tensor_shape", with_(k=lambda: torch.ones(N + 1, dtype=torch.int64)), ValueError, "k.*shape"),
    ("k1_normalize", with_(k=1, normalize=True), ValueError, "k must lie in.*normalize"),
    ("k_tensor_normalize", with_(k=lambda: torch.tensor([2, 1, 2, 3]), normalize=True), ValueError,
     "k must lie in.*normalize"),
    ("normalize_not_bool", with_(normalize=1), TypeError, "normalize"),
    ("weight_shape", with_(weight=lambda: torch.ones(N + 1)), ValueError, "weight.*shape"),
    ("weight_2d", with_(weight=lambda: torch.ones(N, 1)), ValueError, "weight.*shape"),
    ("weight_negative", with_(weight=lambda: torch.tensor([1.0, -0.1, 1.0, 1.0])), ValueError,
     "weight.*non-negative"),
    ("weight_nan", with_(weight=lambda: torch.tensor([1.0, math.nan, 1.0, 1.0])), ValueError, "weight"),
    ("weight_inf", with_(weight=lambda: torch.tensor([1.0, math.inf, 1.0, 1.0])), ValueError,
     "weight must be finite"),
    ("weight_neg_inf", with_(weight=lambda: torch.tensor([1.0, -math.inf, 1.0, 1.0])), ValueError,
     "weight must be finite"),
    ("weight_int", with_(weight=lambda: torch.ones(N, dtype=torch.int64)), TypeError, "weight.*float"),
    ("weight_list", with_(weight=[1.0] * N), TypeError, "weight"),
    ("temperature_zero", with_(temperature=0.0), ValueError, "temperature"),
    ("temperature_negative", with_(temperature=-1.0), ValueError, "temperature"),
    ("temperature_inf", with_(temperature=math.inf), ValueError, "temperature"),
    ("temperature_nan", with_(temperature=math.nan), ValueError, "temperature"),
    ("temperature_str", with_(temperature="1"), TypeError, "temperature"),
    ("reduction_unknown", with_(reduction="avg"), ValueError, "reduction.*'mean'"),
    ("backend_unknown", with_(backend="cuda"), ValueError, "backend.*'auto'"),
    ("probs_other_device", with_(teacher_probs=lambda: torch.full((N, C), 1 / C, device="meta")),
     ValueError, "teacher_probs.*meta"),
    ("alpha_other_device", with_(alpha=lambda: torch.full((N,), 0.9, device="meta")), ValueError,
     "alpha.*meta"),
    ("k_other_device", with_(k=lambda: torch.full((N,), 2, device="meta")), ValueError, "k.*meta"),
    ("weight_other_device", with_(weight=lambda: torch.ones(N, device="meta")), ValueError,
     "weight.*meta"),
]

# The cases that also apply to distill_loss (it has no alpha, k or normalize).
DISTILL_IDS = {cid for cid, *_ in CASES
               if not cid.startswith(("alpha", "k_", "k1", "normalize"))}


@pytest.mark.parametrize("make,exc,pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_slam_loss_rejects(make, exc, pattern):
    with pytest.raises(exc, match=pattern):
        slam_loss(**make())


@pytest.mark.parametrize("make,exc,pattern", [c[1:] for c in CASES if c[0] in DISTILL_IDS],
                         ids=[c[0] for c in CASES if c[0] in DISTILL_IDS])
def test_distill_loss_rejects(make, exc, pattern):
    kw = make()
    kw.pop("alpha"), kw.pop("k")
    with pytest.raises(exc, match=pattern):
        distill_loss(**kw)


def test_modules_reject_bad_input():
    kw = good()
    with pytest.raises(ValueError, match="reduction"):
        SLaMLoss(reduction="avg")(kw["student_logits"], kw["teacher_probs"], 0.9, 2)
    with pytest.raises(ValueError, match="temperature"):
        DistillLoss(temperature=0.0)(kw["student_logits"], kw["teacher_probs"])


# Value checks that check_values=False must skip: they read tensor contents.
VALUE_IDS = ["logits_nan", "probs_negative", "probs_nan", "probs_not_simplex", "alpha_tensor_zero",
             "alpha_tensor_above", "alpha_tensor_nan", "k_tensor_zero", "k_tensor_normalize",
             "weight_negative", "weight_nan", "weight_inf"]


@pytest.mark.parametrize("cid", VALUE_IDS)
def test_check_values_false_skips_value_checks(cid):
    make = dict((c[0], c[1]) for c in CASES)[cid]
    kw = make()
    # The same input is rejected with checks on...
    with pytest.raises(ValueError):
        slam_loss(**kw)
    # ...and accepted without them (the result may be garbage: the caller vouched for it).
    if cid.startswith("k_tensor"):
        return  # an out-of-range k may index out of bounds; see the test just below
    out = slam_loss(**kw, check_values=False)
    assert out.shape == ()


@pytest.mark.parametrize("name, bad", [("alpha", torch.full((2,), 0.9)),
                                       ("alpha", torch.full((3, 2), 0.9)),
                                       ("k", torch.full((6, 1), 2)),
                                       ("weight", torch.ones(2, 3, 1))])
def test_per_row_tensors_of_a_3d_call_have_its_leading_shape(name, bad):
    kw = dict(student_logits=torch.randn(2, 3, C), teacher_probs=torch.full((2, 3, C), 1 / C),
              alpha=0.8, k=2)
    kw[name] = bad
    with pytest.raises(ValueError, match=rf"{name} must have the leading shape \(2, 3\) of "
                                         rf"student_logits, or \(6,\) flattened"):
        slam_loss(**kw)
    if name == "weight":
        kw.pop("alpha"), kw.pop("k")
        with pytest.raises(ValueError, match="weight must have the leading shape"):
            distill_loss(**kw)


def test_weight_inf_is_refused_rather_than_giving_an_inf_loss():
    # The failure it prevents: weight = inf made the loss inf and the gradients NaN, silently.
    kw = good()
    z = kw["student_logits"].requires_grad_()
    w = torch.tensor([1.0, math.inf, 1.0, 1.0])
    with pytest.raises(ValueError, match="weight must be finite"):
        slam_loss(**kw, weight=w)
    with pytest.raises(ValueError, match="weight must be finite"):
        DistillLoss()(z, kw["teacher_probs"], weight=w)
    # The sparse top-K losses share the check.
    from slam_bench import fused_linear_slam_loss, slam_loss_topk
    ids = torch.tensor([[0, 1]] * N)
    probs = torch.full((N, 2), 0.5)
    with pytest.raises(ValueError, match="weight must be finite"):
        slam_loss_topk(z, ids, probs, 0.8, 1, weight=w)
    with pytest.raises(ValueError, match="weight must be finite"):
        fused_linear_slam_loss(torch.randn(N, 3), torch.randn(C, 3), ids, probs, 0.8, 1, weight=w)


def test_check_values_false_skips_k_value_check():
    z = torch.randn(N, C)
    y = torch.softmax(torch.randn(N, C), dim=1)
    k = torch.tensor([2, 1, 2, 3])  # k = 1 with normalize=True gives s = 1/0 = inf: unchecked
    slam_loss(z, y, 0.9, k, normalize=True, check_values=False)
    with pytest.raises(ValueError, match="k must lie in"):
        slam_loss(z, y, 0.9, k, normalize=True)


def test_check_values_false_still_checks_metadata():
    kw = good()
    for bad, exc, pattern in ((dict(alpha=torch.full((N + 1,), 0.9)), ValueError, "alpha.*shape"),
                              (dict(k=2.5), TypeError, "k must be an int"),
                              (dict(alpha=1.5), ValueError, "alpha"),
                              (dict(reduction="avg"), ValueError, "reduction")):
        with pytest.raises(exc, match=pattern):
            slam_loss(**{**kw, **bad}, check_values=False)


def test_value_checks_are_one_pass_without_n_by_c_temporaries():
    """The value checks of an (N, C) call allocate no N x C buffer (only per-row sums), and
    cost about one read of the inputs: well under one N x C fp32 buffer of extra memory."""
    from slam_bench import checks
    from slam_bench.profiling import timing

    n, c = 2048, 500
    z = torch.randn(n, c)
    y = torch.softmax(torch.randn(n, c), dim=1)
    peak = timing.peak_extra_bytes_cpu(
        lambda: checks.check_loss_inputs(z, y, 1.0, None, "mean", True))
    assert peak < n * c * 4 // 100, f"value checks allocated {peak} bytes"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_value_stats_match_plain_formulas(dtype):
    from slam_bench import checks

    gen = torch.Generator().manual_seed(0)
    z = torch.randn(37, 11, generator=gen)
    y = torch.softmax(torch.randn(37, 11, generator=gen), dim=1).to(dtype)
    mn, dev, zmin, zmax = checks.value_stats(y, z)
    assert mn == y.min().item() and zmin == z.min().item() and zmax == z.max().item()
    assert dev == pytest.approx((y.double().sum(dim=1) - 1).abs().max().item(), abs=1e-6)


def test_torch_backend_runs_the_value_checks_inside_its_loss_pass(monkeypatch):
    """On the torch backend the (N, C) value checks read no tensor of their own (no
    value_stats pass): the loss pass takes their numbers from each chunk, and bad values
    raise the same errors, from any chunk."""
    from slam_bench import checks

    def separate_pass(*args, **kwargs):
        raise AssertionError("a separate value-check pass ran")
    monkeypatch.setattr(checks, "value_stats", separate_pass)
    kw = good()
    slam_loss(**kw)
    distill_loss(kw["student_logits"], kw["teacher_probs"])
    by_id = {c[0]: c for c in CASES}
    for cid in ("logits_nan", "logits_inf", "probs_negative", "probs_nan", "probs_not_simplex",
                "probs_bf16_not_simplex"):
        _, make, exc, pattern = by_id[cid]
        with pytest.raises(exc, match=pattern):
            slam_loss(**make())
    # Many chunks (on the CPU worker threads): a bad entry in the last row is still found.
    n, c = 4096, 300
    z = torch.randn(n, c)
    y = torch.softmax(torch.randn(n, c), dim=1)
    z[-1, -1] = math.inf
    with pytest.raises(ValueError, match="student_logits.*finite"):
        slam_loss(z, y, 0.8, 3)
    z[-1, -1] = 0.0
    y[-1] *= 1.5
    with pytest.raises(ValueError, match="teacher_probs.*sum to 1"):
        distill_loss(z, y)
