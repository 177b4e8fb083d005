"""CIFAR ResNets (He et al., CVPR 2016, section 4.2): ResNet-20/32/44/56/110.

Depth 6n + 2: a 3x3 conv to 16 channels, then three stages of n basic blocks at 16, 32, 64
channels (the 2nd and 3rd start with stride 2), global average pooling, a linear head.
Shortcuts are the paper's option A by default (identity, with the stride-2 ones subsampling
and zero-padding the new channels: no parameters), which gives the paper's parameter counts
(0.27M / 0.85M / 1.7M for ResNet-20 / 56 / 110); `shortcut="B"` uses 1x1 projections instead.
Input: float (N, 3, H, W), any H, W (designed for 32 x 32); features (N, 64).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from slam_bench.models.base import Classifier

DEPTHS = (20, 32, 44, 56, 110)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.pad = stride, c_out - c_in
        self.proj = None
        if (stride != 1 or c_in != c_out) and shortcut == "B":
            self.proj = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def _shortcut(self, x: Tensor) -> Tensor:
        if self.proj is not None:
            return self.proj(x)
        if self.stride != 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.pad:
            # Option A: new channels are zeros, split evenly before and after the old ones.
            x = F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return x

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self._shortcut(x))


def _body(depth: int, shortcut: str, width: int, dropout: float) -> nn.Sequential:
    n = (depth - 2) // 6
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    c_in = width
    for stage, c_out in enumerate((width, 2 * width, 4 * width)):
        for i in range(n):
            layers.append(BasicBlock(c_in, c_out, 2 if (stage > 0 and i == 0) else 1, shortcut))
            c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def resnet_cifar(input_shape: tuple, num_classes: int, *, depth: int = 20, shortcut: str = "A",
                 width: int = 16, dropout: float = 0.0) -> Classifier:
    """A CIFAR ResNet of `depth` (6n + 2) for float (N, 3, H, W) input; features (N, 4 * width).

    `width` is the first stage's channel count (16 in the paper). `dropout` (not in the
    paper) acts on the pooled features, so a teacher can give MC-dropout uncertainty (UPS).
    """
    if len(input_shape) != 3 or input_shape[0] != 3:
        raise ValueError(f"input_shape must be (3, H, W) for a CIFAR ResNet, got {tuple(input_shape)}")
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {DEPTHS} (6n + 2), got {depth!r}")
    if shortcut not in ("A", "B"):
        raise ValueError(f"shortcut must be 'A' (zero-pad identity) or 'B' (1x1 projection), got {shortcut!r}")
    if width % 2:
        raise ValueError(f"width must be even (option A pads channels in halves), got {width!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
    return Classifier(_body(depth, shortcut, width, dropout), 4 * width, num_classes)


def resnet20(input_shape, num_classes, **options) -> Classifier:
    return resnet_cifar(input_shape, num_classes, depth=20, **options)


def resnet56(input_shape, num_classes, **options) -> Classifier:
    return resnet_cifar(input_shape, num_classes, depth=56, **options)


def resnet110(input_shape, num_classes, **options) -> Classifier:
    return resnet_cifar(input_shape, num_classes, depth=110, **options)
