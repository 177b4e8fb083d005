"""Registry entries for the paper-scale datasets read from the data root.

`check(root)` only tests that the expected files and folders exist (no decoding), so
`slam-bench list` stays instant; the reason it returns names the first missing path and
its format. A present-but-broken file is reported by the loader itself (MalformedDataError).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, List, Optional

from slam_bench.data import register_dataset
from slam_bench.data.celeba import celeba_paths, load_celeba
from slam_bench.data.cifar import cifar10_paths, cifar100_paths, load_cifar10, load_cifar100
from slam_bench.data.files import ENV_VAR, DataMissingError
from slam_bench.data.imagenet import imagenet_paths, load_imagenet
from slam_bench.data.imdb import imdb_paths, load_imdb

FORMATS = {
    "cifar10": "the CIFAR-10 python batches (cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta)",
    "cifar100": "the CIFAR-100 python files (cifar-100-python/train, test, meta)",
    "celeba": "CelebA (celeba/img_align_celeba/, list_attr_celeba.txt, list_eval_partition.txt)",
    "imagenet": "an ImageNet class-per-folder tree (imagenet/train/<class>/*, imagenet/val/<class>/*)",
    "imdb": "the aclImdb folders (aclImdb/{train,test}/{pos,neg}/*.txt)",
}


def _check(name: str, paths: Callable[[Optional[Path]], List[Path]]):
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


for _name, _loader, _paths, _desc in (
        ("cifar10", load_cifar10, cifar10_paths, "CIFAR-10, 50,000 + 10,000 32x32 images"),
        ("cifar100", load_cifar100, cifar100_paths, "CIFAR-100 (fine labels), 50,000 + 10,000 images"),
        ("celeba", load_celeba, celeba_paths, "CelebA faces, one binary attribute"),
        ("imagenet", load_imagenet, imagenet_paths, "ImageNet-1k, decoded to small squares"),
        ("imdb", load_imdb, imdb_paths, "IMDB movie reviews, 25,000 + 25,000, binary sentiment")):
    register_dataset(_name, _loader, _check(_name, _paths), _desc)
