"""Which backend `backend="auto"` picks, per device and dtype (no GPU needed: the choice
is made from metadata before any tensor is touched)."""
import pytest
import torch

from slam_bench.functional import _resolve_backend, _triton_kernel_available


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_auto_uses_the_kernel_for_cuda_low_precision(dtype):
    expected = "triton" if _triton_kernel_available() else "torch"
    assert _resolve_backend("auto", torch.device("cuda"), dtype) == expected


def test_auto_keeps_float64_on_torch_even_on_cuda():
    assert _resolve_backend("auto", torch.device("cuda"), torch.float64) == "torch"


def test_auto_is_torch_on_cpu():
    assert _resolve_backend("auto", torch.device("cpu"), torch.float32) == "torch"


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="backend='triton'"):
        _resolve_backend("triton", torch.device("cpu"), torch.float32)
