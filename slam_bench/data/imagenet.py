"""ImageNet (ILSVRC-2012) from a class-per-folder tree, decoded to small uint8 images.

Layout under the data root:
    imagenet/train/<class>/<image>.{JPEG,jpg,jpeg,png}
    imagenet/val/<class>/<image>...
Class indices are the sorted train folder names (as torchvision's ImageFolder), so the
standard `n01440764 ...` wnid folders give the usual 0..999 order. Images are decoded to
`image_size` x `image_size` (default 64) in memory: whole splits then fit on one GPU as uint8
(15.7 GB for the train split at 64 px), which the suites need, since they keep data on device;
full resolution would need ~550 GB. File order inside a class is sorted by name. Hidden
entries (`.ipynb_checkpoints`, `._*`) are skipped; every other entry must be what the layout
says (class folders in a split, image files in a class), else it is an error naming it: a
dangling symlink or a stray file dropped from the class list would shift every later label.
A class folder without images is an error too (a label with no examples is a sign of a
broken or partial copy). Images over images.MAX_IMAGE_PIXELS are refused before decoding.
The official val images come flat with a label file; sort them into class folders first
(the widely used `valprep.sh` does this).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from slam_bench.data.base import Dataset
from slam_bench.data.files import (MalformedDataError, PathLike, data_root, entry_kind,
                                   require, visible_entries)
from slam_bench.data.images import (IMAGE_EXTENSIONS, cached, check_image_size, check_resample,
                                    decode_images, files_digest)
from slam_bench.data.paper import IMAGENET_DIR


def _class_folders(split_dir: Path) -> list[str]:
    """The sorted class folder names of a split. Every visible entry must be a folder: a
    dangling symlink, a file (e.g. a class's unextracted .tar) or anything else there is an
    error naming it, since dropping it would shift the label of every class after it."""
    require(split_dir, "a class-per-folder tree (<class>/<image files>)", is_dir=True)
    names = []
    for p in visible_entries(split_dir):
        kind = entry_kind(p)
        if kind != "folder":
            raise MalformedDataError(p, f"is a {kind} among the class folders of {split_dir}; "
                                        f"expected only <class>/ folders (remove it, or restore "
                                        f"the class it stands for, so labels do not shift)")
        names.append(p.name)
    if not names:
        raise MalformedDataError(split_dir, "has no class folders; expected <class>/<image files>")
    return names


def _class_images(folder: Path) -> list[Path]:
    """The image files of one class folder, sorted by name. Anything else that is visible (a
    file with another extension, a subfolder, a dangling symlink) is an error naming it."""
    imgs = []
    for p in visible_entries(folder):
        kind = entry_kind(p)
        if kind != "file":
            raise MalformedDataError(p, f"is a {kind} in the class folder {folder}; expected "
                                        f"only image files ({', '.join(IMAGE_EXTENSIONS)})")
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            raise MalformedDataError(p, f"has the extension {p.suffix!r}; expected only image "
                                        f"files ({', '.join(IMAGE_EXTENSIONS)}, any case) in "
                                        f"a class folder")
        imgs.append(p)
    if not imgs:
        raise MalformedDataError(folder, f"is a class folder without image files "
                                         f"({', '.join(IMAGE_EXTENSIONS)}); remove it or add "
                                         f"its images")
    return imgs


def _list_split(split_dir: Path, classes: Optional[list[str]], max_per_class: Optional[int]):
    """(files, labels, class names) of one split, in sorted class then sorted file order."""
    found = _class_folders(split_dir)
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise MalformedDataError(split_dir, f"has class folders absent from train: {unknown[:5]}")
    present = set(found)
    files, labels = [], []
    for label, name in enumerate(classes):
        if name not in present:
            continue  # a class without val images (e.g. a hand-made subset) is allowed
        imgs = _class_images(split_dir / name)
        if max_per_class is not None:
            imgs = imgs[:max_per_class]
        files += imgs
        labels += [label] * len(imgs)
    return files, labels, classes


def load_imagenet(root: Optional[PathLike] = None, *, image_size: int = 64,
                  max_train_per_class: Optional[int] = None, resample: str = "box",
                  cache_dir: Optional[PathLike] = None, num_workers: Optional[int] = None) -> Dataset:
    """ImageNet as x uint8 (N, 3, image_size, image_size), y int64 (N,) class indices.

    Args:
        root: the data root (holds imagenet/train and imagenet/val); default $SLAM_BENCH_DATA.
        image_size: side of the decoded square images (shorter side resized, centre crop).
        max_train_per_class: keep the first n files (by name) of each train class; None = all.
        resample: PIL filter used to downsize ("box" keeps small-image statistics closest to
            area averaging, as in downsampled-ImageNet work).
        cache_dir: optional folder for the decoded tensors (never the data root).
        num_workers: decoding threads (default: CPU count, at most 32).
    """
    check_image_size(image_size)
    check_resample(resample)
    if max_train_per_class is not None and (not isinstance(max_train_per_class, int)
                                            or max_train_per_class < 1):
        raise ValueError(f"max_train_per_class must be None or an int >= 1, got {max_train_per_class!r}")
    base = data_root(root) / IMAGENET_DIR
    require(base, f"the ImageNet folder {IMAGENET_DIR}/ (with train/ and val/) under the data root",
            is_dir=True)
    tr_files, tr_labels, classes = _list_split(base / "train", None, max_train_per_class)
    te_files, te_labels, _ = _list_split(base / "val", classes, None)
    key = {"dataset": "imagenet", "size": image_size, "resample": resample,
           "train": files_digest(tr_files), "val": files_digest(te_files)}

    def build():
        return {"x_train": decode_images(tr_files, image_size, resample, num_workers),
                "x_test": decode_images(te_files, image_size, resample, num_workers)}

    t = cached(cache_dir, key, build)
    return Dataset("imagenet", t["x_train"], torch.tensor(tr_labels, dtype=torch.int64),
                   t["x_test"], torch.tensor(te_labels, dtype=torch.int64), len(classes), "image",
                   {"image_size": image_size, "resample": resample,
                    "max_train_per_class": max_train_per_class, "test_split": "val"})
