"""Where the paper-scale datasets live on disk, and the errors a loader raises about them.

Every paper-scale loader reads from one data root: the `root` argument, else the
SLAM_BENCH_DATA environment variable. Under it each dataset keeps its published layout in its
own folder (`cifar-10-batches-py/`, `cifar-100-python/`, `celeba/`, `imagenet/`, `aclImdb/`).

A suite runner tells "data not there" (skip the suite, say where it was looked for) from
"data there but broken" (fail loudly): the first is `DataMissingError`, the second
`MalformedDataError`; both name the path.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Union

ENV_VAR = "SLAM_BENCH_DATA"

PathLike = Union[str, os.PathLike]


class DataMissingError(FileNotFoundError):
    """An expected file or folder is absent. `.path` is the path that was looked for."""

    def __init__(self, path: Path, expected: str):
        self.path = Path(path)
        super().__init__(f"{self.path}: not found; expected {expected}")


class MalformedDataError(ValueError):
    """A file exists but is not in its published format. `.path` names the file."""

    def __init__(self, path: Path, problem: str):
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}")


def data_root(root: Optional[PathLike] = None) -> Path:
    """The data root: `root` if given, else $SLAM_BENCH_DATA; an error naming both if neither."""
    if root is None:
        env = os.environ.get(ENV_VAR)
        if not env:
            raise DataMissingError(Path("<unset>"),
                                   f"a data root: pass --data-root DIR or set {ENV_VAR}")
        root = env
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path (str or os.PathLike), got {type(root).__name__}")
    return Path(root).expanduser()


def require(path: Path, expected: str, *, is_dir: bool = False) -> Path:
    """Return `path` if it exists (as a folder when `is_dir`), else raise DataMissingError."""
    if not (path.is_dir() if is_dir else path.is_file()):
        raise DataMissingError(path, expected)
    return path


def visible_entries(folder: Path) -> List[Path]:
    """The entries of `folder`, sorted by name, without hidden ones (`.ipynb_checkpoints`,
    macOS `._*` and `.DS_Store` files): such entries are never data, and a hidden folder
    taken for a class would shift every label after it."""
    return sorted(p for p in Path(folder).iterdir() if not p.name.startswith("."))
