"""Peak extra memory of `fused_linear_slam_loss` (forward + backward) against the dense path,
on CPU (torch backend), float32.

The claim under test: the fused loss needs at most one chunk_size x V buffer of logits plus
the gradients (N x H, V x H, V) and O(N x K) row data, independent of N; the dense path
(F.linear, then slam_loss) holds N x V logits and their N x V gradient.

Two measurements, each able to fail:
- "profiler": torch's CPU allocator reports every allocation and free to torch.profiler
  (timing.peak_extra_bytes_cpu, one torch thread): the largest running sum over one step.
  Exact for tensors; blind to memory outside torch's allocator (BLAS scratch, Python objects).
- "rss": a fresh subprocess builds the inputs, runs one tiny step to load the libraries,
  resets the kernel's resident-set high-water mark (writing 5 to /proc/self/clear_refs), runs
  one step and reads VmHWM - VmRSS before: everything the process touched, at torch's default
  thread count. If the reset is refused the input construction's own peak stays in the mark,
  so the number can only be too high, never too low; the row says whether the reset worked.
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

from slam_bench.fused_linear import default_chunk_size
from slam_bench.profiling import timing
from slam_bench.profiling import vocab as VP

# The issue's benchmark: N = 4096, V = 65,536, H = 64, float32.
ISSUE_SIZE = dict(n=4096, v=65536, h=64)
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


def _step(provider: str, n: int, v: int, h: int, chunk: Optional[int]):
    p = VP.make_problem("fused_linear", n, v, torch.float32, "cpu", h=h, backend="torch",
                        chunk_size=chunk)
    return p, VP.build(provider, p, "full")


def peak_profiler(provider: str, n: int, v: int, h: int, chunk: Optional[int] = None) -> int:
    _, fn = _step(provider, n, v, h, chunk)
    return timing.peak_extra_bytes_cpu(fn)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _child(provider: str, n: int, v: int, h: int, chunk: Optional[int]) -> dict:
    _step(provider, 8, 64, h, None)[1]()  # load libraries, first-call allocations
    _, fn = _step(provider, n, v, h, chunk)
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
    cmd = [sys.executable, "-m", "slam_bench.profiling.vocab_memory", "--child", provider,
           str(n), str(v), str(h), str(chunk or 0)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"memory probe failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_rows(n: int, v: int, h: int, chunk: Optional[int] = None,
                providers=PROVIDERS, methods=METHODS,
                log: Callable[[str], None] = print) -> List[Dict[str, object]]:
    """One row per (provider, method): peak extra bytes of one forward + backward step, the
    bound of the fused claim, and the ratio of the dense path's peak to this provider's."""
    chunk = chunk or default_chunk_size(n, v)
    k_ids = min(VP.K_TEACHER, v)
    bound = bound_bytes(n, v, h, k_ids, chunk)  # the torch backend works in float32
    rows = []
    for method in methods:
        for prov in providers:
            row = dict(provider=prov, method=method, N=n, V=v, H=h, K=k_ids, dtype="fp32",
                       chunk_size=chunk if prov == "slam_bench" else "", bound_bytes=bound)
            if method == "profiler":
                row.update(peak_bytes=peak_profiler(prov, n, v, h, chunk), threads=1, note="",
                           peak_method=timing.PEAK_METHOD["cpu"])
            else:
                r = peak_rss(prov, n, v, h, chunk)
                row.update(peak_bytes=r["peak"], threads=r["threads"], peak_method=RSS_METHOD,
                           note="" if r["reset"] else "VmHWM reset refused: an upper bound")
            rows.append(row)
            log(f"  {method:<8} {prov:<10} N={n} V={v} H={h} peak "
                f"{row['peak_bytes'] / 2**20:9.1f} MiB (fused bound {bound / 2**20:.1f} MiB)")
        dense = [r for r in rows if r["method"] == method and r["provider"] == "dense"]
        for r in rows:
            if r["method"] == method and dense:
                r["dense_over_this"] = dense[0]["peak_bytes"] / max(r["peak_bytes"], 1)
    return rows


def n_independence(n: int, v: int, h: int, chunk: Optional[int] = None) -> Dict[str, float]:
    """Profiler peaks of the fused step at N and N / 4 rows and what may differ: the per-row
    allowance of `bound_bytes` for the extra 3N/4 rows. The claim holds once N reaches the
    chunk size (the buffer has min(chunk, N) rows), so the chunk is at most N / 4 here."""
    small = max(1, n // 4)
    chunk = min(chunk or default_chunk_size(n, v), small)
    k_ids = min(VP.K_TEACHER, v)
    per_row = 2 * 2 * h * 4 + PER_ROW_BYTES + k_ids * PER_ID_BYTES
    return {"n": n, "n_small": small, "peak": peak_profiler("slam_bench", n, v, h, chunk),
            "peak_small": peak_profiler("slam_bench", small, v, h, chunk),
            "allowed_growth": (n - small) * per_row}


def memory_checks(rows: List[dict], growth: Dict[str, float]) -> List[dict]:
    """PASS/FAIL rows (report.check_row) of the fused claim, from measured rows: per method
    measured, the fused peak against its bound and (where measured) the dense path's peak
    against N x V x 4; and the growth with N."""
    from slam_bench.profiling.report import check_row

    out = []
    for method in [m for m in METHODS if any(r["method"] == m for r in rows)]:
        mine = [r for r in rows if r["method"] == method and r["provider"] == "slam_bench"]
        val = mine[0]["peak_bytes"] / mine[0]["bound_bytes"] if mine else None
        out.append(check_row(f"fused_linear_slam_loss fwd+bwd peak ({method}) / bound "
                             "(chunk x V x 4 + gradients + O(N K))", val, "<= 1",
                             val is not None and val <= 1))
        dense = [r for r in rows if r["method"] == method and r["provider"] == "dense"]
        if dense:
            val = dense[0]["peak_bytes"] / (dense[0]["N"] * dense[0]["V"] * 4)
            out.append(check_row(f"dense path peak ({method}) / N x V x 4: the probe sees the "
                                 "logits", val, ">= 1", val >= 1))
    val = (growth["peak"] - growth["peak_small"]) / growth["allowed_growth"]
    out.append(check_row(f"fused peak growth from N={growth['n_small']} to N={growth['n']} / "
                         "the O(N (H + K)) allowance (no N x V term)", val, "<= 1", val <= 1))
    return out


def write_rows(rows: List[dict], out_dir) -> str:
    """`<out_dir>/<cpu>-fused_linear_memory.csv`: the rows, with the run's metadata where a
    row does not say otherwise (threads and method are per row)."""
    from slam_bench.profiling import report

    device = torch.device("cpu")
    df = pd.DataFrame(rows)
    for key, val in report.run_metadata(device, float("nan"), "fused_linear_memory", "").items():
        if key not in df.columns:
            df[key] = val
    stem = report.file_stem(report.device_name(device))
    return report.write_csv(df, Path(out_dir), f"{stem}-fused_linear_memory")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="internal: one RSS probe (see module doc)")
    parser.add_argument("--child", nargs=5, metavar=("PROVIDER", "N", "V", "H", "CHUNK"),
                        required=True)
    a = parser.parse_args(argv).child
    print(json.dumps(_child(a[0], int(a[1]), int(a[2]), int(a[3]), int(a[4]) or None)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
