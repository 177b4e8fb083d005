"""The top-K kernels compile for a real GPU (sm_90, an H100/H200) without spilling registers.

The interpreter runs the kernels' Python, not Triton's compiler: type errors in the lowering,
and register spills of the on-chip path, show only when compiling. Triton ships ptxas, so the
kernels compile to a cubin here without a GPU (run in a subprocess: this process has
TRITON_INTERPRET=1 set, under which @triton.jit functions cannot be compiled). Not checked here:
that the compiled code runs correctly (races, the barrier before the K scattered stores);
gpu_check does that on a GPU.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import os, re, subprocess, sys, tempfile
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from slam_bench.kernels import topk_triton as T

    PTXAS = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                         "ptxas")
    TARGET = GPUTarget("cuda", 90, 32)

    def spills(kernel):
        with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
            f.write(kernel.asm["ptx"])
        out = subprocess.run([PTXAS, "-v", "--gpu-name=sm_90a", f.name, "-o", os.devnull],
                             capture_output=True, text=True, check=True).stderr
        return sum(int(x) for x in re.findall(r"(\\d+) bytes spill stores", out))

    def signature(fn, z_type, scalars):
        types = {}
        for name in fn.arg_names:
            if name in ("z_ptr", "dz_ptr"):
                types[name] = z_type
            elif name.endswith("_ptr"):
                types[name] = "*i64" if name == "ids_ptr" else "*fp32"
            elif name.isupper():
                types[name] = "constexpr"
            else:
                types[name] = scalars.get(name, "i64" if name.startswith("stride") else "i32")
        return types

    scalars = {"inv_t": "fp32"}
    # bf16: both paths of the fused chunk step and the backward; fp32: the on-chip path, which
    # holds the most registers (a full row tile of fp32).
    for z_type, paths in (("*bf16", ((T.MAX_SINGLE_BLOCK, True), (T.STREAM_BLOCK, False))),
                          ("*fp32", ((T.MAX_SINGLE_BLOCK, True),))):
        for block, single in paths:
            fn = T._topk_loss_kernel
            src = ASTSource(fn=fn, signature=signature(fn, z_type, scalars),
                            constexprs=dict(MIXING=True, WRITE_GRAD=True, K_PAD=64, BLOCK=block,
                                            SINGLE=single))
            k = triton.compile(src, target=TARGET,
                               options={"num_warps": T.launch_config(block, 64)[3]})
            assert "bar.sync" in k.asm["ptx"], "the barrier before the K stores is missing"
            print("loss", z_type, block, "spills", spills(k))
        fn = T._topk_grad_kernel
        src = ASTSource(fn=fn, signature=signature(fn, z_type, scalars),
                        constexprs=dict(MIXING=True, K_PAD=64, BLOCK=T.STREAM_BLOCK))
        k = triton.compile(src, target=TARGET,
                           options={"num_warps": T.launch_config(T.STREAM_BLOCK, 64)[3]})
        print("grad", z_type, "spills", spills(k))
''')


def test_kernels_compile_for_sm90_without_spills(tmp_path):
    pytest.importorskip("triton")
    from triton.backends import backends
    if "nvidia" not in backends:
        pytest.skip("this Triton build has no NVIDIA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # compile for real, not from a cache
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 5, out.stdout
    for line in lines:
        assert line.endswith("spills 0"), f"register spills: {line}"
