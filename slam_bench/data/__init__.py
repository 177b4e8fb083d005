"""Dataset registry: every suite names its dataset; loaders are looked up here.

A loader is `loader(root: Optional[Path], **options) -> slam_bench.data.base.Dataset`.
`root` is the `--data-root` directory (paper-scale datasets read their files from it; the
embedded ones ignore it). A loader whose data or package is missing raises
`DatasetUnavailable` with the reason, so the CLI prints one line and the suites skip.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

from slam_bench.data.base import Dataset


class DatasetUnavailable(RuntimeError):
    """The dataset's package or files are missing; the message says what and how to fix it."""


@dataclass(frozen=True)
class DatasetEntry:
    loader: Callable[..., Dataset]
    # check(root) -> None when the data can be loaded, else the reason it cannot (cheap: no load).
    check: Callable[[Optional[Path]], Optional[str]]
    description: str = ""


DATASETS: Dict[str, DatasetEntry] = {}


def register_dataset(name: str, loader: Callable[..., Dataset],
                     check: Optional[Callable[[Optional[Path]], Optional[str]]] = None,
                     description: str = "") -> None:
    """Register `loader` under `name`; `check(root)` reports missing data without loading it."""
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
    return DATASETS[name].loader(Path(root) if root is not None else None, **options)


def dataset_status(name: str, root: Optional[Path] = None) -> Optional[str]:
    """None when dataset `name` can be loaded from `root`, else the reason it cannot."""
    return DATASETS[name].check(Path(root) if root is not None else None)


# Registration side effects: the embedded loaders register themselves on import.
from slam_bench.data import embedded as _embedded  # noqa: E402,F401
from slam_bench.data import synthetic as _synthetic  # noqa: E402,F401
from slam_bench.data import known_noise as _known_noise  # noqa: E402,F401
from slam_bench.data import paper as _paper  # noqa: E402,F401  (cifar10, cifar100, celeba, imagenet, imdb)

__all__ = ["Dataset", "DatasetUnavailable", "DATASETS", "register_dataset", "load_dataset",
           "dataset_status"]
