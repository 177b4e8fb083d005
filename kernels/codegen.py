"""Ahead-of-time compilation of the loss kernels for a GPU architecture that is not present.

`python -m slam_bench.kernels.codegen [--arch 90] [--quick]` compiles `_slam_kernel` (and the
backward's `_scale_kernel`) with Triton's own compiler and ptxas, for the launch shapes that
`config.block_config` / `config.launch_layout` choose at run time, and prints per launch:
warps, registers per thread, local-memory bytes (spills), shared memory, and the widest global
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
QUICK = {0, 2, 5, 8}
ELEM = {"bf16": 2, "fp16": 2, "fp32": 4}
LOW = {"bf16": 16, "fp16": 13, "fp32": 0}


class Report(NamedTuple):
    label: str
    num_warps: int
    regs: int
    local_bytes: int  # local memory per thread: register spills
    stack: int
    shared: int
    widest_load: int  # bytes
    widest_store: int
    aligned: bool


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


def compile_launch(label, dtype, c, mixing, taylor, k_hint, write_grad, arch: int,
                   check: bool = True) -> Report:
    """check: the kernel as `check_values=True` (the default) launches it, writing each row's
    value-check numbers; False as check_values=False does (no stats)."""
    import triton
    from triton.backends.compiler import GPUTarget

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
    sig.update({name: "constexpr" for name in consts})
    # Pointer arguments of freshly allocated tensors are 16-byte aligned: the runtime JIT
    # marks them so, and so do we.
    attrs = {(i,): [["tt.divisibility", 16]] for i in range(9)}
    src = triton.compiler.ASTSource(fn=_slam_kernel, signature=sig, constexprs=consts,
                                    attrs=attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                            options={"num_warps": cfg.num_warps})
    res = _resources(kernel.asm["cubin"])
    ptx = kernel.asm["ptx"]
    return Report(label, cfg.num_warps, res.get("REG", -1), res.get("LOCAL", 0),
                  res.get("STACK", 0), res.get("SHARED", 0), _widest(ptx, "ld"),
                  _widest(ptx, "st"), lay.peel or lay.align >= lay.vec)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slam_bench.kernels.codegen",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability (default 90)")
    parser.add_argument("--quick", action="store_true", help="four representative launches")
    parser.add_argument("--max-memory-gb", type=float, default=6.0,
                        help="address-space limit of this process and ptxas (default 6)")
    args = parser.parse_args(argv)
    limit = int(args.max_memory_gb * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("codegen: unset TRITON_INTERPRET (the interpreter replaces Triton's compiler)",
              file=sys.stderr)
        return 2
    launches = [l for i, l in enumerate(LAUNCHES) if not args.quick or i in QUICK]
    reports: List[Report] = []
    print(f"{'launch':<44} warps  regs  spill  stack  smem  load  store")
    for launch in launches:
        try:
            r = compile_launch(*launch, arch=args.arch)
        except Exception as e:  # noqa: BLE001 - ptxas out of memory, a Triton error: reported
            print(f"{launch[0]:<44} failed to compile: {type(e).__name__}: "
                  f"{str(e).splitlines()[0][:200] if str(e) else ''}")
            return 1
        reports.append(r)
        print(f"{r.label:<44} {r.num_warps:>5} {r.regs:>5} {r.local_bytes:>6} {r.stack:>6} "
              f"{r.shared:>5} {r.widest_load:>4}B {r.widest_store:>4}B", flush=True)
    bad = [r.label for r in reports if r.local_bytes > 0 or (r.aligned and r.widest_load < 16)]
    if bad:
        print("spills or no 16-byte loads: " + "; ".join(bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
