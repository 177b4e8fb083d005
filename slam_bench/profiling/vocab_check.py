"""gpu_check's rows for `slam_loss_topk` and `fused_linear_slam_loss`: correctness against the
float64 dense oracle at real sizes, the two families' throughput sweeps, and their goals.

Correctness tolerances are gpu_check's: fp32 within FP32_RTOL (relative to the largest
reference entry; FUSED_FP32_RTOL for the matmul gradients, whose summation order differs), and
fp16/bf16 no worse than LOWP_ERROR_MULTIPLE x PyTorch's own error in that dtype (the reference
formula for "topk"; for "fused_linear" the dense path F.linear -> slam_loss_topk in that dtype,
with FUSED_LOWP_EXTRA on top).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, List, Optional

import pandas as pd
import torch
from torch.nn import functional as F

from slam_bench import fused_linear_slam_loss, slam_loss_topk
from slam_bench.fused_linear import default_chunk_size
from slam_bench.gpu_check import FP32_RTOL, _lowp_tol, _rel_err
from slam_bench.profiling import report, vocab_sweep
from slam_bench.profiling import vocab as VP
from slam_bench.profiling.sweep import DTYPE_BYTES, DTYPES
from slam_bench.profiling.vocab_memory import bound_bytes
from slam_bench.reference_topk import slam_loss_topk_reference

FUSED_FP32_RTOL = 1e-4
# fused_linear in fp16/bf16 gets this factor on top of gpu_check's multiple: d(lm_weight)
# accumulates in the input dtype across chunks (one rounding per chunk, as in Liger-Kernel)
# where PyTorch's dense backward rounds once, and the interpreter (dry run) truncates the
# fp32 -> bf16 stores of d(logits) where a GPU rounds.
FUSED_LOWP_EXTRA = 2.0
# (N, V, K) for "topk"; (N, V, H) with K = VP.K_TEACHER for "fused_linear".
GPU_SIZES = {"topk": ((256, 32000, 64), (64, 128256, 20), (16, 262144, 128)),
             "fused_linear": ((512, 32000, 1024), (128, 128256, 2048))}
DRY_SIZES = {"topk": ((5, 100, 8), (3, 40, 40)), "fused_linear": ((6, 50, 8), (3, 40, 16))}
# Goals (bf16, forward + backward, V >= GPU_LARGE_V). The top-K design moves 3 bytes per
# logit byte of the 2-byte floor (kernels/topk_triton.py), so 2/3 of copy bandwidth is its
# ceiling on the floor's bytes.
GPU_LARGE_V = 32000
TOPK_MIN_FRAC_COPY_BW = 0.55
TOPK_MIN_SPEEDUP_DENSE = 1.3
FUSED_MAX_TIME_VS_UNFUSED = 1.25
FUSED_MAX_TIME_VS_LIGER = 1.5
# Seconds of gpu_check's budget kept for these sweeps.
SWEEP_BUDGET_S = 60.0


def _inputs(family, n, v, x, dtype, device):
    kw = dict(k_ids=x) if family == "topk" else dict(h=x)
    return VP.make_problem(family, n, v, dtype, device, seed=1, backend="triton", **kw)


def _errors(family, p, dtype, alpha):
    """(loss error, gradient error, loss tolerance, gradient tolerance) of one problem."""
    if family == "topk":
        z = p.z.detach().clone().requires_grad_(True)
        loss = slam_loss_topk(z, p.ids, p.probs, alpha, p.k, backend="triton")
        loss.backward()
        z64 = p.z.detach().double().requires_grad_(True)
        ref = slam_loss_topk_reference(z64, p.ids, p.probs.double(), alpha.double(), p.k)
        ref.backward()
        errs = (_rel_err(loss, ref), _rel_err(z.grad, z64.grad))
        if dtype == torch.float32:
            return errs + (FP32_RTOL, FP32_RTOL)
        zl = p.z.detach().clone().requires_grad_(True)
        own = slam_loss_topk_reference(zl, p.ids, p.probs, alpha.to(dtype), p.k)
        own.backward()
        return errs + (_lowp_tol(_rel_err(own, ref)), _lowp_tol(_rel_err(zl.grad, z64.grad)))
    h = p.hidden.detach().clone().requires_grad_(True)
    w = p.lm_weight.detach().clone().requires_grad_(True)
    # Chunks smaller than N: the gradients accumulate over several chunks.
    loss = fused_linear_slam_loss(h, w, p.ids, p.probs, alpha, p.k, backend="triton",
                                  chunk_size=max(1, p.ids.shape[0] // 3))
    loss.backward()
    h64 = p.hidden.detach().double().requires_grad_(True)
    w64 = p.lm_weight.detach().double().requires_grad_(True)
    ref = slam_loss_topk_reference(F.linear(h64, w64), p.ids, p.probs.double(), alpha.double(),
                                   p.k)
    ref.backward()
    grad = max(_rel_err(h.grad, h64.grad), _rel_err(w.grad, w64.grad))
    if dtype == torch.float32:
        return _rel_err(loss, ref), grad, FP32_RTOL, FUSED_FP32_RTOL
    hl = p.hidden.detach().clone().requires_grad_(True)
    wl = p.lm_weight.detach().clone().requires_grad_(True)
    own = slam_loss_topk(F.linear(hl, wl), p.ids, p.probs, alpha, p.k, backend="torch")
    own.backward()
    own_grad = max(_rel_err(hl.grad, h64.grad), _rel_err(wl.grad, w64.grad))
    return (_rel_err(loss, ref), grad, FUSED_LOWP_EXTRA * _lowp_tol(_rel_err(own, ref)),
            FUSED_LOWP_EXTRA * _lowp_tol(own_grad))


def check_correctness(device, dry: bool, log: Callable[[str], None]) -> List[dict]:
    """One row per (family, dtype, N, V): backend="triton" against the float64 oracle."""
    rows = []
    for dtype_name in ("fp32", "bf16", "fp16"):
        dtype = DTYPES[dtype_name]
        for family, sizes in (DRY_SIZES if dry else GPU_SIZES).items():
            for n, v, x in sizes:
                row = dict(kernel=family, dtype=dtype_name, N=n, C=v,
                           K=x if family == "topk" else min(VP.K_TEACHER, v),
                           H=x if family == "fused_linear" else "")
                p = _inputs(family, n, v, x, dtype, device)
                try:
                    e_loss, e_grad, t_loss, t_grad = _errors(family, p, dtype, p.alpha)
                except Exception as e:  # noqa: BLE001 - recorded as a failed check
                    rows.append(dict(row, result="FAIL", note=f"{type(e).__name__}: {e}"[:200]))
                    log(f"  correctness {family} {dtype_name} N={n} V={v}: FAIL ({rows[-1]['note']})")
                    continue
                ok = all(map(math.isfinite, (e_loss, e_grad))) and e_loss <= t_loss \
                    and e_grad <= t_grad
                rows.append(dict(row, loss_err=e_loss, loss_tol=t_loss, grad_err=e_grad,
                                 grad_tol=t_grad, result="PASS" if ok else "FAIL", note=""))
                log(f"  correctness {family} {dtype_name} N={n} V={v}: loss {e_loss:.2g} "
                    f"(tol {t_loss:.2g}), grad {e_grad:.2g} (tol {t_grad:.2g}) {rows[-1]['result']}")
    return rows


def run_sweeps(device, copy_bw: float, out_dir: Path, dry: bool, log: Callable[[str], None],
               deadline: Optional[float] = None) -> pd.DataFrame:
    """Both families' sweeps (GPU sizes, or the dry-run ones), each written to its CSV."""
    frames = []
    for family in VP.FAMILIES:
        spec = vocab_sweep.SWEEPS[(family, "dry-run" if dry else "gpu")]
        log(f"throughput sweep {spec.name}:")
        rows = vocab_sweep.run_family(spec, device, copy_bw, log=log, deadline=deadline)
        frames.append(vocab_sweep.save(rows, device, copy_bw, spec, out_dir)[0])
    return pd.concat(frames, ignore_index=True)


def _median(df, family, provider, v=None):
    sel = ((df["kernel"] == family) & (df["provider"] == provider) & (df["mode"] == "full")
           & (df["dtype"] == "bf16") & (df["status"] == "ok") & (df["C"] >= GPU_LARGE_V))
    if v is not None:
        sel &= df["C"] == v
    return df[sel]


def _time_ratios(df, family, num, den):
    """ms(num) / ms(den) at each measured V (empty when either is missing)."""
    a, b = _median(df, family, num), _median(df, family, den)
    m = a.merge(b, on=["N", "C"], suffixes=("", "_o"))
    return m["ms_median"] / m["ms_median_o"]


def goals(df: pd.DataFrame) -> List[dict]:
    """PASS/FAIL rows (report.check_row) of the two families on a GPU."""
    out = []
    ours = _median(df, "topk", "slam_bench")
    frac = float(ours["frac_copy_bw"].min()) if len(ours) else None
    out.append(report.check_row(f"topk bf16 fwd+bwd at V >= {GPU_LARGE_V}: min fraction of copy "
                                "bandwidth (byte floor)", frac, f">= {TOPK_MIN_FRAC_COPY_BW}",
                                frac is not None and frac >= TOPK_MIN_FRAC_COPY_BW))
    r = _time_ratios(df, "topk", "dense", "slam_bench")
    sp = float(r.min()) if len(r) else None
    out.append(report.check_row("topk bf16 fwd+bwd: min speed-up over the dense path (slam_loss)",
                                sp, f">= {TOPK_MIN_SPEEDUP_DENSE}x",
                                sp is not None and sp >= TOPK_MIN_SPEEDUP_DENSE))
    for other, limit in (("unfused", FUSED_MAX_TIME_VS_UNFUSED), ("liger", FUSED_MAX_TIME_VS_LIGER)):
        r = _time_ratios(df, "fused_linear", "slam_bench", other)
        worst = float(r.max()) if len(r) else None
        out.append(report.check_row(f"fused_linear bf16 fwd+bwd: max time / {other}", worst,
                                    f"<= {limit}", worst is not None and worst <= limit))
    fused = df[(df["kernel"] == "fused_linear") & (df["provider"] == "slam_bench")
               & (df["mode"] == "full") & (df["status"] == "ok")]
    worst = None
    for _, row in fused.iterrows():
        n, v, h, k_ids = int(row["N"]), int(row["C"]), int(row["H"]), int(row["K"])
        bound = bound_bytes(n, v, h, k_ids, default_chunk_size(n, v),
                            logit_bytes=DTYPE_BYTES[row["dtype"]])
        worst = max(worst or 0.0, float(row["peak_extra_bytes"]) / bound)
    out.append(report.check_row("fused_linear fwd+bwd peak extra memory / (chunk x V x bytes + "
                                "gradients + O(N K))", worst, "<= 1",
                                worst is not None and worst <= 1))
    return out


def budget_deadline(start: float, budget_s: float, reserve_s: float) -> float:
    """When the loss sweep must stop so that these sweeps still get SWEEP_BUDGET_S."""
    return start + budget_s - reserve_s - SWEEP_BUDGET_S

