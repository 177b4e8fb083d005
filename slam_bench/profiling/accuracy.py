"""How the GPU check judges a kernel's result against the float64 reference (docs/kernels.md).

fp32: the largest error, relative to the largest reference entry, within FP32_RTOL.
fp16/bf16: no worse than LOWP_ERROR_MULTIPLE x PyTorch's own error when it evaluates the
reference formula in that dtype (so the tolerance follows the dtype's real precision).
"""
from __future__ import annotations

import math
from typing import Callable, Tuple

from torch import Tensor

FP32_RTOL = 1e-5
LOWP_ERROR_MULTIPLE = 2.0


def rel_err(a: Tensor, ref: Tensor) -> float:
    """max |a - ref| / max |ref|, in float64 (ref is the float64 reference)."""
    a, ref = a.detach().double(), ref.detach()
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def lowp_tol(torch_err: float) -> float:
    """The fp16/bf16 tolerance given PyTorch's own error in that dtype."""
    # PyTorch's own low-precision formula can overflow to inf/NaN (fp16 log of an underflowed
    # softmax); then any finite kernel error is "no worse".
    if not math.isfinite(torch_err):
        return math.inf
    return max(LOWP_ERROR_MULTIPLE * torch_err, FP32_RTOL)


def finite_or_raise(*tensors: Tensor) -> None:
    """A smoke call's loss and gradients must be finite (else the kernels do not work here)."""
    for t in tensors:
        if not bool(t.isfinite().all()):
            raise RuntimeError("the Triton kernels returned a non-finite loss or gradient")


def judge(row: dict, name: str, errors: Callable[[], Tuple[float, float]],
          tolerances: Callable[[], Tuple[float, float]], log: Callable[[str], None]) -> dict:
    """One correctness row: `row` with the kernel's loss and gradient errors (`errors()`, run
    first: an exception there is the kernel failing, a FAIL row with its message), the
    tolerances they are held to (`tolerances()`), and PASS when both errors are finite and
    within them. Logs one line under `name`."""
    try:
        e_loss, e_grad = errors()
    except Exception as e:  # noqa: BLE001 - recorded as a failed check
        out = dict(row, result="FAIL", note=f"{type(e).__name__}: {e}"[:300])
        log(f"  {name}: FAIL ({out['note']})")
        return out
    t_loss, t_grad = tolerances()
    ok = math.isfinite(e_loss) and math.isfinite(e_grad) and e_loss <= t_loss and e_grad <= t_grad
    out = dict(row, loss_err=e_loss, loss_tol=t_loss, grad_err=e_grad, grad_tol=t_grad,
               result="PASS" if ok else "FAIL", note="")
    log(f"  {name}: loss {e_loss:.2g} (tol {t_loss:.2g}), grad {e_grad:.2g} "
        f"(tol {t_grad:.2g}) {out['result']}")
    return out
