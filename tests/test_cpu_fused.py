"""The compiled CPU body of the torch backend (slam_bench.cpu_fused) against the reference
formulas, its value checks, its aten-op count, its cache and its eager fallback."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from slam_bench import cpu_fused, distill_loss, slam_loss, slam_loss_topk
from slam_bench.reference import distill_loss_reference, slam_loss_reference

pytestmark = pytest.mark.skipif(cpu_fused.library() is None,
                                reason="no C++ compiler here: the eager fallback is tested below")


def _grad(loss_fn, z):
    zz = z.detach().clone().requires_grad_(True)
    out = loss_fn(zz)
    out.sum().backward() if out.dim() else out.backward()
    return out.detach(), zz.grad


@st.composite
def slam_cases(draw):
    n = draw(st.integers(1, 12))
    c = draw(st.integers(2, 40))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=gen, dtype=torch.float64) * draw(st.sampled_from([0.5, 3.0, 20.0]))
    y = torch.softmax(torch.randn(n, c, generator=gen, dtype=torch.float64) * 2, dim=1)
    if draw(st.booleans()):  # few distinct values: ties at the top-k threshold
        y = torch.round(y * 4) + (torch.rand(n, c, generator=gen) < 0.2)
        y[:, 0] += 1.0
        y = (y / y.sum(dim=1, keepdim=True)).to(torch.float64)
    normalize = draw(st.booleans())
    lo = 2 if normalize else 1
    if draw(st.booleans()):
        k = draw(st.integers(lo, c))
    else:
        k = torch.randint(lo, c + 1, (n,), generator=gen)
    if draw(st.booleans()):
        alpha = draw(st.sampled_from([0.3, 0.75, 1.0]))
    else:
        alpha = torch.rand(n, generator=gen, dtype=torch.float64) * 0.9 + 0.1
        alpha[0] = 1.0  # a row of plain distillation among mixed ones
    weight = torch.rand(n, generator=gen, dtype=torch.float64) if draw(st.booleans()) else None
    kw = dict(normalize=normalize, temperature=draw(st.sampled_from([1.0, 0.7, 2.5])),
              weight=weight, reduction=draw(st.sampled_from(["mean", "sum", "none"])))
    return z, y, alpha, k, kw


@settings(max_examples=150)
@given(slam_cases(), st.booleans())
def test_compiled_slam_matches_reference_in_float64(case, check):
    z, y, alpha, k, kw = case
    out, g = _grad(lambda zz: slam_loss(zz, y, alpha, k, check_values=check, **kw), z)
    ref, gr = _grad(lambda zz: slam_loss_reference(zz, y, alpha, k, **kw), z)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g, gr, rtol=1e-9, atol=1e-12)


@settings(max_examples=60)
@given(slam_cases())
def test_compiled_slam_float32_close_to_reference(case):
    z, y, alpha, k, kw = case
    a32 = alpha.float() if isinstance(alpha, torch.Tensor) else alpha
    w32 = kw["weight"].float() if kw["weight"] is not None else None
    out, g = _grad(lambda zz: slam_loss(zz, y.float(), a32, k, **{**kw, "weight": w32}), z.float())
    ref, gr = _grad(lambda zz: slam_loss_reference(zz, y, alpha, k, **kw), z)
    assert out.dtype == g.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(g.double(), gr, rtol=2e-4, atol=2e-6)


@settings(max_examples=40)
@given(slam_cases())
def test_compiled_distill_matches_reference(case):
    z, y, _, _, kw = case
    kw = {key: v for key, v in kw.items() if key != "normalize"}
    out, g = _grad(lambda zz: distill_loss(zz, y, **kw), z)
    ref, gr = _grad(lambda zz: distill_loss_reference(zz, y, **kw), z)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g, gr, rtol=1e-9, atol=1e-12)


def test_compiled_and_eager_bodies_agree(monkeypatch):
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(300, 257, generator=gen) * 3
    y = torch.softmax(torch.randn(300, 257, generator=gen) * 3, dim=1)
    k = torch.randint(1, 40, (300,), generator=gen)
    alpha = torch.rand(300, generator=gen) * 0.5 + 0.5
    fused = _grad(lambda zz: slam_loss(zz, y, alpha, k, temperature=1.3), z)
    monkeypatch.setenv("SLAM_BENCH_CPU_KERNEL", "0")
    eager = _grad(lambda zz: slam_loss(zz, y, alpha, k, temperature=1.3), z)
    torch.testing.assert_close(fused[0], eager[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused[1], eager[1], rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_compute_in_float32(dtype):
    z, y = torch.randn(5, 9), torch.softmax(torch.randn(5, 9), dim=1)
    out, g = _grad(lambda zz: slam_loss(zz, y.to(dtype), 0.8, 3), z.to(dtype))
    ref, _ = _grad(lambda zz: slam_loss_reference(zz, y.to(dtype).double(), 0.8, 3),
                   z.to(dtype).double())
    assert out.dtype == torch.float32 and g.dtype == dtype
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)


class _Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("call", ["slam", "slam_unchecked", "slam_rows", "distill"])
def test_at_most_60_aten_ops_per_forward_and_backward(call):
    # Independent of N and C: one compiled call, the allocations and the reduction around it.
    gen = torch.Generator().manual_seed(0)
    z = (torch.randn(2048, 1000, generator=gen) * 2).requires_grad_(True)
    y = torch.softmax(torch.randn(2048, 1000, generator=gen) * 3, dim=1)
    alpha = torch.rand(2048, generator=gen) * 0.4 + 0.6
    k = torch.randint(2, 8, (2048,), generator=gen)
    fn = {"slam": lambda: slam_loss(z, y, alpha, 5),
          "slam_unchecked": lambda: slam_loss(z, y, alpha, 5, check_values=False),
          "slam_rows": lambda: slam_loss(z, y, alpha, k, normalize=True, temperature=2.0,
                                         weight=alpha, reduction="none").sum(),
          "distill": lambda: distill_loss(z, y)}[call]
    with _Count() as counter:
        fn().backward()
    assert counter.n <= 60, counter.n


@pytest.mark.parametrize("bad, message", [
    ("z_nan", "student_logits must be finite"), ("z_inf", "student_logits must be finite"),
    ("z_neg_inf", "student_logits must be finite"), ("y_nan", "teacher_probs must be finite"),
    ("y_neg", "teacher_probs must be non-negative"), ("y_sum", "rows must sum to 1"),
])
@pytest.mark.parametrize("loss", ["slam", "distill"])
def test_compiled_value_checks_raise_the_api_errors(bad, message, loss):
    z = torch.randn(70, 33)
    y = torch.softmax(torch.randn(70, 33), dim=1)
    r, c = 61, 32  # the last column: a vector tail at C = 33
    if bad.startswith("z"):
        z[r, c] = {"z_nan": float("nan"), "z_inf": float("inf"), "z_neg_inf": -float("inf")}[bad]
    elif bad == "y_nan":
        y[r, c] = float("nan")
    elif bad == "y_neg":
        y[r, 0] -= 0.01 + y[r, 0]
        y[r, 1] += 0.01 + y[r, 0].abs()
    else:
        y[r] *= 1.01
    z.requires_grad_(True)
    with pytest.raises(ValueError, match=message):
        (slam_loss(z, y, 0.7, 3) if loss == "slam" else distill_loss(z, y)).backward()


def test_unchecked_out_of_range_k_is_memory_safe():
    # With check_values=False nothing reads k's values before the body: it clamps them to [1, C].
    z, y = torch.randn(6, 50), torch.softmax(torch.randn(6, 50), dim=1)
    k = torch.tensor([0, -5, 51, 10**9, 3, 50])
    out = slam_loss(z, y, 0.8, k, check_values=False, reduction="none")
    ref = slam_loss_reference(z, y, 0.8, k.clamp(1, 50), reduction="none")
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_large_k_uses_selection_and_keeps_ties():
    gen = torch.Generator().manual_seed(1)
    y = torch.softmax(torch.randn(8, 300, generator=gen, dtype=torch.float64), dim=1)
    y[:, 100:140] = y[:, 100:101]  # a tie straddling the 60th largest in some rows
    y = y / y.sum(dim=1, keepdim=True)
    z = torch.randn(8, 300, generator=gen, dtype=torch.float64)
    for k in (33, 60, 120, 300):
        out, g = _grad(lambda zz: slam_loss(zz, y, 0.6, k), z)
        ref, gr = _grad(lambda zz: slam_loss_reference(zz, y, 0.6, k), z)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g, gr, rtol=1e-9, atol=1e-12)


def test_a_fresh_process_loads_the_cached_build():
    # The library is already built (module skip condition); a new process must not rebuild it.
    code = ("import time, torch; from slam_bench import cpu_fused; t = time.perf_counter(); "
            "lib = cpu_fused.library(); print(lib is not None, time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    ok, seconds = out.stdout.split()
    assert ok == "True" and float(seconds) < 5.0, out.stdout + out.stderr


def test_no_compiler_falls_back_to_the_eager_body_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.setenv("SLAM_BENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(cpu_fused, "_compiler", lambda: None)
    monkeypatch.setattr(cpu_fused, "_TRIED", False)
    monkeypatch.setattr(cpu_fused, "_LIB", None)
    z, y = torch.randn(4, 6, requires_grad=True), torch.softmax(torch.randn(4, 6), dim=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        slam_loss(z, y, 0.7, 2).backward()
        distill_loss(z, y).backward()
    msgs = [str(w.message) for w in caught if "compiled CPU loss" in str(w.message)]
    assert len(msgs) == 1 and "no C++ compiler" in msgs[0], msgs
    ref = slam_loss_reference(z.detach(), y, 0.7, 2)
    torch.testing.assert_close(slam_loss(z, y, 0.7, 2), ref)


@pytest.mark.parametrize("threads", [2, 3])
def test_every_scheduler_and_concurrent_callers_give_the_same_result(threads):
    # Row blocks go to whichever thread takes them; the result must not depend on who did:
    # the OpenMP team (default), at::parallel_for (1), the helper pool (2), and callers on
    # several Python threads at once (each its own OpenMP team), dense and top-K bodies.
    from concurrent.futures import ThreadPoolExecutor
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(512, 300, generator=gen, dtype=torch.float64)
    y = torch.softmax(torch.randn(512, 300, generator=gen, dtype=torch.float64) * 3, dim=1)
    zt, ids, probs = _topk_problem(n=96, v=700, kk=7)

    def both():
        return (_grad(lambda zz: slam_loss(zz, y, 0.7, 4, reduction="none"), z),
                _grad(lambda zz: slam_loss_topk(zz, ids, probs, 0.7, 3, reduction="none"), zt))
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    lib = cpu_fused.library()
    try:
        ref = both()
        assert lib.slam_cpu_last_team_size() == threads  # a team ran, not one thread alone
        runs = []
        for which in (1, 2):
            lib.slam_cpu_set_scheduler(which)
            try:
                runs.append(both())
            finally:
                lib.slam_cpu_set_scheduler(0)
        with ThreadPoolExecutor(4) as pool:
            runs += list(pool.map(lambda _: both(), range(8)))
    finally:
        torch.set_num_threads(old)
    for run in runs:
        for (out, g), (want, want_g) in zip(run, ref):
            assert torch.equal(out, want) and torch.equal(g, want_g)


def test_an_exception_inside_the_team_becomes_the_loss_error():
    # A participant that throws (an allocation failing) may not leave the OpenMP region: the
    # library carries it out, the entry point returns its error code, the API raises.
    lib = cpu_fused.library()
    z = torch.randn(512, 300, dtype=torch.float64)
    y = torch.softmax(torch.randn(512, 300, dtype=torch.float64), dim=1)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    lib.slam_cpu_test_throw(1)
    try:
        with pytest.raises(RuntimeError, match="the compiled CPU loss failed"):
            slam_loss(z, y, 0.7, 3)
    finally:
        lib.slam_cpu_test_throw(0)
        torch.set_num_threads(old)
    torch.testing.assert_close(slam_loss(z, y, 0.7, 3), slam_loss_reference(z, y, 0.7, 3))


_FORK_SCRIPT = """
import os, signal, sys, torch
from slam_bench import slam_loss, slam_loss_topk
torch.set_num_threads(2)
g = torch.Generator().manual_seed(0)
z = torch.randn(512, 300, generator=g)
y = torch.softmax(torch.randn(512, 300, generator=g), 1)
ids = torch.stack([torch.randperm(300, generator=g)[:8] for _ in range(512)])
p = torch.softmax(torch.randn(512, 8, generator=g), 1) * 0.9
# The parent runs the OpenMP team first; the top-K loss unchecked in the child because its
# teacher checks are torch ops, which hang in a forked child as any of torch's would.
ref = (slam_loss(z, y, 0.7, 3), slam_loss_topk(z, ids, p, 0.7, 3, check_values=False))
pid = os.fork()
if pid == 0:
    signal.alarm(30)  # a hung child dies (SIGALRM) instead of outliving the test
    out = (slam_loss(z, y, 0.7, 3), slam_loss_topk(z, ids, p, 0.7, 3, check_values=False))
    os._exit(0 if all(torch.equal(a, b) for a, b in zip(out, ref)) else 3)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")
def test_forked_child_computes_the_loss_instead_of_hanging():
    """After the parent used the OpenMP team, a forked child (default multiprocessing on Linux)
    runs the compiled bodies on one thread and gets the parent's results; OpenMP's team would
    wait forever there for threads the child does not have."""
    res = subprocess.run([sys.executable, "-c", _FORK_SCRIPT], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


def test_cpu_targets_script_runs(capsys):
    from slam_bench.profiling import cpu_targets
    cpu_targets.run(reps=3, threads=1, load=1, compile_=False, rows=64, cols=10)
    out = capsys.readouterr().out
    assert "load average" in out and "aten ops per forward + backward, slam_loss:" in out
    assert "oversubscribed: 1 busy" in out and "% of memcpy" in out


def test_cpu_targets_compiled_step_matches_eager():
    """The "slam_loss in torch.compile" provider (Inductor in the script; aot_eager here, the
    same Dynamo and AOTAutograd tracing) computes what eager slam_loss computes."""
    from slam_bench.profiling import cpu_targets
    from slam_bench.profiling import loss_family as L
    torch._dynamo.reset()
    problem = L.make_problem("slam", 64, 10, "fp32", "cpu", "peaked")
    step, z = cpu_targets.compiled_step(problem, backend="aot_eager")
    step()
    d = problem.data
    want = _grad(lambda zz: slam_loss(zz, d["y"], d["alpha"], d["k"]), d["z"])[1]
    torch.testing.assert_close(z.grad, want, rtol=1e-6, atol=1e-8)
    torch._dynamo.reset()


# ---------------------------------------------------------------- the top-K body (cpu_topk.cpp)

def _topk_problem(n=40, v=333, kk=7, seed=5, dtype=torch.float64, ignored=(3, 17)):
    from slam_bench.profiling.topk_problems import random_topk_teacher
    gen = torch.Generator().manual_seed(seed)
    ids, probs, _ = random_topk_teacher(n, v, kk, kind="peaked", gen=gen, n_ignored=0)
    ids[list(ignored), 0] = -100
    z = (torch.randn(n, v, generator=gen, dtype=torch.float64) * 3).to(dtype)
    return z, ids, probs.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("alpha,k,temperature", [(0.7, 3, 1.0), (1.0, 1, 1.0), (0.6, 7, 2.5),
                                                 ("rows", "rows", 0.5)])
def test_compiled_topk_and_eager_chunks_agree(monkeypatch, dtype, alpha, k, temperature):
    """The compiled body and the eager chunks (SLAM_BENCH_CPU_KERNEL=0) compute one formula:
    loss, d(logits) and, through fused_linear_slam_loss's in-place chunk step, d(hidden)."""
    from slam_bench import fused_linear_slam_loss, slam_loss_topk
    z, ids, probs = _topk_problem(dtype=dtype)
    gen = torch.Generator().manual_seed(9)
    if alpha == "rows":
        alpha = (0.5 + 0.5 * torch.rand(z.shape[0], generator=gen)).to(dtype)
        k = torch.randint(1, ids.shape[1] + 1, (z.shape[0],), generator=gen)
    weight = torch.rand(z.shape[0], generator=gen).to(dtype)
    kw = dict(temperature=temperature, weight=weight)
    hidden = torch.randn(z.shape[0], 16, generator=gen).to(dtype)
    lm_weight = (torch.randn(z.shape[1], 16, generator=gen) * 0.7).to(dtype)

    def run():
        out, g = _grad(lambda zz: slam_loss_topk(zz, ids, probs, alpha, k, **kw), z)
        h = hidden.clone().requires_grad_(True)
        fused_linear_slam_loss(h, lm_weight, ids, probs, alpha, k, chunk_size=16,
                               **kw).backward()
        return out, g, h.grad

    calls = []
    real = cpu_fused.topk_rows
    monkeypatch.setattr(cpu_fused, "topk_rows", lambda *a, **kw_: calls.append(1) or real(*a, **kw_))
    compiled = run()
    assert len(calls) == 1 + 3  # slam_loss_topk, and fused_linear's three chunks of 16 rows
    monkeypatch.setenv("SLAM_BENCH_CPU_KERNEL", "0")
    eager = run()
    assert len(calls) == 4
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-13)
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, **tol)
    assert (compiled[1][[3, 17]] == 0).all()  # ignored rows: zero gradient


def test_compiled_topk_forward_only_leaves_no_gradient_buffer():
    from slam_bench import slam_loss_topk
    z, ids, probs = _topk_problem()
    with torch.no_grad():
        out = slam_loss_topk(z, ids, probs, 0.7, 3, reduction="none")
    ref = slam_loss_topk(z.clone().requires_grad_(True), ids, probs, 0.7, 3, reduction="none")
    torch.testing.assert_close(out, ref.detach(), rtol=1e-12, atol=1e-14)
    assert out[3] == 0 and out[17] == 0


def test_unchecked_out_of_range_topk_ids_are_memory_safe():
    # With check_values=False nothing reads the ids before the body: it clamps them to [0, V),
    # so ids of V or 10**6 give some finite result, never a read outside the row.
    from slam_bench import slam_loss_topk
    z, ids, probs = _topk_problem(n=4, v=50, kk=3, dtype=torch.float32, ignored=())
    ids[0, 1], ids[1, 0], ids[2, 2] = 50, 10**6, -7
    zz = z.clone().requires_grad_(True)
    out = slam_loss_topk(zz, ids, probs, 0.8, 2, check_values=False, reduction="none")
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(zz.grad).all()
    ref = slam_loss_topk(z[3:], ids[3:], probs[3:], 0.8, 2, reduction="none")
    torch.testing.assert_close(out[3:], ref, rtol=1e-6, atol=1e-6)  # valid rows unaffected


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_compiled_topk_checks_the_logits_in_its_own_pass(monkeypatch, bad):
    """The default check of the logits comes from the body's first pass: no pass of its own
    (checks.check_finite is not called for them), the API's error word for word."""
    from slam_bench import checks, slam_loss_topk
    z, ids, probs = _topk_problem(dtype=torch.float32)
    real = checks.check_finite
    seen = []
    monkeypatch.setattr(checks, "check_finite",
                        lambda name, t: seen.append(name) or real(name, t))
    slam_loss_topk(z.clone().requires_grad_(True), ids, probs, 0.7, 3).backward()
    assert "student_logits" not in seen
    z[17, 5] = bad  # an ignored row: still checked, as the separate pass did
    with pytest.raises(ValueError, match=r"^student_logits must be finite \(found NaN or inf\)$"):
        slam_loss_topk(z.clone().requires_grad_(True), ids, probs, 0.7, 3)
    monkeypatch.setenv("SLAM_BENCH_CPU_KERNEL", "0")  # the eager chunks: the separate pass
    with pytest.raises(ValueError, match=r"^student_logits must be finite \(found NaN or inf\)$"):
        slam_loss_topk(z.clone().requires_grad_(True), ids, probs, 0.7, 3)
    assert "student_logits" in seen


@pytest.mark.parametrize("dtype,nan_row", [(torch.bfloat16, 0), (torch.float16, 20),
                                           (torch.bfloat16, 33)])
def test_16bit_topk_logits_run_the_compiled_body_after_upcast(monkeypatch, dtype, nan_row):
    """float16/bfloat16 logits: upcast to float32 and the compiled body (once, into the
    gradient buffer; forward-only in row chunks of UPCAST_CHUNK_ELEMENTS through one scratch
    buffer) give what the eager chunks give, which upcast the same values; the logits' check
    comes from the body's pass, in whichever chunk (rows 0-15, 16-31, 32-39) the NaN is."""
    from slam_bench import checks
    from slam_bench.vocab import torch_backend as tb
    z, ids, probs = _topk_problem(n=40, v=333, dtype=torch.float32)
    z = z.to(dtype)
    gen = torch.Generator().manual_seed(3)
    alpha = 0.5 + 0.5 * torch.rand(40, generator=gen)
    k = torch.randint(1, ids.shape[1] + 1, (40,), generator=gen)
    kw = dict(temperature=0.7, weight=torch.rand(40, generator=gen), reduction="none")
    monkeypatch.setattr(tb, "UPCAST_CHUNK_ELEMENTS", 333 * 16)  # forward-only: 3 chunks
    calls = []
    real = cpu_fused.topk_rows
    monkeypatch.setattr(cpu_fused, "topk_rows",
                        lambda *a, **kw_: calls.append(a[1].shape) or real(*a, **kw_))
    seen = []
    real_check = checks.check_finite
    monkeypatch.setattr(checks, "check_finite",
                        lambda name, t: seen.append(name) or real_check(name, t))

    def run():
        out, g = _grad(lambda zz: slam_loss_topk(zz, ids, probs, alpha, k, **kw).sum(), z)
        with torch.no_grad():
            fwd = slam_loss_topk(z, ids, probs, alpha, k, **kw)
        return out, g, fwd

    compiled = run()
    assert calls == [(40, 333), (16, 333), (16, 333), (8, 333)], calls
    assert "student_logits" not in seen
    monkeypatch.setenv("SLAM_BENCH_CPU_KERNEL", "0")
    eager = run()
    assert len(calls) == 4 and "student_logits" in seen
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert compiled[1].dtype == dtype and (compiled[1][[3, 17]] == 0).all()
    monkeypatch.delenv("SLAM_BENCH_CPU_KERNEL")
    z[nan_row, 4] = float("nan")
    for grad_mode in (True, False):
        with torch.set_grad_enabled(grad_mode), \
                pytest.raises(ValueError, match=r"^student_logits must be finite"):
            slam_loss_topk(z.clone().requires_grad_(grad_mode), ids, probs, alpha, k)
