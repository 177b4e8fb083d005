"""The "fused_linear" family's correctness rows (GPU check), GPU goals and CPU targets.

Correctness: `fused_linear_slam_loss(..., backend="triton")`, over several chunks, against the
float64 dense oracle: the loss, and d(hidden) and d(lm_weight) (the worse of the two). fp32
within FP32_RTOL for the loss and FUSED_FP32_RTOL for the matmul gradients (their summation
order differs); fp16/bf16 no worse than profiling/accuracy.py's multiple of PyTorch's own
error on the dense path (F.linear, then slam_loss_topk, in that dtype), times FUSED_LOWP_EXTRA.

CPU targets: the memory claim of fused_linear_memory.py on the sweep's peak-memory rows of the
family's memory configurations. Everything is computed from the CSV's rows only.
"""
from __future__ import annotations

from typing import Callable, List

import pandas as pd
import torch
from torch.nn import functional as F

from slam_bench import fused_linear_slam_loss, slam_loss_topk
from slam_bench.profiling import fused_linear_memory as M
from slam_bench.profiling.accuracy import FP32_RTOL, judge, lowp_tol, rel_err
from slam_bench.profiling.families import DTYPE_BYTES, parse_params
from slam_bench.profiling.report import check_row, pick
from slam_bench.profiling.topk_checks import time_ratios
from slam_bench.vocab.reference import slam_loss_topk_reference

FUSED_FP32_RTOL = 1e-4
# fp16/bf16 get this factor on top of accuracy.LOWP_ERROR_MULTIPLE: d(lm_weight) accumulates in
# the input dtype across chunks (one rounding per chunk, as in Liger-Kernel) where PyTorch's
# dense backward rounds once, and the interpreter (dry run) truncates the fp32 -> bf16 stores
# of d(logits) where a GPU rounds.
FUSED_LOWP_EXTRA = 2.0
# (N, V, H), K = topk_problems.K_TEACHER; each computed in 3 chunks.
GPU_SIZES = ((512, 32000, 1024), (128, 128256, 2048))
DRY_SIZES = ((6, 50, 8), (3, 40, 16))
# Goals, bf16 forward + backward at V >= topk_checks.GPU_LARGE_V: time against the unfused path
# (what fusing may cost: at most 25% more) and against Liger's fused linear cross-entropy
# (which does less: one hard label, no mixing).
FUSED_MAX_TIME_VS_UNFUSED = 1.25
FUSED_MAX_TIME_VS_LIGER = 1.5


def _case(p, dtype_name: str):
    """(errors, tolerances) of one problem, as accuracy.judge calls them."""
    d = p.data
    teacher = (d["ids"], d["probs"], d["alpha"], d["k"])
    h64 = d["hidden"].detach().double().requires_grad_(True)
    w64 = d["lm_weight"].detach().double().requires_grad_(True)
    ref = slam_loss_topk_reference(F.linear(h64, w64), d["ids"], d["probs"].double(),
                                   d["alpha"].double(), d["k"])
    ref.backward()

    def errors():
        h = d["hidden"].detach().clone().requires_grad_(True)
        w = d["lm_weight"].detach().clone().requires_grad_(True)
        loss = fused_linear_slam_loss(h, w, *teacher, backend="triton",
                                      chunk_size=max(1, p.n // 3))  # several chunks
        loss.backward()
        return rel_err(loss, ref), max(rel_err(h.grad, h64.grad), rel_err(w.grad, w64.grad))

    def tolerances():
        if dtype_name == "fp32":
            return FP32_RTOL, FUSED_FP32_RTOL
        hl = d["hidden"].detach().clone().requires_grad_(True)
        wl = d["lm_weight"].detach().clone().requires_grad_(True)
        own = slam_loss_topk(F.linear(hl, wl), *teacher, backend="torch")
        own.backward()
        own_grad = max(rel_err(hl.grad, h64.grad), rel_err(wl.grad, w64.grad))
        return (FUSED_LOWP_EXTRA * lowp_tol(rel_err(own, ref)),
                FUSED_LOWP_EXTRA * lowp_tol(own_grad))

    return errors, tolerances


def correctness(device: torch.device, dry_run: bool, log: Callable[[str], None]) -> List[dict]:
    """One row per (dtype, N, V, H): backend="triton" against the float64 oracle."""
    from slam_bench.profiling.fused_linear_family import make_problem
    rows = []
    for dtype_name in ("fp32", "bf16", "fp16"):
        for n, v, hdim in (DRY_SIZES if dry_run else GPU_SIZES):
            p = make_problem("fused_linear", n, v, dtype_name, device, "peaked", seed=1,
                             backend="triton", h=hdim)
            rows.append(judge(dict(kernel="fused_linear", dtype=dtype_name, N=n, C=v,
                                   case=f"H={hdim}"),
                              f"fused_linear {dtype_name} N={n} V={v} H={hdim}",
                              *_case(p, dtype_name), log))
    return rows


def _bound(row, logit_bytes: int) -> int:
    """The fused claim's bound for a CSV row (its H, K and chunk from params)."""
    prm = parse_params(row["params"])
    return M.bound_bytes(int(row["N"]), int(row["C"]), int(prm["H"]), int(prm["K"]),
                         int(prm["chunk"]), logit_bytes=logit_bytes)


def gpu_goals(df: pd.DataFrame) -> List[dict]:
    out = []
    for other, limit in (("unfused", FUSED_MAX_TIME_VS_UNFUSED), ("liger", FUSED_MAX_TIME_VS_LIGER)):
        r = time_ratios(df, "fused_linear", "slam_bench", other)
        worst = float(r.max()) if len(r) else None
        out.append(check_row(f"fused_linear bf16 fwd+bwd: max time / {other}", worst,
                             f"<= {limit}", worst is not None and worst <= limit))
    fused = df[(df["kernel"] == "fused_linear") & (df["provider"] == "slam_bench")
               & (df["mode"] == "full") & (df["status"] == "ok")]
    ratios = [float(r["peak_extra_bytes"]) / _bound(r, DTYPE_BYTES[r["dtype"]])
              for _, r in fused.iterrows()]
    worst = max(ratios) if ratios else None
    out.append(check_row("fused_linear fwd+bwd peak extra memory / (chunk x V x bytes + "
                         "gradients + O(N K)) (max)", worst, "<= 1",
                         worst is not None and worst <= 1))
    return out


def cpu_targets(df: pd.DataFrame) -> List[dict]:
    """The memory claim on the largest memory configuration measured (MEMORY_SIZES): the
    sweep's peak rows (torch.profiler, one thread) of every provider at N, and the fused
    loss's at N / 4."""
    for size in M.MEMORY_SIZES.values():
        rows = _memory_rows(df, size, size["n"])
        if any(r["provider"] == "slam_bench" for r in rows):
            break
    small = [r for r in _memory_rows(df, size, size["n"] // 4) if r["provider"] == "slam_bench"]
    mine = [r for r in rows if r["provider"] == "slam_bench"]
    growth = None
    if mine and small:
        k_ids = int(parse_params(mine[0]["params"])["K"])
        growth = dict(n=size["n"], n_small=size["n"] // 4, peak=mine[0]["peak_bytes"],
                      peak_small=small[0]["peak_bytes"],
                      allowed_growth=M.growth_allowance(size["n"], size["n"] // 4, size["h"],
                                                        k_ids))
    return M.memory_checks(rows, growth)


def _memory_rows(df: pd.DataFrame, size: dict, n: int) -> List[dict]:
    """The fp32 forward + backward rows at (n, V) with the size's H and chunk, as
    fused_linear_memory rows (method "profiler", the fused bound)."""
    out = []
    for prov in M.PROVIDERS:
        for _, r in pick(df, "fused_linear", prov, "full", "fp32", n, size["v"]).iterrows():
            prm = parse_params(r["params"])
            if prm.get("H") == str(size["h"]) and prm.get("chunk") == str(size["chunk"]):
                out.append(dict(provider=prov, method="profiler", N=n, V=size["v"],
                                params=r["params"], peak_bytes=float(r["peak_extra_bytes"]),
                                bound_bytes=_bound(r, 4)))
                break
    return out
