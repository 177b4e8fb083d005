"""Ahead-of-time compilation of the loss kernels for a GPU architecture that is not present.

`python -m slam_bench.kernels.codegen [--arch 90] [--quick]` compiles `_slam_kernel` (and the
split rows' three kernels, kernels/split_rows.py) with Triton's own compiler and ptxas, for the
launch shapes that `config.block_config` / `config.launch_layout` / `config.split_parts` choose
at run time, and prints per launch: the grid for the launch's N rows on --sms SMs, warps,
registers per thread, local-memory bytes (spills), shared memory, the theoretical occupancy
(resident warps per SM over 64, from the registers and shared memory), and the widest global
load and store in the PTX. Spills are the local-memory bytes per thread; a small stack frame
(STACK, e.g. 8 bytes with Triton 3.6) is shown apart. It needs Triton's CUDA backend (bundled with the Linux wheels) but
no GPU and no driver; what it cannot tell is speed.

Exits 1 when a launch spills registers to local memory, when a launch whose layout is
16-byte aligned (`Layout.align >= vec`, or peeled) emits no 16-byte global load, or when
compiling fails; the process and its ptxas children are held to --max-memory-gb of address
space (a pathological kernel once took ptxas past 14 GB).
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
from typing import Dict, List, NamedTuple

# Representative launches: (label, logits dtype, C, mixing, taylor, k_hint, write_grad).
LAUNCHES = [
    ("slam bf16 C=1000 k=5 grad", "bf16", 1000, True, 0, 5, True),
    ("slam bf16 C=1000 per-row k grad", "bf16", 1000, True, 0, 0, True),
    ("slam bf16 C=8192 k=5 grad", "bf16", 8192, True, 0, 5, True),
    ("slam bf16 C=8192 k=64 grad", "bf16", 8192, True, 0, 64, True),
    ("slam bf16 C=32000 k=5 grad", "bf16", 32000, True, 0, 5, True),
    ("slam bf16 C=32001 k=5 grad (peeled)", "bf16", 32001, True, 0, 5, True),
    ("slam bf16 C=50257 per-row k grad (peeled)", "bf16", 50257, True, 0, 0, True),
    ("slam bf16 C=128256 k=C grad", "bf16", 128256, True, 0, 128256, True),
    ("distill bf16 C=128256 grad", "bf16", 128256, False, 0, 1, True),
    ("distill bf16 C=1000 fwd only", "bf16", 1000, False, 0, 1, False),
    ("slam fp32 C=1000 k=5 grad", "fp32", 1000, True, 0, 5, True),
    ("slam fp32 C=100 k=5 grad", "fp32", 100, True, 0, 5, True),
    ("taylor bf16 C=32000 grad", "bf16", 32000, False, 2, 1, True),
]
# Split rows (a few wide rows; config.split_parts): (label, dtype, C, mixing, k_hint, N rows).
# Each prints three launches: statistics, combine, gradient.
SPLIT_LAUNCHES = [
    ("split slam bf16 C=128256 k=5 N=8", "bf16", 128256, True, 5, 8),
    ("split slam bf16 C=32000 per-row k N=64", "bf16", 32000, True, 0, 64),
    ("split distill bf16 C=128256 N=8", "bf16", 128256, False, 1, 8),
]
QUICK = {0, 2, 5, 8}
QUICK_SPLIT = {0}
# Unsplit launches are shown for this many rows (the grid only; registers do not depend on N).
DEFAULT_ROWS = 8192
# sm_90 limits per SM: 64k 32-bit registers, 64 resident warps, 32 blocks, 228 KiB shared.
SM_REGS, SM_WARPS, SM_BLOCKS, SM_SHARED = 65536, 64, 32, 228 * 1024
ELEM = {"bf16": 2, "fp16": 2, "fp32": 4}
LOW = {"bf16": 16, "fp16": 13, "fp32": 0}


class Report(NamedTuple):
    label: str
    grid: str
    num_warps: int
    regs: int
    local_bytes: int  # local memory per thread: register spills
    stack: int
    shared: int
    widest_load: int  # bytes
    widest_store: int
    aligned: bool
    occupancy: float  # resident warps per SM / 64 (registers and shared memory permitting)


def occupancy(regs: int, num_warps: int, shared: int) -> float:
    """Theoretical occupancy of a launch on sm_90: blocks per SM limited by registers (whole
    warps of 32 threads x regs, allocated in 256-register units), shared memory and the block
    cap; resident warps over 64."""
    per_warp = -(-max(regs, 1) * 32 // 256) * 256
    by_regs = SM_REGS // (per_warp * num_warps)
    by_smem = SM_SHARED // shared if shared else SM_BLOCKS
    blocks = min(by_regs, by_smem, SM_BLOCKS, SM_WARPS // num_warps)
    return blocks * num_warps / SM_WARPS


def _widest(ptx: str, op: str) -> int:
    best = 0
    for vec, bits in re.findall(rf"{op}\.global(?:\.[a-z_]+)*?(?:\.v(\d))?\.[bfsu](\d+)", ptx):
        best = max(best, int(vec or 1) * int(bits) // 8)
    return best


def _resources(cubin: bytes) -> Dict[str, int]:
    import triton.backends.nvidia as nv
    tool = os.path.join(os.path.dirname(nv.__file__), "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True,
                             text=True, check=True).stdout
    return {k: int(v) for k, v in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", out)}


def _compile(fn, sig: dict, consts: dict, n_ptrs: int, num_warps: int, arch: int):
    """(resources, ptx) of `fn` compiled for sm_`arch`; the first n_ptrs arguments are
    pointers of freshly allocated tensors, which are 16-byte aligned: the runtime JIT marks
    them so, and so do we."""
    import triton
    from triton.backends.compiler import GPUTarget

    sig = {**sig, **{name: "constexpr" for name in consts}}
    attrs = {(i,): [["tt.divisibility", 16]] for i in range(n_ptrs)}
    src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                            options={"num_warps": num_warps})
    return _resources(kernel.asm["cubin"]), kernel.asm["ptx"]


def _report(label, grid, num_warps, res, ptx, aligned) -> Report:
    regs, shared = res.get("REG", -1), res.get("SHARED", 0)
    return Report(label, grid, num_warps, regs, res.get("LOCAL", 0), res.get("STACK", 0),
                  shared, _widest(ptx, "ld"), _widest(ptx, "st"), aligned,
                  occupancy(regs, num_warps, shared))


def compile_launch(label, dtype, c, mixing, taylor, k_hint, write_grad, arch: int,
                   check: bool = True, n_rows: int = DEFAULT_ROWS) -> Report:
    """check: the kernel as `check_values=True` (the default) launches it, writing each row's
    value-check numbers; False as check_values=False does (no stats)."""
    from .config import block_config, launch_layout
    from .slam_triton import EXTRACT_K, _slam_kernel

    cfg = block_config(c)
    lay = launch_layout(c, [c, c] + ([c] if write_grad else []), ELEM[dtype], cfg.single, k_hint)
    ptr = f"*{dtype}"
    sig = {"z_ptr": ptr, "y_ptr": ptr, "dz_ptr": ptr, "alpha_ptr": "*fp32", "s_ptr": "*fp32",
           "k_ptr": "*i32", "gs_ptr": "*fp32", "loss_ptr": "*fp32", "st_ptr": "*fp32"}
    sig.update({name: "i32" for name in ("n_rows", "nc_div", "sz_div", "sy_div", "sdz_div",
                                          "stride_a", "stride_s", "stride_k", "stride_gs")})
    sig["inv_t"] = "fp32"
    consts = dict(MIXING=mixing, ALL_MIXED=bool(mixing and k_hint >= c), TAYLOR=taylor,
                  WRITE_GRAD=write_grad, CHECK=check, SINGLE=cfg.single, ROWS=cfg.rows,
                  BLOCK=cfg.block, ALIGN=lay.align, PEEL=lay.peel, VEC=lay.vec, KCAP=lay.kcap,
                  EXTRACT_K=EXTRACT_K, LOW_BIT=LOW[dtype])
    res, ptx = _compile(_slam_kernel, sig, consts, 9, cfg.num_warps, arch)
    grid = f"({-(-n_rows // cfg.rows)},)"
    return _report(label, grid, cfg.num_warps, res, ptx, lay.peel or lay.align >= lay.vec)


def compile_split(label, dtype, c, mixing, k_hint, n_rows, arch: int, sms: int) -> List[Report]:
    """The split rows' statistics, combine and gradient launches (with the default checks)
    for n_rows rows of C on `sms` SMs; an error if config.split_parts would not split them."""
    import triton

    from .config import block_config, launch_layout, split_parts
    from .slam_triton import EXTRACT_K
    from .split_rows import _split_combine_kernel, _split_grad_kernel, _split_stats_kernel

    cfg = block_config(c)
    lay = launch_layout(c, [c, c, c], ELEM[dtype], cfg.single, k_hint)
    parts, _ = split_parts(n_rows, c, cfg.block, sms)
    if cfg.single or parts < 2:
        raise ValueError(f"{label}: {n_rows} rows of {c} are not split on {sms} SMs")
    ptr, f32 = f"*{dtype}", "*fp32"
    aligned = lay.align >= lay.vec
    i32 = lambda *names: {n: "i32" for n in names}  # noqa: E731
    stats_sig = {"z_ptr": ptr, "y_ptr": ptr, "ps_ptr": f32, "py_ptr": f32, "pz_ptr": f32,
                 **i32("nc_div", "sz_div", "sy_div", "span_div"), "inv_t": "fp32"}
    stats_c = dict(SUMS_ONLY=True, TOPK=mixing, CHECK=True, BLOCK=cfg.block, ALIGN=lay.align,
                   KCAP=lay.kcap)
    comb_sig = {"y_ptr": ptr, "z_ptr": ptr, "ps_ptr": f32, "py_ptr": f32, "pz_ptr": f32,
                "rs_ptr": f32, "alpha_ptr": f32, "s_ptr": f32, "k_ptr": "*i32",
                "loss_ptr": f32, "st_ptr": f32,
                **i32("n_parts", "nc_div", "sz_div", "sy_div", "stride_a", "stride_s",
                      "stride_k"), "inv_t": "fp32"}
    comb_c = dict(MIXING=mixing, CHECK=True, P2=triton.next_power_of_2(parts), BLOCK=cfg.block,
                  ALIGN=lay.align, KCAP=lay.kcap, EXTRACT_K_=EXTRACT_K, LOW_BIT=LOW[dtype])
    grad_sig = {"z_ptr": ptr, "y_ptr": ptr, "dz_ptr": ptr, "rs_ptr": f32, "alpha_ptr": f32,
                "s_ptr": f32, "gs_ptr": f32,
                **i32("nc_div", "sz_div", "sy_div", "sdz_div", "span_div", "stride_a",
                      "stride_s", "stride_gs"), "inv_t": "fp32"}
    grad_c = dict(MIXING=mixing, BLOCK=cfg.block, ALIGN=lay.align)
    out = []
    for what, fn, sig, consts, n_ptrs, warps, grid, vec in (
            ("stats", _split_stats_kernel, stats_sig, stats_c, 5, cfg.num_warps,
             f"({n_rows},{parts})", aligned),
            ("combine", _split_combine_kernel, comb_sig, comb_c, 11, cfg.num_warps,
             f"({n_rows},)", False),
            ("grad", _split_grad_kernel, grad_sig, grad_c, 7, cfg.num_warps,
             f"({n_rows},{parts})", aligned)):
        res, ptx = _compile(fn, sig, consts, n_ptrs, warps, arch)
        out.append(_report(f"{label}: {what}", grid, warps, res, ptx, vec))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slam_bench.kernels.codegen",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability (default 90)")
    parser.add_argument("--quick", action="store_true",
                        help="four representative launches and one split-rows launch")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS,
                        help=f"N of the unsplit launches' grids (default {DEFAULT_ROWS})")
    parser.add_argument("--sms", type=int, default=132,
                        help="SMs the split launches fill (default 132, an H100 SXM)")
    parser.add_argument("--max-memory-gb", type=float, default=6.0,
                        help="address-space limit of this process and ptxas (default 6)")
    args = parser.parse_args(argv)
    limit = int(args.max_memory_gb * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("codegen: unset TRITON_INTERPRET (the interpreter replaces Triton's compiler)",
              file=sys.stderr)
        return 2
    jobs = [(l[0], lambda l=l: [compile_launch(*l, arch=args.arch, n_rows=args.rows)])
            for i, l in enumerate(LAUNCHES) if not args.quick or i in QUICK]
    jobs += [(l[0], lambda l=l: compile_split(*l, arch=args.arch, sms=args.sms))
             for i, l in enumerate(SPLIT_LAUNCHES) if not args.quick or i in QUICK_SPLIT]
    reports: List[Report] = []
    print(f"{'launch':<48} {'grid':>10} warps  regs  spill  stack  smem  occ  load  store")
    for label, job in jobs:
        try:
            done = job()
        except Exception as e:  # noqa: BLE001 - ptxas out of memory, a Triton error: reported
            print(f"{label:<48} failed to compile: {type(e).__name__}: "
                  f"{str(e).splitlines()[0][:200] if str(e) else ''}")
            return 1
        for r in done:
            reports.append(r)
            print(f"{r.label:<48} {r.grid:>10} {r.num_warps:>5} {r.regs:>5} {r.local_bytes:>6} "
                  f"{r.stack:>6} {r.shared:>5} {r.occupancy:>4.2f} {r.widest_load:>4}B "
                  f"{r.widest_store:>4}B", flush=True)
    bad = [r.label for r in reports if r.local_bytes > 0 or (r.aligned and r.widest_load < 16)]
    if bad:
        print("spills or no 16-byte loads: " + "; ".join(bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
