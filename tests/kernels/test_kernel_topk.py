"""The top-K Triton kernels beyond the property tests (tests/test_topk_properties.py):

- a row above the on-chip limit with the real launch constants (one small-N case);
- nothing read or written outside a row's V logits or past K (NaN-poisoned padding);
- the custom ops pass torch.library.opcheck and trace under torch.compile(fullgraph=True).
"""
from __future__ import annotations

import pytest
import torch

from kernel_testlib import DEVICE, GPU_PROFILE, assert_loss_close
from slam_bench import fused_linear_slam_loss, slam_loss_topk
from slam_bench.vocab.fused_linear import fused_linear_slam_op, fused_linear_slam_rows_op
from slam_bench.kernels import ops_topk, topk_chunk_inplace, topk_triton
from slam_bench.profiling.topk_problems import random_topk_teacher
from slam_bench.vocab.reference import (fused_linear_slam_loss_reference,
                                       slam_loss_topk_reference)
from slam_bench.vocab.functional import kth_largest


def _teacher(n, v, k_ids, seed=0, n_ignored=1):
    gen = torch.Generator().manual_seed(seed)
    ids, probs, _ = random_topk_teacher(n, v, k_ids, gen=gen, n_ignored=n_ignored, garbage=True)
    return ids.to(DEVICE), probs.to(DEVICE)


def _close(a, b, what, rtol=1e-5):
    err = (a.double() - b.double()).abs().max().item()
    assert err <= rtol * max(b.abs().max().item(), 1e-30), f"{what}: error {err:.3g}"


@pytest.mark.every_kernel
def test_row_above_the_on_chip_limit():
    """V = MAX_SINGLE_BLOCK + 1 with the real constants: the streamed online softmax and the
    two-pass in-place gradient, for both functions."""
    v = topk_triton.MAX_SINGLE_BLOCK + 1
    n, k_ids, hdim = 3, 64, 4
    ids, probs = _teacher(n, v, k_ids)
    gen = torch.Generator().manual_seed(1)
    alpha = torch.tensor([0.7, 0.9, 0.6]).to(DEVICE)
    z = (torch.randn(n, v, generator=gen) * 3).to(DEVICE).requires_grad_()
    out = slam_loss_topk(z, ids, probs, alpha, 5, temperature=1.5, backend="triton")
    out.backward()
    z64 = z.detach().double().requires_grad_()
    ref = slam_loss_topk_reference(z64, ids, probs.double(), alpha.double(), 5, temperature=1.5)
    ref.backward()
    assert_loss_close(out, ref)
    _close(z.grad, z64.grad, "d(logits)")

    h = torch.randn(n, hdim, generator=gen).to(DEVICE).requires_grad_()
    w = torch.randn(v, hdim, generator=gen).to(DEVICE).requires_grad_()
    out = fused_linear_slam_loss(h, w, ids, probs, alpha, 5, chunk_size=2, backend="triton")
    out.backward()
    h64 = h.detach().double().requires_grad_()
    w64 = w.detach().double().requires_grad_()
    ref = fused_linear_slam_loss_reference(h64, w64, ids, probs.double(), alpha.double(), 5)
    ref.backward()
    assert_loss_close(out, ref)
    _close(h.grad, h64.grad, "d(hidden)", 1e-4)
    _close(w.grad, w64.grad, "d(lm_weight)", 1e-4)


@pytest.mark.every_kernel
@pytest.mark.parametrize("v", [37, topk_triton.MAX_SINGLE_BLOCK + 3])
def test_padding_is_never_read_or_written(v):
    """Logits are rows of a wider NaN-filled buffer, teacher columns views with NaN past K:
    a read past V or K would turn the result NaN, a write past V would change the padding."""
    n, k_ids = 3, 5
    ids, probs = _teacher(n, v, k_ids, seed=2)
    pad = 11
    ids_buf = torch.full((n, k_ids + pad), -7, dtype=torch.long, device=DEVICE)
    ids_buf[:, :k_ids] = ids
    p_buf = torch.full((n, k_ids + pad), float("nan"), device=DEVICE)
    p_buf[:, :k_ids] = probs
    ids_v, p_v = ids_buf[:, :k_ids], p_buf[:, :k_ids]
    z_buf = torch.full((n, v + pad), float("nan"), device=DEVICE)
    z_buf[:, :v] = torch.randn(n, v, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    z = z_buf[:, :v]
    alpha = torch.full((n,), 0.8, device=DEVICE)
    s = torch.ones(n, device=DEVICE)
    thresh = kth_largest(p_v, 2)
    rows, stats = ops_topk.topk_fwd(z, ids_v, p_v, alpha, s, thresh, 1.0, -100, True)
    ref = slam_loss_topk_reference(z.double(), ids, probs.double(), 0.8, 2, reduction="none")
    assert_loss_close(rows, ref)
    dz = ops_topk.topk_bwd(torch.ones(n, device=DEVICE), z, ids_v, p_v, alpha, s, thresh, stats,
                           1.0, -100, True)
    assert bool(torch.isfinite(dz).all())
    # The in-place chunk step on the same view: it writes the gradient within [0, V) only.
    scale = torch.ones(n, device=DEVICE)
    rows2 = topk_chunk_inplace(z, ids_v, p_v, alpha, s, thresh, scale, 1.0, -100, True)
    torch.testing.assert_close(rows2, rows)
    torch.testing.assert_close(z_buf[:, :v], dz)
    assert bool(z_buf[:, v:].isnan().all())


def _small_problem(n=4, v=12, k_ids=3, hdim=3):
    ids, probs = _teacher(n, v, k_ids, seed=4)
    gen = torch.Generator().manual_seed(5)
    return dict(ids=ids, probs=probs, z=torch.randn(n, v, generator=gen).to(DEVICE),
                h=torch.randn(n, hdim, generator=gen).to(DEVICE),
                w=torch.randn(v, hdim, generator=gen).to(DEVICE),
                b=torch.randn(v, generator=gen).to(DEVICE),
                alpha=torch.full((n,), 0.75, device=DEVICE), s=torch.ones(n, device=DEVICE),
                thresh=kth_largest(probs, 2), scale=torch.rand(n, generator=gen).to(DEVICE))


def test_custom_ops_pass_opcheck():
    p = _small_problem()
    z = p["z"].clone().requires_grad_()
    torch.library.opcheck(ops_topk.topk_fwd, (z, p["ids"], p["probs"], p["alpha"], p["s"],
                                              p["thresh"], 0.5, -100, True))
    h, w, b = (p[key].clone().requires_grad_() for key in ("h", "w", "b"))
    for backend in ("triton", "torch"):
        common = (h, w, b, p["ids"], p["probs"], p["alpha"], p["s"], p["thresh"])
        torch.library.opcheck(fused_linear_slam_op, common + (p["scale"], 0.5, -100, True, 3,
                                                              backend, [True, True, True]))
        torch.library.opcheck(fused_linear_slam_rows_op, common + (0.5, -100, True, 3, backend))


BACKENDS = ["aot_eager"] + (["inductor"] if GPU_PROFILE or DEVICE == "cuda" else [])


class _Student(torch.nn.Module):
    def __init__(self, v):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh())
        self.head = torch.nn.Linear(8, v)

    def forward(self, x):
        return self.body(x)


def _step(model, x, ids, probs, alpha, k, w, loss_backend):
    hidden = model(x)
    # check_values=False: value checks read tensors on the host, a deliberate graph break.
    fused = fused_linear_slam_loss(hidden, model.head.weight, ids, probs, alpha, k,
                                   bias=model.head.bias, normalize=True, temperature=2.0,
                                   weight=w, chunk_size=5, backend=loss_backend,
                                   check_values=False)
    rows = fused_linear_slam_loss(hidden, model.head.weight, ids, probs, 1.0, 1,
                                  reduction="none", backend=loss_backend, check_values=False)
    sparse = slam_loss_topk(model.head(hidden), ids, probs, alpha, k, backend="triton",
                            check_values=False)
    return fused + rows.mean() + sparse


@pytest.mark.parametrize("loss_backend", ["triton", "torch"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_model_gradients_match_eager(backend, loss_backend):
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    n, v = 12, 20
    x = torch.randn(n, 6, generator=gen).to(DEVICE)
    ids, probs = _teacher(n, v, 4, seed=6, n_ignored=2)
    alpha = (0.6 + 0.4 * torch.rand(n, generator=gen)).to(DEVICE)
    k = torch.randint(2, 5, (n,), generator=gen).to(DEVICE)
    w = torch.rand(n, generator=gen).to(DEVICE)
    torch.manual_seed(0)
    eager = _Student(v).to(DEVICE)
    compiled = _Student(v).to(DEVICE)
    compiled.load_state_dict(eager.state_dict())
    ref = _step(eager, x, ids, probs, alpha, k, w, loss_backend)
    ref.backward()
    out = torch.compile(_step, backend=backend, fullgraph=True)(compiled, x, ids, probs, alpha,
                                                                 k, w, loss_backend)
    out.backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    for (name, p_ref), p in zip(eager.named_parameters(), compiled.parameters()):
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-5, atol=1e-6, msg=name)
