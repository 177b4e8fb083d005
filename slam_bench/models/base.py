"""The model contract every teacher and student follows.

`forward(x)` returns logits (N, num_classes); `forward_features(x)` returns the penultimate
features (N, feature_dim) that VID regresses; `forward(x) == head(forward_features(x))`.
Factories are registered in `slam_bench.models.MODELS` as
`factory(input_shape: tuple, num_classes: int, **options) -> Classifier`.
"""
from __future__ import annotations

from torch import Tensor, nn


class Classifier(nn.Module):
    feature_dim: int

    def __init__(self, body: nn.Module, feature_dim: int, num_classes: int):
        super().__init__()
        self.body, self.feature_dim = body, feature_dim
        self.head = nn.Linear(feature_dim, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))
