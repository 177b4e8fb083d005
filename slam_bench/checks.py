"""Argument checks shared by every public loss.

Shape, dtype and device checks are free (metadata only) and always run. Value checks read
tensor contents, which synchronises a GPU, so they run by default and are switched off with
``check_values=False`` (e.g. inside a CUDA graph or a tuned training loop).

The (N, C) value checks are one pass over row chunks (`value_stats`): per chunk, the teacher's
row sums and minimum and the logits' minimum and maximum, all reductions with no N x C
temporary (a NaN or inf anywhere shows up in those four numbers), read back with one host
sync. On CPU the chunks run on the worker threads of slam_bench.chunks, so the checks cost
about one read of the inputs. `slam_loss` and `distill_loss` take the same four numbers inside
their own loss pass instead, and raise the same errors before returning: no extra read. The
torch backend takes them from each chunk while it is in cache (slam_bench.torch_backend); the
Triton kernel writes per-row numbers (min y, sum y, sum z * 0) from its own loads, reduced on
the device to these four and read with one copy (slam_bench.kernels.ops.combine_row_stats).

Every error names the argument and what was expected.
"""
from __future__ import annotations

import math
from typing import List, Optional, Union

import torch
from torch import Tensor

from slam_bench.chunks import for_each_chunk, row_step

REDUCTIONS = ("mean", "sum", "none")
BACKENDS = ("auto", "torch", "triton")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Teacher rows must sum to 1 within this absolute tolerance. Low-precision teachers store
# each probability with a relative error of up to 2**-8 (bf16), so their rows get more slack.
SIMPLEX_ATOL = {torch.float16: 1e-2, torch.bfloat16: 1e-2, torch.float32: 1e-3, torch.float64: 1e-3}


def check_logits_and_probs(student_logits, teacher_probs, check_values: bool) -> None:
    """student_logits and teacher_probs: (N, C) float tensors on one device, C >= 2."""
    for name, t in (("student_logits", student_logits), ("teacher_probs", teacher_probs)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be a float16/bfloat16/float32/float64 tensor, got {t.dtype}")
        if t.dim() != 2:
            raise ValueError(f"{name} must have shape (N, C), got {tuple(t.shape)}")
    if student_logits.shape != teacher_probs.shape:
        raise ValueError(
            f"teacher_probs must have the shape of student_logits {tuple(student_logits.shape)}, "
            f"got {tuple(teacher_probs.shape)}"
        )
    if student_logits.shape[1] < 2:
        raise ValueError(f"student_logits must have C >= 2 classes, got C = {student_logits.shape[1]}")
    check_same_device(student_logits, teacher_probs=teacher_probs)
    if check_values and teacher_probs.numel():
        raise_loss_value_errors(value_stats(teacher_probs, student_logits), teacher_probs.dtype)


def raise_loss_value_errors(stats: List[float], probs_dtype: torch.dtype) -> None:
    """The (N, C) value checks of a (logits, teacher probs) loss on `value_stats` numbers
    (computed here, or inside the torch backend's loss pass): teacher rows finite,
    non-negative and on the simplex, then logits finite."""
    raise_simplex_errors("teacher_probs", stats, SIMPLEX_ATOL[probs_dtype])
    if not (math.isfinite(stats[2]) and math.isfinite(stats[3])):
        raise finite_error("student_logits")


# The tag of every custom op here whose body reads values on the host (a sync): a CUDA graph
# must not capture it, so torch.compile(mode="reduce-overhead") runs such a graph without one.
HOST_READS = (torch.Tag.cudagraph_unsafe,)


@torch.library.custom_op("slam_bench::checked_loss", mutates_args=(), tags=HOST_READS)
def checked_loss(out: Tensor, stats: Tensor, probs_dtype: torch.dtype) -> Tensor:
    """`out` (a loss: 0-dim, or (N,) rows) after raise_loss_value_errors on `stats`, the (4,)
    value_stats numbers a kernel left on the device (one small copy to the host). A custom op
    so that torch.compile keeps the check in the graph (fullgraph=True traces) and it raises
    when the graph runs; its result is a copy of `out` so that the graph cannot drop it. It
    synchronises: tagged cudagraph_unsafe, so mode="reduce-overhead" runs such a graph without
    a CUDA graph (check_values=False keeps the step capturable)."""
    raise_loss_value_errors(stats.tolist(), probs_dtype)
    return out.clone()


@checked_loss.register_fake
def _checked_loss_fake(out, stats, probs_dtype):
    return torch.empty_like(out)


def _checked_loss_backward(ctx, grad):
    return grad, None, None


checked_loss.register_autograd(_checked_loss_backward)


def value_stats(probs: Tensor, logits: Optional[Tensor] = None) -> List[float]:
    """[min of probs, max over rows |row sum - 1|, min of logits, max of logits] (the last two
    0.0 without logits), from one chunked pass. probs (n, C); logits None or (n, C). NaN
    propagates through every one of these reductions, and an inf makes its sum or extreme
    non-finite."""
    n, c = probs.shape
    step = row_step(n, c, probs.device)
    starts = range(0, n, step)
    parts = torch.zeros((len(starts), 4), dtype=torch.float64, device=probs.device)
    zero = torch.zeros((), dtype=torch.float64, device=probs.device)

    def run(i):
        lo, hi = torch.aminmax(logits[i:i + step]) if logits is not None else (zero, zero)
        parts[i // step] = chunk_stats(probs[i:i + step], lo, hi)

    for_each_chunk(run, starts, probs.device)
    return combine_stats(parts)


def chunk_stats(probs: Tensor, logits_min: Tensor, logits_max: Tensor,
                row_sums: Optional[Tensor] = None) -> Tensor:
    """One chunk's `value_stats` numbers, (4,) float64. probs (n, C); logits_min/max 0-dim.
    Row sums accumulate in float32 (float64 for float64 probs), with no upcast copy;
    `row_sums` (n,), when the caller has them in that dtype, are used instead of summing."""
    acc = torch.float64 if probs.dtype == torch.float64 else torch.float32
    if row_sums is None or row_sums.dtype != acc:
        row_sums = probs.sum(dim=1, dtype=acc)
    return torch.stack([probs.amin(), (row_sums - 1).abs().max(), logits_min,
                        logits_max]).to(torch.float64)


def combine_stats(parts: Tensor) -> List[float]:
    """`value_stats` numbers from per-chunk rows parts (n_chunks, 4) float64, NaN-propagating
    (torch's min and max propagate NaN). One host sync."""
    mins = parts.amin(dim=0).tolist()
    maxs = parts.amax(dim=0).tolist()
    return [mins[0], maxs[1], mins[2], maxs[3]]


def finite_error(name: str) -> ValueError:
    """The one error every finiteness check raises (the torch backend's loss passes too)."""
    return ValueError(f"{name} must be finite (found NaN or inf)")


def check_finite(name: str, t: Tensor) -> None:
    """Value check: every entry of t (1-D or 2-D) finite, from one pass of min/max over row
    chunks, with no temporary of t's size (NaN propagates through both; an inf is an
    extreme). On CPU the chunks run on the workers of slam_bench.chunks."""
    if not t.numel():
        return
    rows = t if t.dim() == 2 else t.reshape(1, -1)
    n, c = rows.shape
    step = row_step(n, c, t.device)
    starts = range(0, n, step)
    parts = torch.zeros((len(starts), 2), dtype=torch.float64, device=t.device)

    def run(i):
        parts[i // step] = torch.stack(torch.aminmax(rows[i:i + step])).to(torch.float64)

    for_each_chunk(run, starts, t.device)
    if not bool(parts.isfinite().all()):
        raise finite_error(name)


def raise_simplex_errors(name: str, stats: List[float], tol: float, hint: str = "") -> None:
    """The simplex checks on `value_stats` numbers: finite, non-negative, rows sum to 1."""
    mn, dev = stats[0], stats[1]
    if not (math.isfinite(mn) and math.isfinite(dev)):
        raise finite_error(name)
    if mn < 0:
        raise ValueError(f"{name} must be non-negative (found a negative entry)")
    if dev > tol:
        raise ValueError(f"{name} rows must sum to 1 within {tol:g}{hint}, worst row is off by {dev:.3g}")


def check_simplex_rows(name: str, probs: Tensor, tol: float, hint: str = "") -> None:
    """Value check of (n, C) rows: finite, non-negative, each summing to 1 within `tol`."""
    if probs.numel():
        raise_simplex_errors(name, value_stats(probs), tol, hint)


def flatten_rows(student_logits, teacher_probs, **per_row):
    """(*, C) inputs as rows: returns (lead, logits (N, C), probs (N, C), per_row), where
    lead = the leading shape * and N = its product. The class dimension is the last one
    (as in Liger-Kernel and fused LM losses; F.cross_entropy puts it at dim 1). Each per-row
    tensor (alpha, k, weight) of shape * is flattened to (N,) the same way; one already of
    shape (N,) is kept; scalars and None pass through. Inputs that are not tensors pass
    through unchanged (lead None) for the type checks to reject."""
    if not (isinstance(student_logits, Tensor) and isinstance(teacher_probs, Tensor)):
        return None, student_logits, teacher_probs, per_row
    if student_logits.dim() < 2:
        raise ValueError(f"student_logits must have shape (*, C) with at least one leading "
                         f"dimension, e.g. (N, C) or (B, T, C), got {tuple(student_logits.shape)} "
                         f"(one row: student_logits[None])")
    if student_logits.shape != teacher_probs.shape:
        raise ValueError(
            f"teacher_probs must have the shape of student_logits {tuple(student_logits.shape)}, "
            f"got {tuple(teacher_probs.shape)}")
    lead = tuple(student_logits.shape[:-1])
    if len(lead) == 1:
        return lead, student_logits, teacher_probs, per_row
    n, c = math.prod(lead), student_logits.shape[-1]
    rows = {}
    for name, t in per_row.items():
        if isinstance(t, Tensor) and tuple(t.shape) == lead:
            t = t.reshape(n)
        elif isinstance(t, Tensor) and tuple(t.shape) != (n,):
            raise ValueError(f"{name} must have the leading shape {lead} of student_logits, or "
                             f"({n},) flattened, got {tuple(t.shape)}")
        rows[name] = t
    return lead, student_logits.reshape(n, c), teacher_probs.reshape(n, c), rows


def check_loss_inputs(student_logits, teacher_probs, temperature, weight, reduction,
                      check_values: bool, defer_nc_values: bool = False) -> tuple:
    """The checks every (logits, teacher probs) loss shares. Returns (N, C).
    defer_nc_values: leave the (N, C) value checks of the logits and teacher to the caller,
    which runs them inside its own pass (`raise_loss_value_errors`)."""
    check_logits_and_probs(student_logits, teacher_probs, check_values and not defer_nc_values)
    n, c = student_logits.shape
    check_temperature(temperature)
    check_weight(weight, n, student_logits.device, check_values)
    check_choice("reduction", reduction, REDUCTIONS)
    return n, c


def check_same_device(ref: Tensor, **tensors: Optional[Tensor]) -> None:
    for name, t in tensors.items():
        if isinstance(t, Tensor) and t.device != ref.device:
            raise ValueError(f"{name} must be on {ref.device} like student_logits, got {t.device}")


def check_alpha(alpha, n: int, device, check_values: bool) -> None:
    """alpha: a float or an (N,) float tensor, every value in (0, 1]."""
    if isinstance(alpha, Tensor):
        if not alpha.is_floating_point():
            raise TypeError(f"alpha must be a float tensor, got {alpha.dtype}")
        if alpha.dim() != 1 or alpha.shape[0] != n:
            raise ValueError(f"alpha must be a float or a tensor of shape ({n},), got {tuple(alpha.shape)}")
        check_same_device_named("alpha", alpha, device)
        if check_values and n and not bool(((alpha > 0) & (alpha <= 1)).all()):
            raise ValueError("alpha must lie in (0, 1] (found a value outside, or NaN)")
    elif isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        if not (0.0 < float(alpha) <= 1.0):  # also rejects NaN
            raise ValueError(f"alpha must lie in (0, 1], got {alpha}")
    else:
        raise TypeError(f"alpha must be a float or a tensor, got {type(alpha).__name__}")


def check_k(k, n: int, c: int, normalize: bool, device, check_values: bool) -> None:
    """k: an int or an (N,) integer tensor in [1, C] ([2, C] when normalize=True)."""
    lo = 2 if normalize else 1

    def rule():  # built only for an error (formatting C would fix it under torch.compile)
        return f"[{lo}, C={c}]" + (" (normalize=True needs k >= 2)" if normalize else "")
    if isinstance(k, Tensor):
        if k.dtype.is_floating_point or k.dtype == torch.bool or k.dtype.is_complex:
            raise TypeError(f"k must be an int or an integer tensor, got {k.dtype}")
        if k.dim() != 1 or k.shape[0] != n:
            raise ValueError(f"k must be an int or a tensor of shape ({n},), got {tuple(k.shape)}")
        check_same_device_named("k", k, device)
        if check_values and n and not bool(((k >= lo) & (k <= c)).all()):
            raise ValueError(f"k must lie in {rule()}")
    elif isinstance(k, int) and not isinstance(k, bool):
        if not lo <= k <= c:
            raise ValueError(f"k must lie in {rule()}, got {k}")
    else:
        raise TypeError(f"k must be an int or an integer tensor, got {type(k).__name__}")


def check_weight(weight, n: int, device, check_values: bool) -> None:
    """weight: None or an (N,) float tensor of finite, non-negative per-row factors (an inf
    weight would make the loss inf and the gradients NaN)."""
    if weight is None:
        return
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight must be None or a tensor, got {type(weight).__name__}")
    if not weight.is_floating_point():
        raise TypeError(f"weight must be a float tensor, got {weight.dtype}")
    if weight.dim() != 1 or weight.shape[0] != n:
        raise ValueError(f"weight must have shape ({n},), got {tuple(weight.shape)}")
    check_same_device_named("weight", weight, device)
    if check_values and n and not bool(((weight >= 0) & (weight < math.inf)).all()):
        raise ValueError("weight must be finite and non-negative (found a negative entry, "
                         "inf or NaN)")


def check_temperature(temperature) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a positive float, got {type(temperature).__name__}")
    # (Comparisons, not math.isfinite: torch.compile(dynamic=True) traces a float default as a
    # symbolic float, which math.isfinite rejects. NaN fails both comparisons.)
    if not 0 < temperature < math.inf:
        raise ValueError(f"temperature must be a positive finite float, got {temperature}")


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def check_same_device_named(name: str, t: Tensor, device) -> None:
    if t.device != device:
        raise ValueError(f"{name} must be on {device} like student_logits, got {t.device}")


def as_row_tensor(x: Union[float, int, Tensor], n: int, dtype, device) -> Tensor:
    """Broadcast a scalar or (N,) parameter to an (N,) tensor of `dtype`."""
    if isinstance(x, Tensor):
        return x.to(dtype=dtype)
    return torch.full((n,), x, dtype=dtype, device=device)
