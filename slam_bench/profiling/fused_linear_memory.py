"""Peak extra memory of `fused_linear_slam_loss` (forward + backward) against the dense path,
on CPU (torch backend), float32: the claim, as a number and as PASS/FAIL rows.

The claim: the fused loss needs at most one chunk_size x V buffer of logits plus the gradients
(N x H, V x H, V) and O(N x K) row data, independent of N; the dense path (F.linear, then
slam_loss) holds N x V logits and their N x V gradient.

Two measurements, each able to fail:
- "profiler": torch's CPU allocator reports every allocation and free to torch.profiler
  (timing.peak_extra_bytes_cpu, one torch thread): the largest running sum over one step.
  Exact for tensors; blind to memory outside torch's allocator (BLAS scratch, Python objects).
  Every CPU sweep row records it (peak_extra_bytes), so `slam-bench profile` checks the claim
  on the rows of the fused_linear family's memory configurations (MEMORY_SIZES).
- "rss" (pytest suites/test_vocab_memory.py --benchmark): a fresh subprocess builds the
  inputs, runs one tiny step to load the libraries, resets the kernel's resident-set
  high-water mark (writing 5 to /proc/self/clear_refs), runs one step and reads VmHWM - VmRSS
  before: everything the process touched, at torch's default thread count. If the reset is
  refused the input construction's own peak stays in the mark, so the number can only be too
  high, never too low; the row says whether the reset worked.
A fused step that materialised the N x V logits shows in both (1 GiB at the issue's size).

`bound_bytes` is the claim as a number: chunk x V x bytes(logit) (the torch backend's logits
are float32), both gradients twice (the forward's accumulators and backward's
grad_output-scaled copies), and generous per-row (PER_ROW_BYTES) and per-teacher-entry
(PER_ID_BYTES) allowances for the (N,) and (N, K) vectors, plus SLACK_BYTES.
"""
from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pandas as pd
import torch

# The benchmark (N = 4096, V = 65,536, H = 64, fp32) and a quick one. The chunk is
# fixed (the default at the size) so that the fused loss at N and at N / 4 holds the
# same buffer and any growth with N shows.
MEMORY_SIZES = {"cpu-full": dict(n=4096, v=65536, h=64, chunk=256),
                "cpu-quick": dict(n=1024, v=8192, h=64, chunk=256)}
PROVIDERS = ("slam_bench", "unfused", "dense")
METHODS = ("profiler", "rss")
PER_ROW_BYTES = 64
PER_ID_BYTES = 64
SLACK_BYTES = 4 << 20
RSS_METHOD = ("fresh process: VmHWM - VmRSS over one step, VmHWM reset by /proc/self/clear_refs, "
              "torch's default threads")


def bound_bytes(n: int, v: int, h: int, k_ids: int, chunk: int, logit_bytes: int = 4,
                grad_bytes: int = 4) -> int:
    """The fused claim in bytes. logit_bytes: 4 on the torch backend (float32 chunk buffer),
    the inputs' dtype on Triton; grad_bytes: 4 covers float32 accumulators."""
    grads = 2 * (n * h + v * h + v) * grad_bytes
    return (chunk * v * logit_bytes + grads + n * PER_ROW_BYTES + n * k_ids * PER_ID_BYTES
            + SLACK_BYTES)


def growth_allowance(n: int, n_small: int, h: int, k_ids: int) -> int:
    """What the fused peak may grow by from n_small to n rows: the gradient of hidden (twice)
    and the per-row allowances of `bound_bytes`, no N x V term."""
    return (n - n_small) * (2 * 2 * h * 4 + PER_ROW_BYTES + k_ids * PER_ID_BYTES)


def _step(provider: str, n: int, v: int, h: int, chunk: Optional[int]):
    from slam_bench.profiling import fused_linear_family as FL
    from slam_bench.profiling.sweep import build

    p = FL.make_problem("fused_linear", n, v, "fp32", "cpu", "peaked", backend="torch", h=h,
                        chunk_size=chunk)
    return build(FL.FAMILY, provider, p, "full")


def peak_profiler(provider: str, n: int, v: int, h: int, chunk: Optional[int] = None) -> int:
    from slam_bench.profiling import timing
    return timing.peak_extra_bytes_cpu(_step(provider, n, v, h, chunk)[0])


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _child(provider: str, n: int, v: int, h: int, chunk: Optional[int]) -> dict:
    _step(provider, 8, 64, h, None)[0]()  # load libraries, first-call allocations
    fn, _ = _step(provider, n, v, h, chunk)
    gc.collect()
    before = _status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = _status_kib("VmHWM") <= before + 1024
    except OSError:
        reset = False
    fn()
    return {"peak": (_status_kib("VmHWM") - before) * 1024, "reset": reset,
            "threads": torch.get_num_threads()}


def peak_rss(provider: str, n: int, v: int, h: int, chunk: Optional[int] = None,
             timeout: float = 900) -> dict:
    """{"peak": bytes, "reset": whether the high-water mark could be reset, "threads"}."""
    cmd = [sys.executable, "-m", "slam_bench.profiling.fused_linear_memory", "--child", provider,
           str(n), str(v), str(h), str(chunk or 0)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"memory probe failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_rows(n: int, v: int, h: int, chunk: int, providers=PROVIDERS, methods=METHODS,
                k_ids: int = 64, log: Callable[[str], None] = print) -> List[Dict[str, object]]:
    """One row per (provider, method): peak extra bytes of one forward + backward step, the
    bound of the fused claim, and the ratio of the dense path's peak to this provider's."""
    k_ids = min(k_ids, v)
    bound = bound_bytes(n, v, h, k_ids, chunk)  # the torch backend works in float32
    rows = []
    for method in methods:
        for prov in providers:
            row = dict(provider=prov, method=method, N=n, V=v, H=h, K=k_ids, dtype="fp32",
                       chunk_size=chunk if prov == "slam_bench" else "", bound_bytes=bound)
            if method == "profiler":
                from slam_bench.profiling.timing import PEAK_METHOD
                row.update(peak_bytes=peak_profiler(prov, n, v, h, chunk), threads=1, note="",
                           peak_method=PEAK_METHOD["cpu"])
            else:
                r = peak_rss(prov, n, v, h, chunk)
                row.update(peak_bytes=r["peak"], threads=r["threads"], peak_method=RSS_METHOD,
                           note="" if r["reset"] else "VmHWM reset refused: an upper bound")
            rows.append(row)
            log(f"  {method:<8} {prov:<10} N={n} V={v} H={h} peak "
                f"{row['peak_bytes'] / 2**20:9.1f} MiB (fused bound {bound / 2**20:.1f} MiB)")
    add_dense_ratio(rows)
    return rows


def add_dense_ratio(rows: List[dict]) -> None:
    """rows[i]["dense_over_this"]: the dense path's peak over this row's, per method."""
    for method in {r["method"] for r in rows}:
        dense = [r for r in rows if r["method"] == method and r["provider"] == "dense"]
        for r in rows:
            if r["method"] == method and dense:
                r["dense_over_this"] = dense[0]["peak_bytes"] / max(r["peak_bytes"], 1)


def n_independence(n: int, v: int, h: int, chunk: int, k_ids: int = 64) -> Dict[str, float]:
    """Profiler peaks of the fused step at N and N / 4 rows (same chunk, at most N / 4) and
    what may differ between them (`growth_allowance`)."""
    small = max(1, n // 4)
    chunk = min(chunk, small)
    return {"n": n, "n_small": small, "peak": peak_profiler("slam_bench", n, v, h, chunk),
            "peak_small": peak_profiler("slam_bench", small, v, h, chunk),
            "allowed_growth": growth_allowance(n, small, h, min(k_ids, v))}


def memory_checks(rows: List[dict], growth: Optional[Dict[str, float]]) -> List[dict]:
    """PASS/FAIL rows (report.check_row) of the fused claim, from measured rows: per method,
    the fused peak against its bound; the dense path's peak against N x V x 4 (the probe sees
    the logits) and over the fused peak, for each method that measured the dense path (if
    none did, MISSING for the first); and the growth with N (None: not measured)."""
    from slam_bench.profiling.report import check_row

    out = []
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)] or [METHODS[0]]
    with_dense = [m for m in methods if any(r["method"] == m and r["provider"] == "dense"
                                            for r in rows)] or methods[:1]
    for method in methods:
        mine = [r for r in rows if r["method"] == method and r["provider"] == "slam_bench"]
        val = mine[0]["peak_bytes"] / mine[0]["bound_bytes"] if mine else None
        out.append(check_row(f"fused_linear_slam_loss fwd+bwd peak ({method}) / bound "
                             "(chunk x V x 4 + gradients + O(N K))", val, "<= 1",
                             val is not None and val <= 1))
        if method not in with_dense:
            continue
        dense = [r for r in rows if r["method"] == method and r["provider"] == "dense"]
        val = dense[0]["peak_bytes"] / (dense[0]["N"] * dense[0]["V"] * 4) if dense else None
        out.append(check_row(f"dense path peak ({method}) / N x V x 4: the probe sees the "
                             "logits", val, ">= 1", val is not None and val >= 1))
        val = dense[0]["peak_bytes"] / max(mine[0]["peak_bytes"], 1) if dense and mine else None
        out.append(check_row(f"dense path peak / fused peak ({method})", val, "> 1",
                             val is not None and val > 1))
    val = None if growth is None else \
        (growth["peak"] - growth["peak_small"]) / growth["allowed_growth"]
    n_text = "" if growth is None else f" from N={growth['n_small']} to N={growth['n']}"
    out.append(check_row(f"fused peak growth{n_text} / the O(N (H + K)) allowance (no N x V "
                         "term)", val, "<= 1", val is not None and val <= 1))
    return out


def write_rows(rows: List[dict], out_dir) -> Path:
    """`<out_dir>/<cpu>-fused_linear_memory.csv`: the rows, with the run's metadata where a
    row does not say otherwise (threads and method are per row)."""
    from slam_bench.profiling import report

    device = torch.device("cpu")
    df = pd.DataFrame(rows)
    for key, val in report.run_metadata(device, float("nan"), "").items():
        if key not in df.columns:
            df[key] = val
    stem = report.file_stem(report.device_name(device))
    return report.write_frame(df, Path(out_dir) / f"{stem}-fused_linear_memory.csv")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="internal: one RSS probe (see module doc)")
    parser.add_argument("--child", nargs=5, metavar=("PROVIDER", "N", "V", "H", "CHUNK"),
                        required=True)
    a = parser.parse_args(argv).child
    print(json.dumps(_child(a[0], int(a[1]), int(a[2]), int(a[3]), int(a[4]) or None)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
