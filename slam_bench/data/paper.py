"""The paper-scale datasets on disk: where each one's files lie under the data root, and the
data-present check the registry (`slam_bench.data`) runs for it. Imports no torch.

The `*_paths(root)` functions and the folder and file names are the layouts the loaders
(cifar.py, celeba.py, imagenet.py, imdb.py) read; each loader's docstring describes its files.
`check(root)` only tests that the expected files and folders exist (no decoding), so
`slam-bench list` stays instant; the reason it returns names the first missing path and
its format. A present-but-broken file is reported by the loader itself (MalformedDataError).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional

from slam_bench.data.files import ENV_VAR, DataMissingError, PathLike, data_root

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))

CELEBA_DIR = "celeba"
IMAGES_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"

IMAGENET_DIR = "imagenet"

IMDB_DIR = "aclImdb"


def cifar10_paths(root: Optional[PathLike] = None) -> list[Path]:
    """Every file `load_cifar10` reads (for a data-present check)."""
    base = data_root(root) / CIFAR10_DIR
    return [base / n for n in (*CIFAR10_TRAIN, "test_batch", "batches.meta")]


def cifar100_paths(root: Optional[PathLike] = None) -> list[Path]:
    """Every file `load_cifar100` reads (for a data-present check)."""
    base = data_root(root) / CIFAR100_DIR
    return [base / n for n in ("train", "test", "meta")]


def celeba_paths(root: Optional[PathLike] = None) -> list[Path]:
    """The files and folder `load_celeba` reads (for a data-present check)."""
    base = data_root(root) / CELEBA_DIR
    return [base / IMAGES_DIR, base / ATTR_FILE, base / PARTITION_FILE]


def imagenet_paths(root: Optional[PathLike] = None) -> list[Path]:
    """The folders `load_imagenet` reads (for a data-present check)."""
    base = data_root(root) / IMAGENET_DIR
    return [base / "train", base / "val"]


def imdb_paths(root: Optional[PathLike] = None) -> list[Path]:
    """The folders `load_imdb` reads (for a data-present check)."""
    base = data_root(root) / IMDB_DIR
    return [base / s / c for s in ("train", "test") for c in ("neg", "pos")]


FORMATS = {
    "cifar10": "the CIFAR-10 python batches (cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta)",
    "cifar100": "the CIFAR-100 python files (cifar-100-python/train, test, meta)",
    "celeba": "CelebA (celeba/img_align_celeba/, list_attr_celeba.txt, list_eval_partition.txt)",
    "imagenet": "an ImageNet class-per-folder tree (imagenet/train/<class>/*, imagenet/val/<class>/*)",
    "imdb": "the aclImdb folders (aclImdb/{train,test}/{pos,neg}/*.txt)",
}
PATHS = {"cifar10": cifar10_paths, "cifar100": cifar100_paths, "celeba": celeba_paths,
         "imagenet": imagenet_paths, "imdb": imdb_paths}


def files_check(name: str) -> Callable[[Optional[Path]], Optional[str]]:
    """check(root) for paper-scale dataset `name`: None when its files are there, else why not."""
    paths: Callable[[Optional[Path]], List[Path]] = PATHS[name]

    def check(root: Optional[Path]) -> Optional[str]:
        try:
            expected = paths(root)
        except DataMissingError:
            return (f"no data root: pass --data-root DIR or set {ENV_VAR}; expected "
                    f"{FORMATS[name]} under it")
        for p in expected:
            if not p.exists():
                return f"{p} not found; expected {FORMATS[name]}"
        return None
    return check
