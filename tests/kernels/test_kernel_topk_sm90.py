"""The top-K kernels compile for a real GPU (sm_90, an H100/H200) without spilling registers.

The interpreter runs the kernels' Python, not Triton's compiler: type errors in the lowering,
and register spills of the on-chip path, show only when compiling. Triton ships ptxas, so the
kernels compile to a cubin here without a GPU (run in a subprocess: this process has
TRITON_INTERPRET=1 set, under which @triton.jit functions cannot be compiled). Not checked here:
that the compiled code runs correctly (races, the barrier before the K scattered stores);
gpu_check does that on a GPU. The spills are read from the ptxas Triton itself uses for sm_90
(3.9 switched to a newer one: its bundled `ptxas` cannot read the PTX 3.9 emits), or any other
that reads the PTX's version; with none, the test skips and says why.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import os, re, shutil, subprocess, sys, tempfile
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from slam_bench.kernels import topk_triton as T

    TARGET = GPUTarget("cuda", 90, 32)

    def ptxas_candidates():
        """The ptxas Triton itself uses for sm_90 first (3.9 picks its newer `ptxas-blackwell`
        there: the bundled `ptxas` cannot read the PTX version 3.9 emits), then the others."""
        found = []
        try:
            from triton.backends.nvidia.compiler import get_ptxas
            found.append(get_ptxas(90).path)
        except (ImportError, AttributeError, TypeError, RuntimeError):
            pass
        try:
            from triton import knobs
            found.append(knobs.nvidia.ptxas.path)
        except (ImportError, AttributeError, RuntimeError):
            pass
        bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
        found += [os.path.join(bindir, "ptxas"), os.path.join(bindir, "ptxas-blackwell"),
                  shutil.which("ptxas")]
        return [p for i, p in enumerate(found) if p and os.path.exists(p) and p not in found[:i]]

    def ptxas_stderr(ptx):
        """`ptxas -v` on the PTX with the first ptxas that accepts its version; or the SKIP
        line (the caller skips) when none does."""
        with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
            f.write(ptx)
        tried = []
        for tool in ptxas_candidates():
            out = subprocess.run([tool, "-v", "--gpu-name=sm_90a", f.name, "-o", os.devnull],
                                 capture_output=True, text=True)
            if out.returncode == 0:
                return out.stderr
            tried.append(f"{tool}: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
        ver = re.search(r"^\\.version (\\S+)", ptx, re.M)
        print(f"SKIP no ptxas found here reads PTX .version {ver.group(1) if ver else '?'} "
              f"(Triton {triton.__version__}); tried: " + "; ".join(tried))
        sys.exit(0)

    def spills(kernel):
        return sum(int(x) for x in re.findall(r"(\\d+) bytes spill stores",
                                              ptxas_stderr(kernel.asm["ptx"])))

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


@pytest.mark.every_kernel
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
    skip = [ln for ln in out.stdout.splitlines() if ln.startswith("SKIP ")]
    if skip:
        pytest.skip(skip[0][5:])
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 5, out.stdout
    for line in lines:
        assert line.endswith("spills 0"), f"register spills: {line}"
