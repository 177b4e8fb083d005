"""Hypothesis cases, the float64 oracle and the tolerance policy of the top-K loss tests.

Oracle: slam_bench.vocab.reference (the K probabilities scattered into a dense row, then the
plain formula of slam_bench.reference) in float64 on the exactly upcast inputs; alpha is drawn
as float32 values, so the oracle sees the very alpha the backends use.

Tolerance policy:
- loss (float32 result): |loss - ref| <= 2e-5 (|ref| + 1) per row and for the reduced value.
- d(logits), elementwise: 1e-5 x the row's largest |ref| + 1e-6 x the row's gradient scale
  (w_i |grad_output| / (T alpha_i), over N_valid for "mean": rows whose gradient cancels to ~0)
  + one ulp of the output dtype at |ref| (bf16 2^-7, fp16 2^-10; the Triton interpreter
  truncates where a GPU rounds) + fp16's smallest subnormal.
- d(hidden), d(lm_weight), d(bias) (float32 inputs): a matmul over V or N of d(logits) terms,
  so 2e-5 x the sum of the terms' magnitudes (|dz| @ |W|, |dz|^T @ |h|, sum_i |dz_i|, from the
  oracle), + 1e-7 x the largest |ref|.
- float16/bfloat16 `fused_linear_slam_loss`: the logits, d(logits) and the matmuls are in
  that dtype (as in any bf16 training step), so the error is judged against PyTorch's own:
  at most LOWP_MULTIPLE = 8 x the error of the dense path in that dtype (F.linear in the low
  dtype, then slam_loss_topk, autograd through both), or 4 ulps of the largest |ref| where that
  is larger. Why 8 and not 2: the Triton interpreter truncates fp32 -> bf16/fp16 stores of
  d(logits) (a GPU rounds), a bias that adds up coherently in the matmul sums (measured ratios
  up to 5.5 on the interpreter), and d(lm_weight) accumulates in the input dtype across chunks
  (as in Liger-Kernel), one rounding per chunk instead of one in all.
"""
from __future__ import annotations

import torch
from hypothesis import strategies as st
from torch.nn import functional as F

from slam_bench import slam_loss_topk
from slam_bench.profiling.topk_problems import TEACHER_KINDS, random_topk_teacher
from slam_bench.vocab.reference import slam_loss_topk_reference

ULP = {torch.float32: 0.0, torch.float64: 0.0, torch.float16: 2.0 ** -10,
       torch.bfloat16: 2.0 ** -7}
ABS_ULP = {torch.float32: 0.0, torch.float64: 0.0, torch.float16: 2.0 ** -24,
           torch.bfloat16: 0.0}
LOWP_MULTIPLE = 8.0
REDUCTIONS = ("mean", "sum", "none")
LOGITS = ("normal", "confident", "shifted")


@st.composite
def topk_cases(draw, dtypes=(torch.float32,), widths=(100, 257, 1000, 3000), max_n=9,
               fused=False):
    """A dict of drawn parameters (tensors are built by `build`)."""
    v = draw(st.one_of(st.integers(2, 40), st.sampled_from(widths)))
    k_ids = draw(st.integers(1, min(64, v)))
    normalize = k_ids >= 2 and draw(st.booleans())
    lo = 2 if normalize else 1
    n = draw(st.sampled_from([0, 1, 2, 3, 5, max_n]))
    case = dict(
        n=n, v=v, k_ids=k_ids, normalize=normalize,
        k=draw(st.one_of(st.integers(lo, k_ids), st.just("rows"))),
        alpha=draw(st.one_of(st.floats(0.55, 1.0), st.just(1.0), st.just("rows"))),
        n_ignored=draw(st.integers(0, n)),
        kind=draw(st.sampled_from(TEACHER_KINDS)),
        temperature=draw(st.sampled_from([1.0, 0.5, 2.5])),
        weighted=draw(st.booleans()),
        reduction=draw(st.sampled_from(REDUCTIONS)),
        dtype=draw(st.sampled_from(dtypes)),
        logits=draw(st.sampled_from(LOGITS)),
        seed=draw(st.integers(0, 2 ** 31 - 1)),
    )
    if fused:
        case.update(hdim=draw(st.sampled_from([1, 3, 8, 16])), bias=draw(st.booleans()),
                    chunk_size=draw(st.sampled_from([None, 1, 2, 3, 7])))
    return case


def build(case, device="cpu"):
    """Tensors of a case, on `device`: z (N, V) or (hidden, lm_weight, bias), ids, probs,
    alpha, k, weight."""
    out = _build(case)
    return {key: val.to(device) if isinstance(val, torch.Tensor) else val
            for key, val in out.items()}


def _build(case):
    n, v, k_ids = case["n"], case["v"], case["k_ids"]
    gen = torch.Generator().manual_seed(case["seed"])
    ids, probs, _ = random_topk_teacher(n, v, k_ids, kind=case["kind"], gen=gen,
                                        n_ignored=case["n_ignored"], garbage=True)
    lo = 2 if case["normalize"] else 1
    k = case["k"] if case["k"] != "rows" else torch.randint(lo, k_ids + 1, (n,), generator=gen)
    if case["alpha"] == "rows":
        alpha = 0.55 + 0.45 * torch.rand(n, generator=gen)
    else:  # a value float32 represents exactly: the oracle sees what the backends use
        alpha = float(torch.tensor(case["alpha"], dtype=torch.float32))
    weight = None
    if case["weighted"]:
        weight = torch.rand(n, generator=gen) * (torch.rand(n, generator=gen) < 0.8)
    out = dict(ids=ids, probs=probs, alpha=alpha, k=k, weight=weight)
    if "hdim" in case:
        hdim = case["hdim"]
        out["hidden"] = torch.randn(n, hdim, generator=gen).to(case["dtype"])
        scale = 3.0 / hdim ** 0.5
        out["lm_weight"] = (torch.randn(v, hdim, generator=gen) * scale).to(case["dtype"])
        out["bias"] = torch.randn(v, generator=gen).to(case["dtype"]) if case["bias"] else None
        return out
    z = torch.randn(n, v, generator=gen, dtype=torch.float64) * 3
    if case["logits"] == "confident" and n:
        z[torch.arange(n), torch.randint(0, v, (n,), generator=gen)] += 30
    elif case["logits"] == "shifted":
        z = z + 100
    out["z"] = z.to(case["dtype"])
    return out


def kwargs_of(case, t):
    return dict(normalize=case["normalize"], temperature=case["temperature"],
                weight=t["weight"], reduction=case["reduction"])


def _f64(x):
    return x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x


def oracle_logits(case, t, z64):
    """Reference loss in float64 on logits z64 (a tensor in the autograd graph)."""
    kw = kwargs_of(case, t)
    kw["weight"] = _f64(kw["weight"])
    return slam_loss_topk_reference(z64, t["ids"], t["probs"].double(), _f64(t["alpha"]),
                                    t["k"], **kw)


def grad_output(loss, gen_seed: int):
    """A non-trivial upstream gradient: a scalar, or a per-row vector for "none"."""
    gen = torch.Generator().manual_seed(gen_seed)
    return (torch.rand(loss.shape, generator=gen, dtype=torch.float64) + 0.5).to(loss.device)


def row_scale(case, t, go):
    """|grad_output_i| w_i / (T alpha_i), over N_valid for "mean": the size of row i's
    gradient terms."""
    n = case["n"]
    g = go.abs().expand(n) if go.dim() == 0 else go.abs()
    if t["weight"] is not None:
        g = g * t["weight"].double()
    a = t["alpha"] if isinstance(t["alpha"], torch.Tensor) else torch.tensor(t["alpha"],
                                                                              device=go.device)
    g = g / (case["temperature"] * a.double())
    if case["reduction"] == "mean":
        g = g / max(n - case["n_ignored"], 1)
    return g


def assert_loss_close(out, ref, dtype=torch.float32):
    """`dtype`: the result's promised dtype (float32; float64 for float64 inputs on torch)."""
    assert out.dtype == dtype
    assert out.shape == ref.shape
    err = (out.double() - ref.detach()).abs()
    tol = 2e-5 * (ref.detach().abs() + 1.0)
    assert bool((err <= tol).all()), f"loss error {err.max().item():.3g}"


def assert_logit_grad_close(grad, ref, rows, dtype):
    """Elementwise d(logits) policy of the module docstring; rows = row_scale(...)."""
    assert grad.dtype == dtype and grad.shape == ref.shape
    if not grad.numel():
        return
    g, r = grad.double(), ref.detach()
    tol = (1e-5 * r.abs().amax(dim=1, keepdim=True) + 1e-6 * rows[:, None]
           + ULP[dtype] * 1.01 * r.abs() + ABS_ULP[dtype])
    worst = ((g - r).abs() - tol).max()
    assert bool(worst <= 0), f"gradient error exceeds tolerance by {worst.item():.3g}"


def assert_matmul_grad_close(name, grad, ref, bound):
    """fp32 d(hidden)/d(lm_weight)/d(bias): 2e-5 x the sum of the terms' magnitudes."""
    assert grad is not None, f"{name} got no gradient"
    assert grad.shape == ref.shape, name
    if not ref.numel():
        return
    err = (grad.double() - ref).abs()
    tol = 2e-5 * bound + 1e-7 * ref.abs().max()
    worst = (err - tol).max()
    assert bool(worst <= 0), f"{name} gradient error exceeds tolerance by {worst.item():.3g}"


def fused_oracle(case, t):
    """Float64 loss and gradients of the dense path, with the magnitude bounds of the
    matmul gradients: returns (loss, {name: (ref grad, bound)}, go)."""
    h = t["hidden"].double().requires_grad_()
    w = t["lm_weight"].double().requires_grad_()
    b = t["bias"].double().requires_grad_() if t["bias"] is not None else None
    logits = F.linear(h, w, b)
    logits.retain_grad()
    loss = oracle_logits(case, t, logits)
    go = grad_output(loss, case["seed"])
    loss.backward(go)
    dz = logits.grad.abs()
    refs = {"hidden": (h.grad, dz @ w.detach().abs()),
            "lm_weight": (w.grad, dz.t() @ h.detach().abs())}
    if b is not None:
        refs["bias"] = (b.grad, dz.sum(dim=0))
    return loss, refs, go


def lowp_dense_grads(case, t, go):
    """PyTorch's own gradients of the dense path in the inputs' low dtype."""
    h = t["hidden"].clone().requires_grad_()
    w = t["lm_weight"].clone().requires_grad_()
    b = t["bias"].clone().requires_grad_() if t["bias"] is not None else None
    loss = slam_loss_topk(F.linear(h, w, b), t["ids"], t["probs"], t["alpha"], t["k"],
                          backend="torch", **kwargs_of(case, t))
    loss.backward(go.to(loss.dtype))
    return {"hidden": h.grad, "lm_weight": w.grad, "bias": b.grad if b is not None else None}
