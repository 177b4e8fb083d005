"""Reproducible splits of a training set into A (labeled), V (validation) and U (unlabeled).

The split depends only on (number of training examples, labeled size, |V|, |U| cap, split
seed), never on the training seed, and its indices are saved beside the results.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from slam_bench.fileio import atomic_write


@dataclass(frozen=True)
class Split:
    """Disjoint int64 index tensors into the training set: a (|A|,), v (|V|,), u (|U|,)."""
    a: Tensor
    v: Tensor
    u: Tensor
    split_seed: int


def make_split(n_train: int, labeled_size: int, n_val: int, split_seed: int,
               max_unlabeled: Optional[int] = None) -> Split:
    """A random permutation of range(n_train) cut into A, then V, then U (capped if asked)."""
    for name, value in (("labeled_size", labeled_size), ("n_val", n_val)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if max_unlabeled is not None and max_unlabeled < 1:
        raise ValueError(f"max_unlabeled must be None or a positive int, got {max_unlabeled!r}")
    if labeled_size + n_val >= n_train:
        raise ValueError(f"labeled_size + n_val = {labeled_size + n_val} leaves no unlabeled "
                         f"examples out of n_train = {n_train}")
    g = torch.Generator().manual_seed(int(split_seed))
    perm = torch.randperm(n_train, generator=g)
    a, v, u = perm[:labeled_size], perm[labeled_size:labeled_size + n_val], perm[labeled_size + n_val:]
    if max_unlabeled is not None:
        u = u[:max_unlabeled]
    return Split(a.sort().values, v.sort().values, u.sort().values, int(split_seed))


def crossfit_folds(a: Tensor, k: int, seed: int) -> list:
    """K disjoint folds covering the labeled indices `a` ((|A|,) int64): a seeded permutation of
    A cut into K near-equal parts, each returned sorted ((~|A|/K,) int64). Fold j is what the
    j-th cross-fitting teacher (trained on A minus fold j) predicts out of sample.

    The folds depend only on (A, k, seed), like the split itself; every fold must hold at least
    one example, so k may not exceed |A|.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k (crossfit_folds) must be an int >= 2, got {k!r}")
    if k > len(a):
        raise ValueError(f"k (crossfit_folds) = {k} exceeds |A| = {len(a)}: a fold would be empty")
    g = torch.Generator().manual_seed(int(seed))
    perm = a[torch.randperm(len(a), generator=g)]
    return [fold.sort().values for fold in torch.tensor_split(perm, k)]


def save_split(split: Split, path: Path) -> None:
    """Write the indices as an .npz (arrays a, v, u, split_seed), atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, a=split.a.numpy(), v=split.v.numpy(), u=split.u.numpy(),
                        split_seed=np.int64(split.split_seed))
    atomic_write(path, buf.getvalue())


def load_split(path: Path) -> Split:
    with np.load(Path(path)) as z:
        return Split(torch.from_numpy(z["a"]), torch.from_numpy(z["v"]), torch.from_numpy(z["u"]),
                     int(z["split_seed"]))
