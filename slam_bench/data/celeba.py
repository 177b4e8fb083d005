"""CelebA (Liu et al., 2015) aligned faces, one binary attribute as the label (k = 2).

Layout under the data root (the official archive's files, as torchvision also expects them):
    celeba/img_align_celeba/000001.jpg ...
    celeba/list_attr_celeba.txt      line 1: image count; line 2: the 40 attribute names;
                                     then "<file> <40 values in {-1, 1}>" per image
    celeba/list_eval_partition.txt   "<file> <0 train | 1 val | 2 test>" per image
Label 1 means the attribute is present (value 1), 0 absent (-1). Images (178 x 218) are
decoded to `image_size` x `image_size` (default 64: shorter side resized, centre crop) and kept
in memory as uint8: 202,599 faces at 64 px are 2.5 GB and fit on one GPU; at full resolution
they would be 23.6 GB of pixels and decoding would dominate every run.

The lists are untrusted: they must be UTF-8 (the published ones are ASCII), and every image
name a bare file name inside img_align_celeba/ (no separator, no `..`, no absolute path).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from slam_bench.data.base import Dataset
from slam_bench.data.files import (MalformedDataError, PathLike, data_root, entry_kind, read_text,
                                   require)
from slam_bench.data.images import (cached, check_image_size, check_resample, decode_images,
                                    files_digest)
from slam_bench.data.paper import ATTR_FILE, CELEBA_DIR, IMAGES_DIR, PARTITION_FILE

# Smiling is close to balanced (48% positive), so accuracy is a meaningful score.
DEFAULT_ATTRIBUTE = "Smiling"


def read_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """list_attr_celeba.txt -> (attribute names, file names, int8 (N, A) values in {-1, 1})."""
    lines = read_text(path, "CelebA's attribute list (count line, names line, "
                            "'<file> <values>' lines)").splitlines()
    if len(lines) < 2 or not _is_count(lines[0]):
        raise MalformedDataError(path, "line 1 must be the image count, line 2 the attribute names")
    count, names = int(lines[0]), lines[1].split()
    if not names or len(set(names)) != len(names):
        raise MalformedDataError(path, "line 2 must name the attributes, each once")
    rows = [ln.split() for ln in lines[2:] if ln.strip()]
    if len(rows) != count:
        raise MalformedDataError(path, f"line 1 says {count} images, found {len(rows)} rows")
    files, values = [], np.empty((count, len(names)), dtype=np.int8)
    for i, row in enumerate(rows):
        if len(row) != len(names) + 1 or any(v not in ("1", "-1") for v in row[1:]):
            raise MalformedDataError(path, f"line {i + 3}: expected a file name and {len(names)} "
                                           f"values in {{-1, 1}}, got {' '.join(row)[:80]!r}")
        files.append(_image_name(path, i + 3, row[0]))
        values[i] = [int(v) for v in row[1:]]
    _no_duplicates(path, files)
    return names, files, values


def _is_count(line: str) -> bool:
    s = line.strip()
    return s.isascii() and s.isdigit()


def _image_name(path: Path, line: int, name: str) -> str:
    """A bare file name inside the images folder: a separator, `..` or an absolute path in
    the list would read a file from outside the data root."""
    if "/" in name or "\\" in name or name in (".", "..") or ":" in name \
            or "\0" in name:
        raise MalformedDataError(path, f"line {line}: {name[:80]!r} is not a bare image file name; "
                                       f"expected names such as 000001.jpg inside {IMAGES_DIR}/")
    return name


def _no_duplicates(path: Path, files: list) -> None:
    seen = set()
    for f in files:
        if f in seen:
            raise MalformedDataError(path, f"lists {f} more than once; each image must appear once")
        seen.add(f)


def read_partition(path: Path) -> dict[str, int]:
    """list_eval_partition.txt -> {file name: 0 train | 1 val | 2 test}."""
    out = {}
    text = read_text(path, "CelebA's partition list ('<file> <0|1|2>' lines)")
    for i, line in enumerate(text.splitlines()):
        row = line.split()
        if not row:
            continue
        if len(row) != 2 or row[1] not in ("0", "1", "2"):
            raise MalformedDataError(path, f"line {i + 1}: expected '<file> <0|1|2>', got {line[:80]!r}")
        if row[0] in out:
            raise MalformedDataError(path, f"line {i + 1}: {row[0]} is listed more than once")
        out[row[0]] = int(row[1])
    return out


def load_celeba(root: Optional[PathLike] = None, *, attribute: str = DEFAULT_ATTRIBUTE,
                image_size: int = 64, train_partitions: tuple = (0,), resample: str = "box",
                cache_dir: Optional[PathLike] = None, num_workers: Optional[int] = None) -> Dataset:
    """CelebA as x uint8 (N, 3, image_size, image_size), y int64 (N,) in {0, 1}.

    Args:
        root: the data root (holds celeba/); default $SLAM_BENCH_DATA.
        attribute: one of the 40 attribute names of list_attr_celeba.txt.
        image_size: side of the decoded square images.
        train_partitions: official partitions that form the train split (0 train, 1 val);
            the test split is always partition 2.
        resample: PIL filter used to downsize.
        cache_dir: optional folder for the decoded tensors (never the data root).
        num_workers: decoding threads (default: CPU count, at most 32).
    """
    check_image_size(image_size)
    check_resample(resample)
    if not set(train_partitions) <= {0, 1} or not train_partitions:
        raise ValueError(f"train_partitions must be a non-empty subset of (0, 1), got {train_partitions!r}")
    base = data_root(root) / CELEBA_DIR
    require(base, f"the CelebA folder {CELEBA_DIR}/ under the data root", is_dir=True)
    img_dir = require(base / IMAGES_DIR, "the aligned face images folder", is_dir=True)
    names, files, values = read_attributes(base / ATTR_FILE)
    if attribute not in names:
        raise ValueError(f"attribute must be one of the CelebA attributes {names}, got {attribute!r}")
    partition = read_partition(base / PARTITION_FILE)
    missing = [f for f in files if f not in partition]
    if missing:
        raise MalformedDataError(base / PARTITION_FILE, f"has no partition for {missing[:3]}")
    labels = (values[:, names.index(attribute)] == 1).astype(np.int64)
    part = np.array([partition[f] for f in files])
    split_idx = {"train": np.flatnonzero(np.isin(part, list(train_partitions))),
                 "test": np.flatnonzero(part == 2)}
    for split, wanted in (("train", f"partition {' or '.join(map(str, train_partitions))}"),
                          ("test", "partition 2")):
        if not len(split_idx[split]):
            raise MalformedDataError(base / PARTITION_FILE, f"puts no image of the attribute list "
                                     f"in {wanted}, so the {split} split would be empty")
    paths = {s: [img_dir / files[i] for i in idx] for s, idx in split_idx.items()}
    for p in (*paths["train"], *paths["test"]):
        kind = entry_kind(p)
        if kind == "absent":
            raise MalformedDataError(base / ATTR_FILE, f"lists {p.name}, which is not in {img_dir}")
        if kind != "file":
            raise MalformedDataError(p, f"is a {kind}; expected the image file that "
                                        f"{ATTR_FILE} lists")
    key = {"dataset": "celeba", "size": image_size, "resample": resample,
           "train": files_digest(paths["train"]), "test": files_digest(paths["test"])}

    def build():
        return {f"x_{s}": decode_images(paths[s], image_size, resample, num_workers) for s in paths}

    t = cached(cache_dir, key, build)
    return Dataset(f"celeba_{attribute.lower()}", t["x_train"],
                   torch.from_numpy(labels[split_idx["train"]]), t["x_test"],
                   torch.from_numpy(labels[split_idx["test"]]), 2, "image",
                   {"attribute": attribute, "image_size": image_size, "resample": resample,
                    "train_partitions": list(train_partitions),
                    "positive_rate_train": float(labels[split_idx["train"]].mean())
                    if len(split_idx["train"]) else 0.0})
