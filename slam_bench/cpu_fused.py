"""The compiled CPU bodies of the torch backend, each the loss and dL/dz in one parallel region
over row blocks, at::vec inside: the dense SLaM / distillation loss (cpu_fused.cpp) and the
sparse top-K SLaM loss (cpu_topk.cpp), with what they share in cpu_common.h.

Why compiled: the eager body dispatches about a thousand aten ops per call, each threaded op
with its own barrier, and on a loaded machine every barrier waits for the slowest thread
(docs/cpu_backend.md has the measurements and the alternatives tried).

Built on first use with the system C++ compiler against torch's headers and libraries (a few
seconds; no pybind11, no torch/extension.h), and cached in the user cache directory under a
key of the source hash, torch version and CPU capability, so a fresh process loads the cached
library in milliseconds. It is called through ctypes with raw pointers (ctypes releases the
GIL), so the body dispatches no aten op. It links torch's own libgomp, so its parallel region
runs on the same OpenMP threads as torch's ops.

`library()` returns None when no compiler is found or the build fails (one warning, once);
the torch backend then runs its eager body. SLAM_BENCH_CPU_KERNEL=0 turns the compiled body
off (e.g. to compare the two).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

_SOURCES = tuple(Path(__file__).with_name(f) for f in ("cpu_fused.cpp", "cpu_topk.cpp"))
_HEADERS = (Path(__file__).with_name("cpu_common.h"),)
_LOCK = threading.Lock()
_LIB: Optional[ctypes.CDLL] = None
_TRIED = False

_CAPABILITY_FLAGS = {
    "AVX512": ["-DCPU_CAPABILITY_AVX512", "-DCPU_CAPABILITY=AVX512", "-mavx512f", "-mavx512dq",
               "-mavx512vl", "-mavx512bw", "-mfma"],
    "AVX2": ["-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2", "-mavx2", "-mfma"],
}


def enabled() -> bool:
    """False when SLAM_BENCH_CPU_KERNEL=0 asks for the eager body."""
    return os.environ.get("SLAM_BENCH_CPU_KERNEL", "1") != "0"


def _capability() -> str:
    cap = torch.backends.cpu.get_cpu_capability()
    return cap if cap in _CAPABILITY_FLAGS else "DEFAULT"


def cache_dir() -> Path:
    """Where built libraries live: $SLAM_BENCH_CACHE, else $XDG_CACHE_HOME/slam_bench, else
    ~/.cache/slam_bench; under cpu_fused/."""
    root = os.environ.get("SLAM_BENCH_CACHE")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                            "slam_bench")
    return Path(root) / "cpu_fused"


def library_path() -> Path:
    """The cached library for this source, torch version and CPU capability."""
    src = b"".join(f.read_bytes() for f in _HEADERS + _SOURCES)
    key = hashlib.sha256(src + torch.__version__.encode() + _capability().encode()
                         + str(torch._C._GLIBCXX_USE_CXX11_ABI).encode()).hexdigest()[:16]
    tag = f"{torch.__version__.replace('+', '_')}-{_capability().lower()}-{key}"
    return cache_dir() / f"slam_cpu_{tag}.so"


def _compiler() -> Optional[str]:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def build(out: Path) -> None:
    """Compile the C++ sources into one library `out` (atomically: concurrent builders each write a temporary
    file and rename it). Raises RuntimeError with the compiler's message on failure."""
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++ or clang++)")
    tdir = Path(torch.__file__).parent
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [cxx, "-O3", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-fno-math-errno",
           f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
           *_CAPABILITY_FLAGS.get(_capability(), []),
           f"-I{tdir / 'include'}", *map(str, _SOURCES), "-o", tmp,
           # torch's own libgomp (same soname, already loaded by torch): one OpenMP runtime.
           f"-L{tdir / 'lib'}", "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{tdir / 'lib'}"]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"building the CPU kernel failed: {' '.join(cmd)}\n{res.stderr[-2000:]}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i64, f64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
    for name in ("slam_cpu_f32", "slam_cpu_f64"):
        fn = getattr(lib, name)
        fn.argtypes = [i64, i64, p, p, p, p, p, i64, p, f64, f64, i32, i32, p, p, p]
        fn.restype = ctypes.c_int
    for name in ("slam_topk_cpu_f32", "slam_topk_cpu_f64"):
        fn = getattr(lib, name)
        fn.argtypes = [i64, i64, i64, p, p, p, p, p, p, p, f64, i64, i32, i32, p, p, p]
        fn.restype = ctypes.c_int
    lib.slam_cpu_set_scheduler.argtypes = [ctypes.c_int]
    lib.slam_cpu_set_scheduler.restype = None
    lib.slam_cpu_last_team_size.argtypes = []
    lib.slam_cpu_last_team_size.restype = ctypes.c_int
    lib.slam_cpu_test_throw.argtypes = [ctypes.c_int]
    lib.slam_cpu_test_throw.restype = None
    return lib


def library() -> Optional[ctypes.CDLL]:
    """The compiled body, built or loaded on the first call; None (after one warning) when it
    cannot be built here, or when SLAM_BENCH_CPU_KERNEL=0."""
    global _LIB, _TRIED
    if not enabled():
        return None
    if _TRIED:
        return _LIB
    with _LOCK:
        if not _TRIED:
            try:
                path = library_path()
                if not path.exists():
                    build(path)
                _LIB = _bind(ctypes.CDLL(str(path)))
            except Exception as e:  # no compiler, unwritable cache, failed build or load
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                warnings.warn(f"slam_bench: compiled CPU loss unavailable ({first}); using "
                              f"the slower eager path", RuntimeWarning, stacklevel=3)
                _LIB = None
            _TRIED = True
    return _LIB


def _ptr(t: Optional[Tensor]) -> Optional[int]:
    return None if t is None else t.data_ptr()


def fused_rows(lib: ctypes.CDLL, z: Tensor, y: Tensor, alpha: Optional[Tensor],
               s: Optional[Tensor], k, weight: Optional[Tensor], inv_t: float, inv_n: float,
               mixing: bool, value_checks: bool, want_grad: bool):
    """One call of the compiled body. z, y (N, C) contiguous CPU tensors of one dtype
    (float32 or float64); alpha, s (N,) of that dtype, or None for distillation (alpha = 1);
    k an int or an (N,) int64 tensor; weight None or (N,) of that dtype. Returns (rows (N,):
    the weighted per-row losses, grad (N, C) dL/dz for grad_output = 1 with 1/T, the weight
    and inv_n folded in, or None; stats: the four checks.value_stats numbers)."""
    n, c = z.shape
    rows = torch.empty(n, dtype=z.dtype)
    grad = torch.empty((n, c), dtype=z.dtype) if want_grad else None
    stats = (ctypes.c_double * 4)()
    k_rows, k_all = (None, int(k)) if isinstance(k, int) else (k, 0)
    fn = lib.slam_cpu_f64 if z.dtype == torch.float64 else lib.slam_cpu_f32
    rc = fn(n, c, z.data_ptr(), y.data_ptr(), _ptr(alpha), _ptr(s), _ptr(k_rows), k_all,
            _ptr(weight), inv_t, inv_n, int(mixing), int(value_checks), rows.data_ptr(),
            _ptr(grad), stats)
    if rc != 0:
        raise RuntimeError("the compiled CPU loss failed (out of memory?)")
    return rows, grad, list(stats)


def topk_rows(lib: ctypes.CDLL, z: Tensor, ids: Tensor, p: Tensor, alpha: Tensor, s: Tensor,
              thresh: Tensor, scale: Optional[Tensor], inv_t: float, ignore_index: int,
              mixing: bool, value_checks: bool, out: Optional[Tensor]):
    """One call of the compiled top-K body (the math: slam_bench/vocab/torch_backend.py).
    z (N, V) contiguous CPU float32 or float64; ids (N, K) contiguous int64; p (N, K) and
    alpha, s, thresh (N,) contiguous, of z's dtype; scale (N,) of z's dtype or None (no
    gradient); out None or an (N, V) contiguous buffer of z's dtype, z itself to work in place,
    that ends up holding scale_i * dloss_i/dz when scale is given (untouched otherwise).
    Returns (row losses (N,) of z's dtype, (min z, max z) when value_checks, else None)."""
    n, v = z.shape
    rows = torch.empty(n, dtype=z.dtype)
    stats = (ctypes.c_double * 2)()
    fn = lib.slam_topk_cpu_f64 if z.dtype == torch.float64 else lib.slam_topk_cpu_f32
    rc = fn(n, v, ids.shape[1], z.data_ptr(), ids.data_ptr(), p.data_ptr(), alpha.data_ptr(),
            s.data_ptr(), thresh.data_ptr(), _ptr(scale), inv_t, ignore_index, int(mixing),
            int(value_checks), rows.data_ptr(), _ptr(out), stats)
    if rc != 0:
        raise RuntimeError("the compiled CPU loss failed (out of memory?)")
    return rows, (tuple(stats) if value_checks else None)


if __name__ == "__main__":  # python -m slam_bench.cpu_fused: build now, print where
    import time
    t0 = time.perf_counter()
    p = library_path()
    if p.exists() and "--rebuild" not in sys.argv:
        print(f"cached: {p}")
    else:
        build(p)
        print(f"built {p} in {time.perf_counter() - t0:.1f} s")
