"""The paper's benchmarks (docs/method.md section 5) as suites: cifar10, cifar100, celeba,
imagenet, imdb. Their data is read from --data-root / $SLAM_BENCH_DATA (slam_bench.data.paper).

Labeled sizes sweep the low-label regime (1% and 5% of the training split) and larger sizes
where all methods should converge. Teacher / student pairs are standard choices for each
dataset (the paper's pairs are not public) and every number below is recorded in the rows.
Every TrainSpec decays its learning rate to zero (cosine, the pipeline's default), the same
schedule for every method's student.
Smoke variants are tiny: one or two steps on a few dozen examples, to check the wiring.
"""
from __future__ import annotations

from slam_bench.pipeline.suites import ModelSpec, Sizes, Suite, TrainSpec, register_suite

# Published per-channel statistics of the training images (0-1 scale).
CIFAR10_NORM = {"mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)}
CIFAR100_NORM = {"mean": (0.5071, 0.4865, 0.4409), "std": (0.2673, 0.2564, 0.2762)}
# (Also the image models' defaults; written here so that the suite registry, read by the
# command line's parsing, imports no model and so no torch.)
IMAGENET_NORM = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
# Random crop after `pad` pixels of zero padding, plus horizontal flips: 4 px at 32 px (the
# standard CIFAR recipe), 8 px at 64 px (the same fraction of the image).
AUG32 = {"pad": 4, "flip": True}
AUG64 = {"pad": 8, "flip": True}
# Teacher dropout on the pooled features gives UPS its MC-dropout uncertainty.
TEACHER_DROPOUT = 0.1


def _smoke(labeled: int, n_val: int, max_unlabeled: int, batch_size: int = 16) -> Sizes:
    # A two-step teacher on fabricated files: a rate decayed to zero would leave it one step,
    # too few to predict any class it saw, and the smoke checks the plumbing, not the teacher.
    step = TrainSpec(epochs=1, batch_size=batch_size, lr=1e-3, min_steps=2, lr_schedule="constant")
    return Sizes(labeled_sizes=(labeled,), trials=2, n_val=n_val, teacher=step,
                 student=TrainSpec(epochs=1, batch_size=batch_size, lr=1e-3),
                 max_unlabeled=max_unlabeled, mc_passes=2)


_CIFAR_TEACHER = TrainSpec(epochs=200, batch_size=128, lr=0.05, weight_decay=5e-4, optimizer="sgd",
                           min_steps=8000)
_CIFAR_STUDENT = TrainSpec(epochs=60, batch_size=256, lr=0.05, weight_decay=5e-4, optimizer="sgd")

register_suite(Suite(
    name="cifar10", dataset="cifar10",
    teacher_model=ModelSpec("resnet56", {**CIFAR10_NORM, **AUG32, "dropout": TEACHER_DROPOUT}),
    student_model=ModelSpec("resnet20", {**CIFAR10_NORM, **AUG32}),
    full=Sizes(labeled_sizes=(500, 2500, 5000, 10000), trials=3, n_val=500,
               teacher=_CIFAR_TEACHER, student=_CIFAR_STUDENT),
    smoke=_smoke(labeled=10, n_val=10, max_unlabeled=16),
    description="CIFAR-10, 1%/5%/10%/20% labeled; ResNet-56 teacher, ResNet-20 student"))

register_suite(Suite(
    name="cifar100", dataset="cifar100",
    teacher_model=ModelSpec("resnet110", {**CIFAR100_NORM, **AUG32, "dropout": TEACHER_DROPOUT}),
    student_model=ModelSpec("resnet20", {**CIFAR100_NORM, **AUG32}),
    # 1% of CIFAR-100 is 5 images per class: the teacher would be far below the paper's
    # 50-85% regime, so the sweep starts at 5%.
    full=Sizes(labeled_sizes=(2500, 5000, 10000, 20000), trials=3, n_val=500,
               teacher=_CIFAR_TEACHER, student=_CIFAR_STUDENT),
    smoke=_smoke(labeled=10, n_val=10, max_unlabeled=16),
    description="CIFAR-100 fine labels, 5%/10%/20%/40% labeled; ResNet-110 teacher, ResNet-20 student"))

register_suite(Suite(
    name="celeba", dataset="celeba", dataset_options={"attribute": "Smiling", "image_size": 64},
    teacher_model=ModelSpec("resnet18", {**IMAGENET_NORM, **AUG64, "stem": "small_s2",
                                         "dropout": TEACHER_DROPOUT}),
    student_model=ModelSpec("mobilenet_v2", {**IMAGENET_NORM, **AUG64, "width_mult": 0.5}),
    # 162,770 training faces: 0.1%, 1%, 5%, 10%.
    full=Sizes(labeled_sizes=(163, 1628, 8139, 16277), trials=3, n_val=500,
               teacher=TrainSpec(epochs=30, batch_size=128, lr=1e-3, weight_decay=0.0,
                                 optimizer="adam", min_steps=3000),
               student=TrainSpec(epochs=10, batch_size=256, lr=1e-3, optimizer="adam")),
    # 64 px ResNets cost ~1-3 GFLOP per image: the smoke run touches only a few dozen images.
    smoke=_smoke(labeled=6, n_val=4, max_unlabeled=4, batch_size=2),
    description="CelebA 'Smiling' (k = 2) at 64 px; ResNet-18 teacher, MobileNetV2-0.5 student"))

register_suite(Suite(
    name="imagenet", dataset="imagenet", dataset_options={"image_size": 64},
    teacher_model=ModelSpec("resnet50", {**IMAGENET_NORM, **AUG64, "stem": "small_s2",
                                         "dropout": TEACHER_DROPOUT}),
    student_model=ModelSpec("resnet18", {**IMAGENET_NORM, **AUG64, "stem": "small_s2"}),
    # 1,281,167 training images: 1%, 5%, 10%.
    full=Sizes(labeled_sizes=(12812, 64058, 128117), trials=2, n_val=5000,
               teacher=TrainSpec(epochs=40, batch_size=256, lr=0.1, weight_decay=5e-5,
                                 optimizer="sgd", min_steps=20000),
               student=TrainSpec(epochs=16, batch_size=512, lr=0.1, weight_decay=5e-5,
                                 optimizer="sgd")),
    smoke=_smoke(labeled=6, n_val=4, max_unlabeled=4, batch_size=2),
    description="ImageNet-1k at 64 px, 1%/5%/10% labeled; ResNet-50 teacher, ResNet-18 student"))

# The model's vocabulary size must cover the loader's ids: both come from this one number.
IMDB_VOCAB = 20000
register_suite(Suite(
    name="imdb", dataset="imdb",
    dataset_options={"vocab_size": IMDB_VOCAB, "max_len": 256, "min_freq": 2},
    teacher_model=ModelSpec("text_transformer", {"vocab_size": IMDB_VOCAB, "d_model": 128,
                                                 "n_heads": 4, "n_layers": 2, "dropout": 0.1}),
    student_model=ModelSpec("text_bag", {"vocab_size": IMDB_VOCAB, "embed_dim": 64, "hidden": 64}),
    # 25,000 training reviews: 1%, 2%, 5%, 10%.
    full=Sizes(labeled_sizes=(250, 500, 1250, 2500), trials=5, n_val=500,
               teacher=TrainSpec(epochs=20, batch_size=64, lr=3e-4, weight_decay=0.01,
                                 optimizer="adam", min_steps=1500),
               student=TrainSpec(epochs=10, batch_size=128, lr=1e-3, optimizer="adam")),
    smoke=_smoke(labeled=10, n_val=10, max_unlabeled=16),
    description="IMDB sentiment (k = 2); transformer teacher, EmbeddingBag student"))
