"""CPU-sized models for the embedded suites: `linear`, `mlp`, `cnn` (2-D), `cnn1d`.

Every model accepts the dataset tensors as stored (uint8 images are scaled to [0, 1] inside
the model, so whole splits stay uint8 in memory) and has a `dropout` option: the teacher's
dropout is what MC-dropout (UPS uncertainty) samples.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from slam_bench.models import register_model
from slam_bench.models.base import Classifier


class ToFloat(nn.Module):
    """uint8 images -> float in [0, 1]; float inputs pass through unchanged."""

    def forward(self, x: Tensor) -> Tensor:
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _check_dropout(dropout: float) -> float:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
    return float(dropout)


def linear(input_shape, num_classes: int, *, dropout: float = 0.0) -> Classifier:
    """Logistic regression on the flattened input; features are the (dropped-out) input."""
    d = math.prod(input_shape)
    body = nn.Sequential(ToFloat(), nn.Flatten(), nn.Dropout(_check_dropout(dropout)))
    return Classifier(body, d, num_classes)


def mlp(input_shape, num_classes: int, *, hidden: Sequence[int] = (128,),
        dropout: float = 0.1) -> Classifier:
    """ReLU MLP on the flattened input; features are the last hidden layer (N, hidden[-1])."""
    hidden = tuple(int(h) for h in hidden)
    if not hidden or min(hidden) < 1:
        raise ValueError(f"hidden must be a non-empty sequence of positive ints, got {hidden}")
    p = _check_dropout(dropout)
    layers, d = [ToFloat(), nn.Flatten()], math.prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU(), nn.Dropout(p)]
        d = h
    return Classifier(nn.Sequential(*layers), d, num_classes)


def _conv_stack(conv, channels, input_shape, p, pool, head: str):
    """Strided conv layers, then "avg" (global average pool) or "flatten" (keeps position,
    which MNIST-1D needs: its classes differ by where features are, not only which)."""
    if head not in ("avg", "flatten"):
        raise ValueError(f"head must be 'avg' or 'flatten', got {head!r}")
    layers, in_ch = [ToFloat()], input_shape[0]
    for ch in channels:
        # Stride 2 halves the resolution each layer: cheap on CPU, no pooling layers needed.
        layers += [conv(in_ch, ch, 3, stride=2, padding=1), nn.ReLU(), nn.Dropout(p)]
        in_ch = ch
    layers += ([pool(1)] if head == "avg" else []) + [nn.Flatten()]
    body = nn.Sequential(*layers)
    with torch.no_grad():
        dim = body.eval()(torch.zeros(1, *input_shape)).shape[1]
    return body, dim


def cnn(input_shape, num_classes: int, *, channels: Sequence[int] = (16, 32, 64),
        dropout: float = 0.1, head: str = "avg") -> Classifier:
    """Strided 3x3 conv stack for (C, H, W) images; features pooled ("avg") or flattened."""
    if len(input_shape) != 3:
        raise ValueError(f"cnn needs input_shape (C, H, W), got {input_shape}")
    body, d = _conv_stack(nn.Conv2d, [int(c) for c in channels], input_shape,
                          _check_dropout(dropout), nn.AdaptiveAvgPool2d, head)
    return Classifier(body, d, num_classes)


def cnn1d(input_shape, num_classes: int, *, channels: Sequence[int] = (32, 64, 64),
          dropout: float = 0.1, head: str = "avg") -> Classifier:
    """Strided 1-D conv stack for (C, L) sequences; features pooled ("avg") or flattened."""
    if len(input_shape) != 2:
        raise ValueError(f"cnn1d needs input_shape (C, L), got {input_shape}")
    body, d = _conv_stack(nn.Conv1d, [int(c) for c in channels], input_shape,
                          _check_dropout(dropout), nn.AdaptiveAvgPool1d, head)
    return Classifier(body, d, num_classes)


for _name, _factory in (("linear", linear), ("mlp", mlp), ("cnn", cnn), ("cnn1d", cnn1d)):
    register_model(_name, _factory)
