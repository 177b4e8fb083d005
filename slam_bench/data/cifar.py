"""CIFAR-10 and CIFAR-100 from the official python pickle batches (Krizhevsky, 2009).

Layout under the data root:
    cifar-10-batches-py/{data_batch_1..data_batch_5, test_batch, batches.meta}
    cifar-100-python/{train, test, meta}
Each batch is a pickled dict with b'data' (n, 3072) uint8 (1024 red, 1024 green, 1024 blue
values, row-major 32x32) and b'labels' (CIFAR-10) or b'fine_labels' (CIFAR-100) lists.

The train order is data_batch_1..5 concatenated, each in file order; cached teacher outputs
and saved split indices refer to this order (every loader of these files must agree on it).

The files are pickles, and a pickle can run any code when loaded or describe gigabytes in a
few hundred bytes. They are read with slam_bench.data.safe_pickle, which scans the opcodes
before building anything: only the numpy and codec names a real batch refers to (under pickle
protocols 2 to 5), with bounded size and nesting. A file that asks for more is rejected, naming
the file, before any of it is built.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from slam_bench.data.base import Dataset
from slam_bench.data import safe_pickle
from slam_bench.data.files import MalformedDataError, PathLike, data_root, require
from slam_bench.data.paper import CIFAR10_DIR, CIFAR10_TRAIN, CIFAR100_DIR
_PIXELS = 3 * 32 * 32
# CIFAR-100's train file, the largest, is 155 MB; anything far above is not a CIFAR file and is
# not read into memory.
MAX_FILE_BYTES = 512 << 20
_FORMAT = "a CIFAR python pickle (dict with b'data' (n, 3072) uint8 and b'{key}')"


def _unpickle(path: Path, expected: str) -> dict:
    require(path, expected)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise MalformedDataError(path, f"is {size} bytes; a CIFAR file is at most about 160 MB "
                                       f"(limit {MAX_FILE_BYTES}). Expected {expected}")
    try:
        data = path.read_bytes()
        # The official batches were pickled by Python 2: byte-string keys.
        obj = safe_pickle.load(data, encoding="bytes")
    except safe_pickle.RefusedGlobal as e:
        raise MalformedDataError(path, f"is a pickle that refers to {e}, which no CIFAR batch "
                                       f"holds; refused (loading such a pickle can run any "
                                       f"code). Expected {expected}") from None
    except safe_pickle.UnsafePickle as e:
        raise MalformedDataError(path, f"is a pickle that {e}; refused before building it. "
                                       f"Expected {expected}") from None
    except Exception as e:  # a truncated or foreign file can raise almost anything
        raise MalformedDataError(path, f"cannot unpickle ({type(e).__name__}: {e}); expected {expected}") from e
    if not isinstance(obj, dict):
        raise MalformedDataError(path, f"holds a {type(obj).__name__}, expected {expected}")
    return obj


def _int_labels(path: Path, key: bytes, labels) -> np.ndarray:
    """A flat list (or 1-D integer array) of labels; checked before numpy converts it, so a
    nested list is an error here rather than an array of its expanded size."""
    if isinstance(labels, np.ndarray):
        return labels
    if not isinstance(labels, (list, tuple)) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels):
        raise MalformedDataError(path, f"{key!r} must be a list of integer labels, got "
                                       f"{type(labels).__name__}")
    try:
        return np.asarray(labels, dtype=np.int64)
    except OverflowError:
        raise MalformedDataError(path, f"{key!r} has labels outside int64") from None


def _read_batch(path: Path, label_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    expected = _FORMAT.format(key=label_key.decode())
    d = _unpickle(path, expected)
    for key in (b"data", label_key):
        if key not in d:
            raise MalformedDataError(path, f"has no key {key!r} (keys: {sorted(d)}); expected {expected}")
    x = d[b"data"]
    if not isinstance(x, np.ndarray):
        raise MalformedDataError(path, f"b'data' is a {type(x).__name__}, expected a uint8 "
                                       f"numpy array (n, {_PIXELS})")
    y = _int_labels(path, label_key, d[label_key])
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != _PIXELS:
        raise MalformedDataError(path, f"b'data' is {x.dtype} {x.shape}, expected uint8 (n, {_PIXELS})")
    if y.ndim != 1 or y.shape[0] != x.shape[0] or not np.issubdtype(y.dtype, np.integer):
        raise MalformedDataError(path, f"{label_key!r} has shape {y.shape} dtype {y.dtype}, "
                                       f"expected {x.shape[0]} integer labels")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise MalformedDataError(path, f"{label_key!r} has labels outside [0, {num_classes})")
    return x, y


def _label_names(path: Path, key: bytes, num_classes: int) -> list[str]:
    d = _unpickle(path, f"a CIFAR meta pickle with {key!r}")
    names = d.get(key)
    if not isinstance(names, list) or len(names) != num_classes:
        raise MalformedDataError(path, f"{key!r} must list {num_classes} class names")
    try:
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    except UnicodeDecodeError as e:
        raise MalformedDataError(path, f"{key!r} holds a class name that is not UTF-8 ({e})") from None


def _to_dataset(name, train, test, num_classes, meta) -> Dataset:
    def images(parts):
        x = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
        y = np.concatenate([p[1] for p in parts]).astype(np.int64)
        return torch.from_numpy(x.copy()), torch.from_numpy(y)

    x_train, y_train = images(train)
    x_test, y_test = images(test)
    return Dataset(name, x_train, y_train, x_test, y_test, num_classes, "image", meta)


def load_cifar10(root: Optional[PathLike] = None) -> Dataset:
    """CIFAR-10: x uint8 (50000, 3, 32, 32) train / (10000, 3, 32, 32) test, y int64 in [0, 10)."""
    base = data_root(root) / CIFAR10_DIR
    require(base, f"the CIFAR-10 python folder {CIFAR10_DIR}/ under the data root", is_dir=True)
    train = [_read_batch(base / n, b"labels", 10) for n in CIFAR10_TRAIN]
    test = [_read_batch(base / "test_batch", b"labels", 10)]
    names = _label_names(base / "batches.meta", b"label_names", 10)
    return _to_dataset("cifar10", train, test, 10, {"class_names": names})


def load_cifar100(root: Optional[PathLike] = None) -> Dataset:
    """CIFAR-100, fine labels: x uint8 (50000 / 10000, 3, 32, 32), y int64 in [0, 100)."""
    base = data_root(root) / CIFAR100_DIR
    require(base, f"the CIFAR-100 python folder {CIFAR100_DIR}/ under the data root", is_dir=True)
    train = [_read_batch(base / "train", b"fine_labels", 100)]
    test = [_read_batch(base / "test", b"fine_labels", 100)]
    names = _label_names(base / "meta", b"fine_label_names", 100)
    return _to_dataset("cifar100", train, test, 100,
                       {"class_names": names, "label_type": "fine"})
