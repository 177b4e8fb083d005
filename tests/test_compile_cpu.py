"""torch.compile of the torch backend (the CPU path): each loss's forward is a custom op
(slam_bench::torch_slam_rows[_grad], slam_bench::torch_topk_rows[_grad]), so
`torch.compile(fullgraph=True)` traces a step that calls it, on the compiled C++ body and on the
eager fallback alike, with the same loss and gradient as eager, and the value checks that run
inside the loss pass still raise their errors from the compiled graph."""
from __future__ import annotations

import shutil

import pytest
import torch

from slam_bench import distill_loss, slam_loss, slam_loss_topk
from slam_bench.torch_backend import torch_slam_rows, torch_slam_rows_grad
from slam_bench.vocab.torch_backend import torch_topk_rows, torch_topk_rows_grad

N, C, K = 12, 40, 5


def _data(seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(N, C, generator=gen)
    y = torch.softmax(torch.randn(N, C, generator=gen) * 2, dim=1)
    ids = torch.stack([torch.randperm(C, generator=gen)[:K] for _ in range(N)])
    p = torch.softmax(torch.randn(N, K, generator=gen), dim=1) * 0.9
    ids[3, 0] = -100  # an ignored row
    return z, y, ids, p


def _losses(y, ids, p):
    """name -> a step on logits z: each loss with options that reach different branches."""
    w = torch.rand(N, generator=torch.Generator().manual_seed(9))
    k_rows = torch.randint(2, 6, (N,), generator=torch.Generator().manual_seed(8))
    a = torch.full((N,), 0.7)
    row_go = torch.arange(N, dtype=torch.float32)  # a grad_output that differs per row
    return {
        "slam": lambda z: slam_loss(z * 2, y, 0.7, 3, weight=w, check_values=False),
        "slam_rows_k": lambda z: slam_loss(z, y, torch.full((N,), 0.6), k_rows, normalize=True,
                                           reduction="none", check_values=False).sum() * 3,
        "distill": lambda z: distill_loss(z, y, temperature=2.0, check_values=False),
        "topk": lambda z: slam_loss_topk(z * 2, ids, p, 0.7, 3, weight=w, check_values=False),
        "topk_rows": lambda z: (slam_loss_topk(z, ids, p, 0.8, 2, temperature=0.5,
                                               reduction="none", check_values=False) ** 2).sum(),
        "slam_sum": lambda z: slam_loss(z, y, 0.7, 3, reduction="sum", check_values=False),
        "slam_weighted_rows": lambda z: (slam_loss(z, y, 0.7, 3, weight=w, reduction="none",
                                                   check_values=False) * row_go).sum(),
        # One tensor as alpha and weight: distinct inputs of the autograd.Function.
        "slam_alpha_is_weight": lambda z: slam_loss(z, y, a, 3, weight=a, reduction="sum",
                                                    check_values=False),
        "topk_alpha_is_weight": lambda z: slam_loss_topk(z, ids, p, a, 3, weight=a,
                                                         reduction="sum", check_values=False),
        # alpha = 1: distillation over the K ids (thresh is alpha's own tensor).
        "topk_alpha_1": lambda z: slam_loss_topk(z, ids, p, 1.0, 3, check_values=False),
        # Default checks with scalar alpha and k: the (N, C) checks run inside the loss op.
        "slam_default_checks": lambda z: slam_loss(z, y, 0.7, 3),
        "distill_default_checks": lambda z: distill_loss(z, y, temperature=2.0),
    }


def _grad(fn, z0):
    z = z0.clone().requires_grad_(True)
    out = fn(z)
    out.backward()
    return out.detach(), z.grad


@pytest.fixture(params=["compiled_body", "eager_body"])
def body(request, monkeypatch):
    if request.param == "eager_body":
        monkeypatch.setenv("SLAM_BENCH_CPU_KERNEL", "0")
    torch._dynamo.reset()
    yield request.param
    torch._dynamo.reset()


@pytest.mark.parametrize("name", list(_losses(*_data()[1:])))
def test_fullgraph_step_matches_eager(body, name):
    z, y, ids, p = _data()
    fn = _losses(y, ids, p)[name]
    got = _grad(torch.compile(fn, backend="aot_eager", fullgraph=True), z)
    want = _grad(fn, z)
    torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=1e-6, atol=1e-7)


def test_tensor_alpha_with_default_checks_breaks_the_graph_and_matches_eager(body):
    """Tensor alpha, k and weight are checked on the host (a graph break): without fullgraph
    the compiled step still gives eager's loss and gradient, and a bad alpha its error."""
    z, y, _, _ = _data(6)
    gen = torch.Generator().manual_seed(7)
    a = 0.5 + 0.5 * torch.rand(N, generator=gen)
    k = torch.randint(2, 5, (N,), generator=gen)
    w = torch.rand(N, generator=gen)

    def fn(z, a):
        return slam_loss(z, y, a, k, weight=w)
    compiled = torch.compile(fn, backend="aot_eager")
    got = _grad(lambda zz: compiled(zz, a), z)
    want = _grad(lambda zz: fn(zz, a), z)
    torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=1e-6, atol=1e-7)
    with pytest.raises(torch._dynamo.exc.TorchDynamoException):  # a data-dependent read
        torch.compile(fn, backend="aot_eager", fullgraph=True)(z, a)
    with pytest.raises(ValueError, match="alpha must lie in"):
        compiled(z, a * 3)


def test_fullgraph_forward_only_calls_the_op_without_gradient(body):
    """Under no_grad (evaluation) the compiled graph calls the forward-only ops."""
    z, y, ids, p = _data(1)
    seen = []

    def fn(z):
        return (slam_loss(z, y, 0.7, 3, check_values=False),
                slam_loss_topk(z, ids, p, 0.7, 3, check_values=False))

    def backend(gm, example_inputs):
        seen.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm

    with torch.no_grad():
        got = torch.compile(fn, backend=backend, fullgraph=True)(z)
        want = fn(z)
    assert "slam_bench.torch_slam_rows.default" in seen, seen
    assert "slam_bench.torch_topk_rows.default" in seen, seen
    assert not any("rows_grad" in s for s in seen), seen
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bad, message", [
    ("teacher", "teacher_probs must be non-negative"),
    ("logits", "student_logits must be finite"),
])
def test_value_checks_raise_from_the_compiled_graph(body, bad, message):
    z, y, _, _ = _data(2)
    if bad == "teacher":
        y[4, 1] = -0.5
    else:
        z[5, 2] = float("nan")
    fn = torch.compile(lambda z: slam_loss(z, y, 0.7, 3), backend="aot_eager", fullgraph=True)
    with pytest.raises(ValueError, match=message):
        fn(z.requires_grad_(True))


def test_ops_pass_opcheck(body):
    """Schema, fake implementations (shapes and dtypes as the real ones) and AOT dispatch."""
    z, y, ids, p = _data(3)
    a = torch.full((N,), 0.7)
    s = torch.ones(N)
    k_rows = torch.full((N,), 3, dtype=torch.int64)
    for k_args, reduction in (((None, 3), "mean"), ((k_rows, 0), "sum"), ((None, 2), "none")):
        for op in (torch_slam_rows, torch_slam_rows_grad):
            for zz in (z, z.double()):
                wd = zz.dtype
                torch.library.opcheck(op, (zz, y.to(wd), a.to(wd), s.to(wd), *k_args,
                                           torch.rand(N, dtype=wd), 0.5, reduction, True, True))
    thresh = p.topk(3, dim=1).values[:, 2]
    for op in (torch_topk_rows, torch_topk_rows_grad):
        for zz in (z, z.double(), z.bfloat16()):
            wd = torch.float64 if zz.dtype == torch.float64 else torch.float32
            torch.library.opcheck(op, (zz, ids, p, a.to(wd), s.to(wd), thresh.to(wd),
                                       torch.full((N,), 1.0 / N, dtype=wd), 1.0, -100, True,
                                       False))


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="Inductor's CPU backend needs a C++ compiler")
def test_inductor_model_step_matches_eager():
    """The default backend a user picks: a linear layer and the SLaM loss in one graph."""
    torch._dynamo.reset()
    z, y, _, _ = _data(4)
    x = torch.randn(N, 8, generator=torch.Generator().manual_seed(5))
    lin = torch.nn.Linear(8, C)

    def step(x):
        return slam_loss(lin(x), y, 0.7, 3, check_values=False)

    lin.zero_grad()
    got = torch.compile(step, fullgraph=True)(x)
    got.backward()
    got_g = [p.grad.clone() for p in lin.parameters()]
    lin.zero_grad()
    want = step(x)
    want.backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for g, p in zip(got_g, lin.parameters()):  # weight and bias
        torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()


@pytest.mark.parametrize("dynamic", [None, True])
def test_changing_batch_size_compiles_one_dynamic_graph(dynamic):
    """A step called with N = 8, 12, 20 (a last batch of another size): the default automatic
    dynamic shapes compile once more at the second size, from the static graph to a dynamic
    one, and never again; dynamic=True compiles at the first call only. Nothing in the checks
    or the ops specialises on N (the 1/N of "mean" is computed inside the op; error messages
    are formatted only on error), and a float default such as temperature=1.0, symbolic under
    dynamic=True, passes the checks."""
    from torch._dynamo.testing import CompileCounterWithBackend

    def data(n):
        gen = torch.Generator().manual_seed(n)
        z = torch.randn(n, C, generator=gen)
        y = torch.softmax(torch.randn(n, C, generator=gen), dim=1)
        ids = torch.stack([torch.randperm(C, generator=gen)[:K] for _ in range(n)])
        p = torch.softmax(torch.randn(n, K, generator=gen), dim=1) * 0.9
        return z, y, ids, p

    steps = {
        "slam": lambda z, y, ids, p: slam_loss(z, y, 0.7, 3, check_values=False),
        "slam_default_checks": lambda z, y, ids, p: slam_loss(z, y, 0.7, 3),
        "distill": lambda z, y, ids, p: distill_loss(z, y, check_values=False),
        "topk": lambda z, y, ids, p: slam_loss_topk(z, ids, p, 0.7, 3, check_values=False),
    }
    for name, fn in steps.items():
        torch._dynamo.reset()
        counter = CompileCounterWithBackend("aot_eager")
        compiled = torch.compile(fn, backend=counter, fullgraph=True, dynamic=dynamic)
        counts = []
        for n in (8, 12, 20):
            z, *rest = data(n)
            got = _grad(lambda zz: compiled(zz, *rest), z)
            want = _grad(lambda zz: fn(zz, *rest), z)
            torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(got[1], want[1], rtol=1e-6, atol=1e-7)
            counts.append(counter.frame_count)
        # (Under dynamic=True the first compile may restart once when a symbolic float is
        # specialised, which calls the backend twice; what matters is no compile after it.)
        first = counts[0]
        assert counts == ([first, first, first] if dynamic else [first, first + 1, first + 1]), \
            (name, counts)
    torch._dynamo.reset()


def test_checked_loss_op_passes_opcheck_and_raises():
    """slam_bench::checked_loss (the Triton path's check under torch.compile): a copy of the
    loss when the numbers are clean, the API's error when they are not."""
    from slam_bench.checks import checked_loss
    clean = torch.tensor([0.0, 1e-7, -2.0, 3.0], dtype=torch.float64)
    for out in (torch.tensor(1.5, requires_grad=True), torch.rand(5, requires_grad=True)):
        torch.library.opcheck(checked_loss, (out, clean, torch.float32))
        got = checked_loss(out, clean, torch.bfloat16)
        assert torch.equal(got, out) and got.data_ptr() != out.data_ptr()
    with pytest.raises(ValueError, match="teacher_probs must be non-negative"):
        checked_loss(torch.tensor(1.0), torch.tensor([-0.5, 0.0, 0.0, 1.0],
                                                     dtype=torch.float64), torch.float32)
    with pytest.raises(ValueError, match="student_logits must be finite"):
        checked_loss(torch.tensor(1.0), torch.tensor([0.0, 0.0, 0.0, float("inf")],
                                                     dtype=torch.float64), torch.float32)
