"""Correctness rows of the GPU check beyond the float64 comparison (loss family):

- the default value checks, fused into the Triton loss pass (the kernel writes per-row stats,
  the host reads them with one small copy): every bad-value case must raise, through
  backend="triton" on the device, exactly the error the torch backend raises (and clean input
  none), on rows kept on chip and, on a GPU, streamed rows;
- compile mode: torch.compile(fullgraph=True) of a small model step whose loss is
  slam_loss(..., backend="triton", check_values=False) must trace and give eager's loss and
  parameter gradients; a compiled step with the default checks (fullgraph too: the host read
  of the stats is an op in the graph, slam_bench.checks.checked_loss) must give eager's loss
  and raise eager's error; and new batches must not compile the step again.

On a GPU the compiler is Inductor; under --dry-run (CPU, interpreter) "aot_eager", which runs
the same Dynamo capture and AOTAutograd tracing without C++ code generation.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, List
from unittest import mock

import torch

from slam_bench.profiling.accuracy import rel_err

Log = Callable[[str], None]

# Compiled vs eager, fp32 (relative to the largest eager entry): the same kernels run on both
# sides; only the model's matmuls may be fused or reordered by the compiler.
COMPILE_RTOL = 1e-4


def _set(t, idx, value):
    t = t.clone()
    t[idx] = value
    return t


def _not_simplex(z, y):
    return z, _set(y, -1, y[-1] * 1.01)


def _negative(z, y):
    y = _set(y, (-1, -1), -0.1)
    return z, _set(y, (-1, 0), y[-1, 0] + 0.1)


# (label, bad (z, y) from good ones): entries land late in the last row (a streamed row's tail).
BAD_VALUES = (
    ("clean input (no error)", lambda z, y: (z, y)),
    ("logits NaN", lambda z, y: (_set(z, (-1, -2), math.nan), y)),
    ("logits +inf", lambda z, y: (_set(z, (-1, -1), math.inf), y)),
    ("logits -inf", lambda z, y: (_set(z, (0, 3), -math.inf), y)),
    ("teacher NaN", lambda z, y: (z, _set(y, (-1, -3), math.nan))),
    ("teacher +inf", lambda z, y: (z, _set(y, (-1, 1), math.inf))),
    ("teacher negative entry", _negative),
    ("teacher row not summing to 1", _not_simplex),
    ("logits NaN and teacher off the simplex", lambda z, y: (_set(z, (0, 0), math.nan),
                                                             _set(y, -1, y[-1] * 1.5))),
)
# (N, C, shrink the launch blocks): on chip; streamed. The dry run streams C = 37 in blocks of
# 8 (the tests' small_blocks), as the interpreter cannot afford a streamed C.
GPU_ERROR_SIZES = ((4, 1000, False), (4, 32769, False))
DRY_ERROR_SIZES = ((3, 13, False), (3, 37, True))


@contextlib.contextmanager
def _small_blocks(on: bool):
    if not on:
        yield
        return
    from slam_bench.kernels import config
    with mock.patch.multiple(config, MAX_SINGLE_BLOCK=16, STREAM_BLOCK=8, TILE_ELEMENTS=64):
        yield


def _error(kernel, z, y, backend):
    from slam_bench import distill_loss, slam_loss
    try:
        if kernel == "slam":
            slam_loss(z, y, 0.7, 3, backend=backend)
        else:
            distill_loss(z, y, backend=backend)
    except ValueError as e:
        return str(e)
    return None


def fused_check_rows(device: torch.device, dry_run: bool, log: Log) -> List[dict]:
    """One row per (kernel, size, bad-value case): PASS when backend="triton" with the default
    checks raises exactly the torch backend's error (none for clean input)."""
    rows = []
    for kernel in ("slam", "distill"):
        for n, c, small in (DRY_ERROR_SIZES if dry_run else GPU_ERROR_SIZES):
            gen = torch.Generator(device=device).manual_seed(4)
            z0 = torch.randn(n, c, generator=gen, device=device)
            y0 = torch.softmax(torch.randn(n, c, generator=gen, device=device), dim=1)
            for label, make in BAD_VALUES:
                z, y = make(z0, y0)
                row = dict(kernel=kernel, dtype="fp32", N=n, C=c,
                           case=f"fused checks: {label}")
                name = (f"{kernel} fp32 N={n} C={c}{' streamed' if small else ''} "
                        f"(fused checks: {label})")
                try:
                    want = _error(kernel, z, y, "torch")
                    with _small_blocks(small):
                        got = _error(kernel, z.clone().requires_grad_(True), y, "triton")
                    ok = got == want and (want is None) == label.startswith("clean")
                    note = "" if ok else f"triton: {got!r}; torch: {want!r}"
                except Exception as e:  # noqa: BLE001 - anything but the expected error fails
                    ok, note = False, f"{type(e).__name__}: {e}"
                row.update(result="PASS" if ok else "FAIL", note=note[:300])
                log(f"  {name}: {row['result']}" + (f" ({note[:200]})" if note else ""))
                rows.append(row)
    return rows


def _student(c: int, device):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                               torch.nn.Linear(16, c)).to(device)


def _model_step(model, x, y, alpha, k):
    from slam_bench import distill_loss, slam_loss
    logits = model(x)
    loss = slam_loss(logits, y, alpha, k, backend="triton", check_values=False)
    return loss + 0.5 * distill_loss(logits, y, backend="triton", check_values=False)


def _checked_step(z, y):
    from slam_bench import distill_loss, slam_loss
    return slam_loss(z, y, 0.7, 3, backend="triton") + distill_loss(z, y, backend="triton")


def compile_rows(device: torch.device, dry_run: bool, log: Log) -> List[dict]:
    """Compile-mode rows: fullgraph model step (loss and every parameter gradient vs eager),
    four new batches of two sizes through one compiled step (at most two compiles), and the
    default checks under torch.compile, fullgraph (loss vs eager, the same error on bad
    input)."""
    compiler = "aot_eager" if dry_run else "inductor"
    n, c = (12, 10) if dry_run else (256, 32000)
    rows = []

    def record(case, fn):
        row = dict(kernel="slam", dtype="fp32", N=n, C=c, case=f"compile ({compiler}): {case}")
        name = f"slam fp32 N={n} C={c} ({row['case']})"
        try:
            err = fn()
            ok = math.isfinite(err) and err <= COMPILE_RTOL
            row.update(loss_err=err, loss_tol=COMPILE_RTOL, result="PASS" if ok else "FAIL",
                       note="" if ok else "compiled differs from eager")
        except Exception as e:  # noqa: BLE001 - a trace failure or a wrong error is a FAIL
            row.update(result="FAIL", note=f"{type(e).__name__}: {e}"[:300])
        log(f"  {name}: {row['result']}" + (f" ({row['note']})" if row["note"] else
                                            f" (max rel diff {row['loss_err']:.2g})"))
        rows.append(row)

    gen = torch.Generator(device=device).manual_seed(5)
    x = torch.randn(n, 8, generator=gen, device=device)
    y = torch.softmax(2 * torch.randn(n, c, generator=gen, device=device), dim=1)
    alpha = 0.6 + 0.4 * torch.rand(n, generator=gen, device=device)
    k = torch.randint(2, 6, (n,), generator=gen, device=device)

    def fullgraph():
        torch._dynamo.reset()
        eager, comp = _student(c, device), _student(c, device)
        ref = _model_step(eager, x, y, alpha, k)
        ref.backward()
        out = torch.compile(_model_step, backend=compiler, fullgraph=True)(comp, x, y, alpha, k)
        out.backward()
        errs = [rel_err(out, ref.double())]
        errs += [rel_err(p.grad, p_ref.grad.double())
                 for p_ref, p in zip(eager.parameters(), comp.parameters())]
        return max(errs)

    def checked():
        torch._dynamo.reset()
        z = torch.randn(n, c, generator=gen, device=device)
        z_e, z_c = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
        ref = _checked_step(z_e, y)
        ref.backward()
        step = torch.compile(_checked_step, backend=compiler, fullgraph=True)
        out = step(z_c, y)
        out.backward()
        err = max(rel_err(out, ref.double()), rel_err(z_c.grad, z_e.grad.double()))
        bad = _set(y, (n - 1, c - 3), math.nan)
        want = _error("slam", z, bad, "torch")
        try:
            step(z.clone().requires_grad_(True), bad)
            got = None
        except ValueError as e:
            got = str(e)
        if got != want or want is None:
            raise AssertionError(f"bad teacher: compiled raised {got!r}, torch {want!r}")
        return err

    def new_batches():
        # A training loop: new tensors every step, a last batch of another size. More than
        # two compiles means something guards on the tensors themselves or on N.
        from torch._dynamo.testing import CompileCounterWithBackend
        torch._dynamo.reset()
        counter = CompileCounterWithBackend(compiler)
        model = _student(c, device)
        step = torch.compile(_model_step, backend=counter, fullgraph=True)
        errs = []
        for rows_b in (n, n, n, n // 2 + 1):
            b = torch.randint(0, n, (rows_b,), generator=gen, device=device)
            out = step(model, x[b] + 0.0, y[b] + 0.0, alpha[b], k[b])
            errs.append(rel_err(out, _model_step(model, x[b], y[b], alpha[b], k[b]).double()))
        if counter.frame_count > 2:
            raise AssertionError(f"{counter.frame_count} compiles for 4 batches of 2 sizes")
        return max(errs)

    record("fullgraph model step, check_values=False: loss and gradients vs eager", fullgraph)
    record("4 new batches of 2 sizes: at most 2 compiles, loss vs eager", new_batches)
    record("default checks, fullgraph: loss, gradient and error vs eager", checked)
    return rows
