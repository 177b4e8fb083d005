"""The kernels compiled for sm_90 (H100/H200) ahead of time, with Triton's own compiler and
ptxas, at the launch shapes the heuristic picks: no register spills, and 16-byte global loads
wherever the layout is aligned (C = 1000 in bf16, and the peeled odd streamed C). This is the
part of the GPU path a machine without a GPU can check; speed it cannot. The split rows' three
launches (kernels/split_rows.py) are reported with their grid and occupancy."""
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
def test_sm90_codegen_has_no_spills_and_vector_loads_and_split_rows_fill_the_sms():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "slam_bench.kernels.codegen", "--quick"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    header, *lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
    names = header.split()[1:]  # after "launch": grid warps regs spill stack smem occ load store
    rows = {}
    for line in lines:
        label, _, rest = line.partition("  ")  # labels hold single spaces, columns two or more
        rows[label.strip()] = dict(zip(names, rest.split()))
    assert len(rows) == 7, done.stdout  # 4 launches + 1 split launch (stats, combine, grad)
    for label, r in rows.items():
        assert r["spill"] == "0", label
        if not label.endswith("combine"):  # the combine step reads only the small workspace
            assert r["load"] == "16B", label
    # Split rows: the grid fills 2 x 132 SMs (8 rows x 32 ranges), and no split kernel holds
    # more registers than the unsplit streamed kernel at the same dtype.
    split = {k.rsplit(": ", 1)[1]: r for k, r in rows.items() if k.startswith("split")}
    assert split["stats"]["grid"] == "(8,32)" and split["combine"]["grid"] == "(8,)"
    unsplit = int(rows["slam bf16 C=8192 k=5 grad"]["regs"])
    assert all(int(r["regs"]) <= unsplit for r in split.values()), split
    assert all(0 < float(r["occ"]) <= 1 for r in rows.values())
