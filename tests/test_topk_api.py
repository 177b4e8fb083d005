"""`slam_loss_topk` and `fused_linear_slam_loss`: bad input, the documented special cases, and
the nn.Module wrappers (torch backend; the property tests are in test_topk_properties.py)."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from torch.nn import functional as F

from slam_bench import (FusedLinearSLaMLoss, SLaMTopKLoss, fused_linear_slam_loss, slam_loss,
                        slam_loss_topk)
from slam_bench.vocab.reference import densify

N, V, K, H = 4, 10, 3, 5


def _inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(V, generator=gen)[:K] for _ in range(N)])
    probs = torch.softmax(torch.randn(N, K, generator=gen), dim=1) * 0.9
    return dict(z=torch.randn(N, V, generator=gen), ids=ids, probs=probs,
                hidden=torch.randn(N, H, generator=gen), lm_weight=torch.randn(V, H, generator=gen))


def _call_topk(z, ids, probs, alpha=0.8, k=2, **kw):
    return slam_loss_topk(z, ids, probs, alpha, k, **kw)


def _call_fused(hidden, lm_weight, ids, probs, alpha=0.8, k=2, **kw):
    return fused_linear_slam_loss(hidden, lm_weight, ids, probs, alpha, k, **kw)


def _with(name, fn):
    """A bad-input case: `fn` edits the inputs dict, returns extra keyword arguments."""
    return pytest.param(fn, id=name)


def _dup(t):
    t["ids"][1, 2] = t["ids"][1, 0]


def _set(key, value):
    def edit(t):
        t[key] = value(t) if callable(value) else value
    return edit


TEACHER_CASES = [
    (_dup, {}, ValueError, "teacher_ids must be distinct"),
    (lambda t: t["ids"].__setitem__((2, 1), V), {}, ValueError, r"teacher_ids must lie in \[0, V=10\)"),
    (lambda t: t["ids"].__setitem__((2, 1), -1), {}, ValueError, r"teacher_ids must lie in \[0, V=10\)"),
    (lambda t: t["ids"].__setitem__((0, 1), -100), {}, ValueError, "teacher_ids must lie in"),
    (lambda t: t["probs"].__setitem__((1, 0), -0.1), {}, ValueError, "teacher_probs must be non-negative"),
    (_set("probs", lambda t: t["probs"] / 0.9 * 1.01), {}, ValueError,
     "teacher_probs rows must sum to at most 1"),
    (lambda t: t["probs"].__setitem__((3, 2), float("nan")), {}, ValueError, "teacher_probs must be finite"),
    (_set("ids", torch.arange(V + 1).expand(N, V + 1)), {}, ValueError,
     r"teacher_ids must hold K in \[1, V=10\]"),
    (_set("probs", lambda t: t["probs"][:, :2]), {}, ValueError,
     "teacher_probs must have the shape of teacher_ids"),
    (_set("ids", lambda t: t["ids"][:3]), {}, ValueError, r"teacher_ids must have shape \(N=4, K\)"),
    (_set("ids", lambda t: t["ids"].float()), {}, TypeError, "teacher_ids must be an int64"),
    (_set("probs", lambda t: (t["probs"] * 10).long()), {}, TypeError, "teacher_probs must be a float"),
    (_set("ids", lambda t: t["ids"].to("meta")), {}, ValueError, "teacher_ids must be on cpu"),
    (None, dict(k=4), ValueError, r"k must lie in \[1, K=3\], got 4"),
    (None, dict(k=1, normalize=True), ValueError, r"k must lie in \[2, K=3\]"),
    (None, dict(k=torch.tensor([1, 2, 3, 4])), ValueError, r"k must lie in \[1, K=3\]"),
    (None, dict(k=2.0), TypeError, "k must be an int"),
    (None, dict(alpha=0.0), ValueError, "alpha must lie in"),
    (None, dict(weight=torch.ones(3)), ValueError, "weight must have shape"),
    (None, dict(reduction="avg"), ValueError, "reduction must be one of"),
    (None, dict(temperature=0.0), ValueError, "temperature"),
    (None, dict(backend="cuda"), ValueError, "backend must be one of"),
    (None, dict(ignore_index=-100.0), TypeError, "ignore_index must be an int"),
    (None, dict(normalize=1), TypeError, "normalize must be a bool"),
]


def _ids(cases):
    return [f"{i}-{c[3][:30]}" for i, c in enumerate(cases)]


@pytest.mark.parametrize("edit, kw, exc, match", TEACHER_CASES, ids=_ids(TEACHER_CASES))
@pytest.mark.parametrize("fn", ["topk", "fused"])
def test_bad_teacher_and_parameters_name_the_argument(fn, edit, kw, exc, match):
    t = _inputs()
    if edit is not None:
        edit(t)
    with pytest.raises(exc, match=match):
        if fn == "topk":
            _call_topk(t["z"], t["ids"], t["probs"], **kw)
        else:
            _call_fused(t["hidden"], t["lm_weight"], t["ids"], t["probs"], **kw)


LINEAR_CASES = [
    (_set("lm_weight", lambda t: t["lm_weight"].double()), {}, TypeError,
     "lm_weight must have hidden's dtype"),
    (_set("lm_weight", lambda t: t["lm_weight"].to("meta")), {}, ValueError,
     "lm_weight must be on cpu like hidden"),
    (_set("lm_weight", lambda t: t["lm_weight"][:, :4]), {}, ValueError,
     r"lm_weight must have shape \(V, H=5\)"),
    (_set("hidden", lambda t: t["hidden"][0]), {}, ValueError, r"hidden must have shape \(N, H\)"),
    (None, dict(bias=torch.zeros(V - 1)), ValueError, r"bias must have shape \(V=10,\)"),
    (None, dict(bias=torch.zeros(V, dtype=torch.float64)), TypeError, "bias must have hidden's dtype"),
    (None, dict(bias=torch.zeros(V, device="meta")), ValueError, "bias must be on cpu"),
    (None, dict(chunk_size=0), ValueError, "chunk_size must be None or a positive int"),
    (_set("hidden", lambda t: t["hidden"].index_fill(0, torch.tensor([1]), float("inf"))), {},
     ValueError, "hidden must be finite"),
]


@pytest.mark.parametrize("edit, kw, exc, match", LINEAR_CASES, ids=_ids(LINEAR_CASES))
def test_bad_linear_inputs_name_the_argument(edit, kw, exc, match):
    t = _inputs()
    if edit is not None:
        edit(t)
    with pytest.raises(exc, match=match):
        _call_fused(t["hidden"], t["lm_weight"], t["ids"], t["probs"], **kw)


def test_bad_logits_name_the_argument():
    t = _inputs()
    with pytest.raises(ValueError, match=r"student_logits must have shape \(N, V\)"):
        _call_topk(t["z"][0], t["ids"], t["probs"])
    with pytest.raises(ValueError, match="student_logits must be finite"):
        _call_topk(t["z"].index_fill(1, torch.tensor([3]), float("nan")), t["ids"], t["probs"])
    with pytest.raises(ValueError, match=r"teacher_ids must have shape \(N=2, K\)"):
        _call_topk(t["z"][:2], t["ids"], t["probs"])


def test_value_checks_have_no_n_by_v_temporaries():
    """The logits' finiteness check is a chunked min/max pass (slam_bench.checks.check_finite):
    well under one N x V byte of extra memory, and it still sees an inf in the last entry."""
    from slam_bench.vocab import checks as vocab_checks
    from slam_bench.profiling import timing

    n, v = 2048, 500
    z = torch.randn(n, v)
    peak = timing.peak_extra_bytes_cpu(lambda: vocab_checks.check_logits(z, True))
    assert peak < n * v // 100, f"the value check allocated {peak} bytes"
    z[-1, -1] = float("inf")
    with pytest.raises(ValueError, match="student_logits must be finite"):
        vocab_checks.check_logits(z, True)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs Triton")
def test_triton_backend_rejects_float64():
    t = _inputs()
    with pytest.raises(TypeError, match="student_logits must be float16/bfloat16/float32"):
        _call_topk(t["z"].double(), t["ids"], t["probs"], backend="triton")
    with pytest.raises(TypeError, match="hidden must be float16/bfloat16/float32"):
        _call_fused(t["hidden"].double(), t["lm_weight"].double(), t["ids"], t["probs"],
                    backend="triton")


def test_ignored_rows_are_not_read_and_mean_counts_the_others():
    t = _inputs()
    ids, probs = t["ids"].clone(), t["probs"].clone()
    ids[1] = torch.tensor([-100, 999, 999])  # out of range and repeated: never checked
    probs[1] = float("nan")
    z = t["z"].clone().requires_grad_()
    loss = slam_loss_topk(z, ids, probs, 0.8, 2)
    loss.backward()
    keep = torch.tensor([0, 2, 3])
    z2 = t["z"][keep].clone().requires_grad_()
    ref = slam_loss_topk(z2, t["ids"][keep], t["probs"][keep], 0.8, 2)  # mean over 3 rows
    ref.backward()
    torch.testing.assert_close(loss, ref)
    assert bool((z.grad[1] == 0).all())
    torch.testing.assert_close(z.grad[keep], z2.grad)
    rows = slam_loss_topk(t["z"], ids, probs, 0.8, 2, reduction="none")
    assert rows[1].item() == 0.0 and bool((rows[keep] > 0).all())


@pytest.mark.parametrize("fn", ["topk", "fused"])
def test_no_rows_or_all_ignored_give_zero(fn):
    t = _inputs()
    ids = torch.full_like(t["ids"], 7)
    ids[:, 0] = 7  # ignore_index=7
    for n in (0, N):
        z = t["z"][:n].clone().requires_grad_()
        h = t["hidden"][:n].clone().requires_grad_()
        w = t["lm_weight"].clone().requires_grad_()
        for reduction in ("mean", "sum", "none"):
            kw = dict(ignore_index=7, reduction=reduction)
            if fn == "topk":
                out = slam_loss_topk(z, ids[:n], t["probs"][:n], 0.8, 2, **kw)
            else:
                out = fused_linear_slam_loss(h, w, ids[:n], t["probs"][:n], 0.8, 2, **kw)
            assert out.dtype == torch.float32
            assert out.shape == ((n,) if reduction == "none" else ())
            assert bool((out == 0).all())
            out.sum().backward()
        for g in ((z.grad,) if fn == "topk" else (h.grad, w.grad)):
            assert g is not None and bool((g == 0).all())


def test_equals_slam_loss_on_the_densified_teacher():
    """The issue's contract: the K probabilities scattered into a dense row give slam_loss."""
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(N, V, generator=gen, dtype=torch.float64)
    ids = torch.stack([torch.randperm(V, generator=gen)[:K] for _ in range(N)])
    probs = torch.softmax(torch.randn(N, K, generator=gen, dtype=torch.float64), dim=1)
    probs[0, 1] = probs[0, 2]  # a tie, at the threshold for k = 2
    probs[0] /= probs[0].sum()
    y, _ = densify(ids, probs, V)  # rows on the simplex, as slam_loss requires
    alpha = torch.tensor([0.7, 0.9, 0.6, 0.8], dtype=torch.float64)
    for normalize in (False, True):
        k = torch.tensor([2, 2, 3, 2]) if normalize else torch.tensor([2, 1, 3, 2])
        for reduction in ("mean", "none"):
            kw = dict(normalize=normalize, temperature=1.7, reduction=reduction)
            torch.testing.assert_close(slam_loss_topk(z, ids, probs, alpha, k, **kw),
                                       slam_loss(z, y, alpha, k, **kw), rtol=1e-12, atol=1e-12)


def test_mass_outside_the_k_ids_is_dropped_not_renormalised():
    """Scaling a row's K probabilities scales its loss (the mask and q do not depend on the
    scale): a renormalising implementation would give the same loss for both."""
    t = _inputs(4)
    for alpha in (1.0, 0.7):
        full = slam_loss_topk(t["z"], t["ids"], t["probs"], alpha, 2, reduction="none")
        half = slam_loss_topk(t["z"], t["ids"], t["probs"] * 0.5, alpha, 2, reduction="none")
        torch.testing.assert_close(half, 0.5 * full)


def test_alpha_one_is_distillation_over_the_k_ids():
    t = _inputs(5)
    out = slam_loss_topk(t["z"], t["ids"], t["probs"], 1.0, 1, temperature=2.0, reduction="none")
    logf = torch.log_softmax(t["z"] / 2.0, dim=1).gather(1, t["ids"])
    torch.testing.assert_close(out, -(t["probs"] * logf).sum(dim=1))


def test_ties_at_the_threshold_are_all_mixed():
    z = torch.randn(1, 6, dtype=torch.float64)
    ids = torch.tensor([[4, 1, 2]])
    probs = torch.tensor([[0.3, 0.3, 0.3]], dtype=torch.float64)
    out = slam_loss_topk(z, ids, probs, 0.8, 1)
    f = torch.softmax(z, dim=1)[0, [4, 1, 2]]
    q = 0.8 * f + 0.2 * (1 - f)  # all three are in the top-1 mask (ties included)
    torch.testing.assert_close(out, -(probs[0] * q.log()).sum())


def test_fused_gradients_only_where_asked_and_forward_only_path():
    t = _inputs(6)
    w = t["lm_weight"].clone().requires_grad_()
    b = torch.zeros(V, requires_grad=True)
    loss = fused_linear_slam_loss(t["hidden"], w, t["ids"], t["probs"], 0.8, 2, bias=b)
    loss.backward()
    ref_w = t["lm_weight"].clone().requires_grad_()
    ref_b = torch.zeros(V, requires_grad=True)
    slam_loss_topk(F.linear(t["hidden"], ref_w, ref_b), t["ids"], t["probs"], 0.8, 2).backward()
    torch.testing.assert_close(w.grad, ref_w.grad)
    torch.testing.assert_close(b.grad, ref_b.grad)
    with torch.no_grad():
        again = fused_linear_slam_loss(t["hidden"], w, t["ids"], t["probs"], 0.8, 2, bias=b)
    assert not again.requires_grad
    torch.testing.assert_close(again, loss.detach())


def test_modules_wrap_the_functions():
    t = _inputs(7)
    w = torch.rand(N)
    m = SLaMTopKLoss(normalize=True, temperature=2.0, reduction="sum")
    torch.testing.assert_close(
        m(t["z"], t["ids"], t["probs"], 0.7, 2, weight=w),
        slam_loss_topk(t["z"], t["ids"], t["probs"], 0.7, 2, normalize=True, temperature=2.0,
                       reduction="sum", weight=w))
    f = FusedLinearSLaMLoss(temperature=2.0, chunk_size=3, ignore_index=-1)
    torch.testing.assert_close(
        f(t["hidden"], t["lm_weight"], t["ids"], t["probs"], 0.7, 2),
        fused_linear_slam_loss(t["hidden"], t["lm_weight"], t["ids"], t["probs"], 0.7, 2,
                               temperature=2.0, ignore_index=-1))
    assert "chunk_size=3" in repr(f) and "normalize=True" in repr(m)


@pytest.mark.parametrize("backend", ["torch"] + (
    ["triton"] if importlib.util.find_spec("triton") and not torch.cuda.is_available() else []))
def test_int32_ids_give_the_int64_result(backend):
    t = _inputs(8)
    ids = t["ids"].clone()
    ids[2, 0] = -100
    for fn, args in ((slam_loss_topk, (t["z"],)),
                     (fused_linear_slam_loss, (t["hidden"], t["lm_weight"]))):
        a = fn(*args, ids, t["probs"], 0.8, 2, backend=backend, reduction="none")
        b = fn(*args, ids.int(), t["probs"], 0.8, 2, backend=backend, reduction="none")
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_torch_backend_chunk_workers_match_the_oracle(monkeypatch):
    """At 2 torch threads the top-K torch backend hands row chunks to slam_bench.chunks'
    workers (as slam_loss does): many chunks of a few rows, ignored rows among them, give the
    float64 oracle's loss and gradients, and the thread count is restored."""
    from slam_bench import chunks
    from slam_bench.profiling.topk_problems import random_topk_teacher
    from slam_bench.vocab.reference import fused_linear_slam_loss_reference, slam_loss_topk_reference

    monkeypatch.setattr(chunks, "CHUNK_ELEMENTS", 64)  # 2 rows a chunk at V = 30
    gen = torch.Generator().manual_seed(3)
    n, v = 41, 30
    ids, probs, _ = random_topk_teacher(n, v, 6, gen=gen, n_ignored=5)
    z = torch.randn(n, v, generator=gen, dtype=torch.float64)
    hidden = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    w = torch.randn(v, 4, generator=gen, dtype=torch.float64)
    alpha = 0.5 + 0.5 * torch.rand(n, generator=gen, dtype=torch.float64)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for fn, ref, inputs in (
                (slam_loss_topk, slam_loss_topk_reference, (z,)),
                (fused_linear_slam_loss, fused_linear_slam_loss_reference, (hidden, w))):
            ours = [t.clone().requires_grad_(True) for t in inputs]
            theirs = [t.clone().requires_grad_(True) for t in inputs]
            out = fn(*ours, ids, probs.double(), alpha, 2, backend="torch", temperature=1.5)
            expected = ref(*theirs, ids, probs.double(), alpha, 2, temperature=1.5)
            out.backward()
            expected.backward()
            torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
            for a, b in zip(ours, theirs):
                torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("loss", ["slam_loss", "slam_loss_topk", "fused_linear_slam_loss"])
def test_torch_compile_on_cpu_with_default_arguments_matches_eager(loss):
    """torch.compile of a step that calls a loss with its default arguments (value checks on):
    the top-K losses' teacher checks run eagerly (a graph break; slam_loss's run inside its op),
    never a Dynamo internal error (the top-K checks used to raise one), and the loss and
    gradients equal eager's."""
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(4)
    n, v, kk = 8, 50, 4
    ids = torch.stack([torch.randperm(v, generator=gen)[:kk] for _ in range(n)])
    probs = torch.rand(n, kk, generator=gen)
    probs = probs / probs.sum(dim=1, keepdim=True)
    hidden = torch.randn(n, 6, generator=gen)
    weight = torch.randn(v, 6, generator=gen)

    def step(h, w):
        if loss == "fused_linear_slam_loss":
            return fused_linear_slam_loss(h, w, ids, probs, 0.7, 2)
        z = h @ w.T
        if loss == "slam_loss_topk":
            return slam_loss_topk(z, ids, probs, 0.7, 2)
        return slam_loss(z, densify(ids, probs, v)[0], 0.7, 2)

    def run(fn):
        h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        out = fn(h, w)
        out.backward()
        return out.detach(), h.grad, w.grad

    for got, want in zip(run(torch.compile(step, backend="aot_eager")), run(step)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_fused_linear_on_cpu_traces_whole_without_value_checks():
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(5)
    ids = torch.stack([torch.randperm(30, generator=gen)[:3] for _ in range(6)])
    probs = torch.full((6, 3), 1 / 3)
    h = torch.randn(6, 4, generator=gen, requires_grad=True)
    w = torch.randn(30, 4, generator=gen, requires_grad=True)
    fn = torch.compile(lambda h, w: fused_linear_slam_loss(h, w, ids, probs, 0.7, 2,
                                                           check_values=False),
                       backend="aot_eager", fullgraph=True)
    fn(h, w).backward()
    assert h.grad is not None and w.grad is not None
