"""The kernels compiled for sm_90 (H100/H200) ahead of time, with Triton's own compiler and
ptxas, at the launch shapes the heuristic picks: no register spills, and 16-byte global loads
wherever the layout is aligned (C = 1000 in bf16, and the peeled odd streamed C). This is the
part of the GPU path a machine without a GPU can check; speed it cannot."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")


def _nvidia_tools_present() -> bool:
    try:
        import triton.backends.nvidia as nv
    except ImportError:
        return False
    return all((Path(nv.__file__).parent / "bin" / tool).exists() for tool in ("ptxas", "cuobjdump"))


@pytest.mark.skipif(not _nvidia_tools_present(), reason="Triton's CUDA backend (ptxas) is not installed")
def test_sm90_codegen_has_no_spills_and_vector_loads():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "slam_bench.kernels.codegen", "--quick"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [ln for ln in done.stdout.splitlines()[1:] if ln.strip()]
    assert len(lines) == 4
    for line in lines:
        *_, spill, _stack, _smem, load, _store = line.split()
        assert spill == "0" and load == "16B", line
