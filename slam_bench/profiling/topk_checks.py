"""The "topk" family's correctness rows (for the GPU check) and its GPU goals.

Correctness: `slam_loss_topk(..., backend="triton")` against the float64 dense oracle
(slam_bench.vocab.reference), loss and dL/dz, with the tolerances of profiling/accuracy.py
(fp16/bf16: against PyTorch's own error when it evaluates the oracle's formula in that dtype).
Goals are computed from the sweep's CSV rows only.
"""
from __future__ import annotations

from typing import Callable, List

import pandas as pd
import torch

from slam_bench import slam_loss_topk
from slam_bench.profiling.accuracy import FP32_RTOL, judge, lowp_tol, rel_err
from slam_bench.profiling.report import check_row, pick
from slam_bench.vocab.reference import slam_loss_topk_reference

# (N, V, K): an LLM vocabulary, one past 2^17, and the largest supported, with K from 20 to 128.
GPU_SIZES = ((256, 32000, 64), (64, 128256, 20), (16, 262144, 128))
DRY_SIZES = ((5, 100, 8), (3, 40, 40))

# Goals (bf16, forward + backward, V >= GPU_LARGE_V). The design moves 3 bytes per logit byte
# of the 2-byte floor (kernels/topk_triton.py: forward reads z, backward reads z and writes
# dz), so 2/3 of copy bandwidth is its ceiling on the floor's bytes.
GPU_LARGE_V = 32000
TOPK_MIN_FRAC_COPY_BW = 0.55
TOPK_MIN_SPEEDUP_DENSE = 1.3


def _case(p, dtype_name: str):
    """(errors, tolerances) of one problem, as accuracy.judge calls them."""
    d = p.data
    teacher = (d["ids"], d["probs"], d["alpha"], d["k"])
    z64 = d["z"].detach().double().requires_grad_(True)
    ref = slam_loss_topk_reference(z64, d["ids"], d["probs"].double(), d["alpha"].double(),
                                   d["k"])
    ref.backward()

    def errors():
        z = d["z"].detach().clone().requires_grad_(True)
        loss = slam_loss_topk(z, *teacher, backend="triton")
        loss.backward()
        return rel_err(loss, ref), rel_err(z.grad, z64.grad)

    def tolerances():
        if dtype_name == "fp32":
            return FP32_RTOL, FP32_RTOL
        zl = d["z"].detach().clone().requires_grad_(True)
        own = slam_loss_topk_reference(zl, d["ids"], d["probs"], d["alpha"].to(zl.dtype), d["k"])
        own.backward()
        return lowp_tol(rel_err(own, ref)), lowp_tol(rel_err(zl.grad, z64.grad))

    return errors, tolerances


def correctness(device: torch.device, dry_run: bool, log: Callable[[str], None]) -> List[dict]:
    """One row per (dtype, N, V, K): backend="triton" against the float64 oracle."""
    from slam_bench.profiling.topk_family import make_problem
    rows = []
    for dtype_name in ("fp32", "bf16", "fp16"):
        for n, v, k_ids in (DRY_SIZES if dry_run else GPU_SIZES):
            p = make_problem("topk", n, v, dtype_name, device, "peaked", seed=1,
                             backend="triton", k_ids=k_ids)
            rows.append(judge(dict(kernel="topk", dtype=dtype_name, N=n, C=v, case=f"K={k_ids}"),
                              f"topk {dtype_name} N={n} V={v} K={k_ids}", *_case(p, dtype_name),
                              log))
    return rows


def large_v(df: pd.DataFrame, kernel: str, provider: str) -> pd.DataFrame:
    """The bf16 forward + backward rows of `provider` at V >= GPU_LARGE_V."""
    rows = pick(df, kernel, provider, "full", "bf16")
    return rows[rows["C"] >= GPU_LARGE_V]


def time_ratios(df: pd.DataFrame, kernel: str, num: str, den: str) -> pd.Series:
    """ms(num) / ms(den) at each (N, V, params) measured for both (empty when either is
    missing), bf16 forward + backward at V >= GPU_LARGE_V."""
    m = large_v(df, kernel, num).merge(large_v(df, kernel, den), on=["N", "C", "params"],
                                       suffixes=("", "_o"))
    return m["ms_median"] / m["ms_median_o"]


def gpu_goals(df: pd.DataFrame) -> List[dict]:
    ours = large_v(df, "topk", "slam_bench")
    frac = float(ours["frac_copy_bw_floor"].min()) if len(ours) else None
    r = time_ratios(df, "topk", "dense", "slam_bench")
    sp = float(r.min()) if len(r) else None
    return [
        check_row(f"topk bf16 fwd+bwd at V >= {GPU_LARGE_V}: min fraction of copy bandwidth at "
                  "the floor's bytes", frac, f">= {TOPK_MIN_FRAC_COPY_BW}",
                  frac is not None and frac >= TOPK_MIN_FRAC_COPY_BW),
        check_row("topk bf16 fwd+bwd: min speed-up over the dense path (slam_loss)", sp,
                  f">= {TOPK_MIN_SPEEDUP_DENSE}x", sp is not None and sp >= TOPK_MIN_SPEEDUP_DENSE),
    ]
