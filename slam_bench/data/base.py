"""The one dataset type every suite trains on: tensors in memory.

Loaders (one function per dataset, registered in `slam_bench.data`) return a `Dataset`.
Images are kept as uint8 (N, C, H, W) so a whole split fits on a GPU; vectors and sequences
as float32; token ids as int64 (N, L). Labels are int64 (N,) in [0, num_classes).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the registry imports this module without torch
    from torch import Tensor


@dataclass
class Dataset:
    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    # "vector" (N, D) float32 | "sequence" (N, 1, L) float32 | "image" (N, C, H, W) uint8
    # | "tokens" (N, L) int64 (0 = padding).
    input_kind: str
    meta: dict = field(default_factory=dict)  # e.g. {"vocab_size": ...}; logged with results

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.shape[0] != y.shape[0]:
                raise ValueError(f"{self.name}: x_{split} has {x.shape[0]} rows, y_{split} {y.shape[0]}")
