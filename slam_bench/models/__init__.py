"""Model registry: suites name their teacher and student; factories are looked up here.

A factory is `factory(input_shape: tuple, num_classes: int, **options) -> Classifier`, where
`input_shape` excludes the batch dimension (e.g. (64,), (1, 28, 28), (1, 40)).
"""
from __future__ import annotations

from typing import Callable, Dict

from slam_bench.models.base import Classifier

MODELS: Dict[str, Callable[..., Classifier]] = {}


def register_model(name: str, factory: Callable[..., Classifier]) -> None:
    if name in MODELS:
        raise ValueError(f"model {name!r} is already registered")
    MODELS[name] = factory


def build_model(name: str, input_shape, num_classes: int, **options) -> Classifier:
    """Build model `name` (a key of MODELS) for inputs of `input_shape` (no batch dim)."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(sorted(MODELS))}; got {name!r}")
    return MODELS[name](tuple(input_shape), int(num_classes), **options)


from slam_bench.models import small as _small  # noqa: E402,F401  (registers mlp, cnn, ...)
from slam_bench.models import paper as _paper  # noqa: E402,F401  (resnet20, ..., text_bag)

__all__ = ["Classifier", "MODELS", "register_model", "build_model"]
