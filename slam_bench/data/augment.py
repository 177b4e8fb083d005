"""Batched image augmentation and normalization on whatever device the batch lives on.

The paper-scale suites keep uint8 images on the GPU; these helpers turn a uint8 batch into a
normalized float batch without a host round trip or a per-image Python loop.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_images(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(f"{name} must be an image batch tensor (N, C, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")


def random_crop_flip(x: Tensor, padding: int = 4, flip: bool = True,
                     generator: Optional[torch.Generator] = None) -> Tensor:
    """Random crop of the zero-padded image back to (H, W) and random horizontal flip.

    x: (N, C, H, W), any dtype, any device. One gather builds the whole batch: each image
    gets its own offset in [0, 2 * padding] per axis and a flip with probability 1/2.
    `generator` must live on x's device (draws are then reproducible).
    """
    _check_images(x)
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an int >= 0, got {padding!r}")
    n, c, h, w = x.shape
    dev = x.device
    xp = F.pad(x, (padding,) * 4) if padding else x
    dy = torch.randint(0, 2 * padding + 1, (n, 1), device=dev, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), device=dev, generator=generator)
    rows = dy + torch.arange(h, device=dev)                        # (N, H)
    cols = torch.arange(w, device=dev).expand(n, w)
    if flip:
        do = torch.rand((n, 1), device=dev, generator=generator) < 0.5
        cols = torch.where(do, (w - 1) - cols, cols)
    cols = dx + cols                                               # (N, W)
    idx_n = torch.arange(n, device=dev).view(n, 1, 1, 1)
    idx_c = torch.arange(c, device=dev).view(1, c, 1, 1)
    return xp[idx_n, idx_c, rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]


def channel_stats(x: Tensor, chunk: int = 8192) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images (N, C, H, W) on the 0-1 scale, in float64.

    Chunked so a large split never becomes one float copy.
    """
    _check_images(x)
    s = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    s2 = torch.zeros_like(s)
    for i in range(0, x.shape[0], chunk):
        b = x[i:i + chunk].to(torch.float64) / 255.0
        s += b.sum((0, 2, 3))
        s2 += (b * b).sum((0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / max(count, 1)
    std = (s2 / max(count, 1) - mean ** 2).clamp_min(0).sqrt()
    return mean.tolist(), std.tolist()


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float],
              dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 (N, C, H, W) -> `dtype` (x / 255 - mean) / std, per channel."""
    _check_images(x)
    if len(mean) != x.shape[1] or len(std) != x.shape[1] or min(std) <= 0:
        raise ValueError(f"mean and std must have {x.shape[1]} entries (std > 0), got {mean}, {std}")
    m = torch.tensor(mean, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    return (x.to(dtype) / 255.0 - m) / s
