"""torch.compile of a small model whose loss is slam_loss(..., backend="triton").

fullgraph=True makes any graph break an error, so a pass proves the custom ops trace as single
nodes. On CPU the compiler backend is "aot_eager": it runs the same Dynamo capture and
AOTAutograd joint-graph tracing (fake kernels and the registered autograd formula) as
Inductor, but skips C++ code generation, which takes ~20 s on the shared 2-core CI machine.
The gpu profile (HYPOTHESIS_PROFILE=gpu) also runs Inductor.
"""
from __future__ import annotations

import pytest
import torch

from kernel_testlib import DEVICE, GPU_PROFILE
from slam_bench import distill_loss, slam_loss

BACKENDS = ["aot_eager"] + (["inductor"] if GPU_PROFILE or DEVICE == "cuda" else [])


class _Student(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                       torch.nn.Linear(16, 10))

    def forward(self, x):
        return self.net(x)


def _step(model, x, y, alpha, k, w):
    logits = model(x)
    # check_values=False: the value checks read tensors on the host, a deliberate graph break.
    loss = slam_loss(logits, y, alpha, k, normalize=True, temperature=2.0, weight=w,
                     backend="triton", check_values=False)
    return loss + 0.5 * distill_loss(logits, y, backend="triton", check_values=False)


@pytest.mark.every_kernel
@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_model_gradients_match_eager(backend):
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    n = 12
    x = torch.randn(n, 8, generator=gen).to(DEVICE)
    y = torch.softmax(torch.randn(n, 10, generator=gen) * 2, dim=1).to(DEVICE)
    alpha = (0.6 + 0.4 * torch.rand(n, generator=gen)).to(DEVICE)
    k = torch.randint(2, 6, (n,), generator=gen).to(DEVICE)
    w = torch.rand(n, generator=gen).to(DEVICE)
    torch.manual_seed(0)
    eager = _Student().to(DEVICE)
    compiled = _Student().to(DEVICE)
    compiled.load_state_dict(eager.state_dict())

    ref = _step(eager, x, y, alpha, k, w)
    ref.backward()
    out = torch.compile(_step, backend=backend, fullgraph=True)(compiled, x, y, alpha, k, w)
    out.backward()

    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for (name, p_ref), p in zip(eager.named_parameters(), compiled.parameters()):
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-5, atol=1e-6, msg=name)


def _checked_step(z, y):
    return slam_loss(z, y, 0.7, 3, backend="triton") + distill_loss(z, y, backend="triton")


@pytest.mark.parametrize("backend", BACKENDS)
def test_default_checks_under_compile(backend):
    """With the default checks (fused into the kernel, their numbers read on the host by the
    checked_loss op inside the graph, so fullgraph=True traces) a compiled step gives eager's
    loss and gradient, and bad teacher values raise the same error."""
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(6, 10, generator=gen).to(DEVICE)
    y = torch.softmax(torch.randn(6, 10, generator=gen), dim=1).to(DEVICE)
    z_eager, z_comp = z.clone().requires_grad_(), z.clone().requires_grad_()
    ref = _checked_step(z_eager, y)
    ref.backward()
    step = torch.compile(_checked_step, backend=backend, fullgraph=True)
    out = step(z_comp, y)
    out.backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(z_comp.grad, z_eager.grad, rtol=1e-5, atol=1e-6)
    bad = y.clone()
    bad[2, 3] = float("nan")
    with pytest.raises(ValueError, match="teacher_probs must be finite"):
        step(z.clone().requires_grad_(), bad)


def test_new_batches_reuse_the_compiled_step():
    """A training loop calls the compiled step with new tensors every step: it compiles once
    for a batch size, and once more (dynamic) for another size, never per batch. (The guard
    against one tensor given to two inputs used id(), which Dynamo guards on the tensor object
    itself: every step recompiled until the recompile limit sent it back to eager.) The same
    tensor given as alpha and weight still traces."""
    from torch._dynamo.testing import CompileCounterWithBackend
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _Student().to(DEVICE)

    def step(x, y, a):
        return slam_loss(model(x), y, a, 3, weight=a, backend="triton", check_values=False)

    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(step, backend=counter, fullgraph=True)
    counts = []
    for i, n in enumerate((12, 12, 12, 7, 7)):
        gen = torch.Generator().manual_seed(i)
        x = torch.randn(n, 8, generator=gen).to(DEVICE)
        y = torch.softmax(torch.randn(n, 10, generator=gen), dim=1).to(DEVICE)
        a = (0.6 + 0.4 * torch.rand(n, generator=gen)).to(DEVICE)
        model.zero_grad()
        out = compiled(x, y, a)
        out.backward()
        got = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        ref = step(x, y, a)
        ref.backward()
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        for g, p in zip(got, model.parameters()):
            torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-6)
        counts.append(counter.frame_count)
    assert counts == [1, 1, 1, 2, 2], counts
    torch._dynamo.reset()
