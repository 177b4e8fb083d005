"""Where the paper-scale datasets live on disk, and the errors a loader raises about them.

Every paper-scale loader reads from one data root: the `root` argument, else the
SLAM_BENCH_DATA environment variable. Under it each dataset keeps its published layout in its
own folder (`cifar-10-batches-py/`, `cifar-100-python/`, `celeba/`, `imagenet/`, `aclImdb/`).

A suite runner tells "data not there" (skip the suite, say where it was looked for) from
"data there but broken" (fail loudly): the first is `DataMissingError`, the second
`MalformedDataError`; both name the path, and both are a `DataFileError`. Files under the
data root are untrusted: whatever a loader meets there (a corrupt or hostile file, a dangling
symlink, an unreadable folder, an unexpected entry) ends in one of these two errors, never in
another exception and never in a silently skipped file that would shift labels. The CLI
prints such an error as one line and exits with status 2.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Union

ENV_VAR = "SLAM_BENCH_DATA"

PathLike = Union[str, os.PathLike]


class DataFileError(Exception):
    """A file or folder under the data root is absent or unusable. `.path` names it."""

    path: Path


class DataMissingError(DataFileError, FileNotFoundError):
    """An expected file or folder is absent. `.path` is the path that was looked for."""

    def __init__(self, path: Path, expected: str):
        self.path = Path(path)
        super().__init__(f"{self.path}: not found; expected {expected}")


class MalformedDataError(DataFileError, ValueError):
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
    """Return `path` if it exists (as a folder when `is_dir`), else raise DataMissingError
    (MalformedDataError when something else is there, e.g. a file where a folder belongs)."""
    kind = entry_kind(path)
    if kind == ("folder" if is_dir else "file"):
        return path
    if kind == "dangling symlink":
        raise MalformedDataError(path, f"is a dangling symlink (to {os.readlink(path)}, which "
                                       f"does not exist); expected {expected}")
    if kind in ("folder", "file", "other"):
        raise MalformedDataError(path, f"is a {kind}; expected {expected}")
    raise DataMissingError(path, expected)


def visible_entries(folder: Path) -> List[Path]:
    """The entries of `folder`, sorted by name, without hidden ones (`.ipynb_checkpoints`,
    macOS `._*` and `.DS_Store` files): such entries are never data, and a hidden folder
    taken for a class would shift every label after it. An unreadable folder is a
    MalformedDataError naming it."""
    try:
        return sorted(p for p in Path(folder).iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise MalformedDataError(folder, f"cannot be listed ({e.strerror or e})") from e


def entry_kind(path: Path) -> str:
    """"folder", "file", "dangling symlink", "absent" or "other" (a socket...), following
    symlinks; an entry that cannot be examined is a MalformedDataError naming it."""
    try:
        if path.is_dir():
            return "folder"
        if path.is_file():
            return "file"
        if path.is_symlink():
            return "dangling symlink"
        return "other" if os.path.lexists(path) else "absent"
    except OSError as e:
        raise MalformedDataError(path, f"cannot be examined ({e.strerror or e})") from e


def read_text(path: Path, expected: str) -> str:
    """The UTF-8 text of `path`; a missing, unreadable or non-UTF-8 file is an error naming it
    (never the locale's encoding: the published files are ASCII)."""
    require(path, expected)
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedDataError(path, f"is not UTF-8 text ({e.reason} at byte {e.start}); "
                                       f"expected {expected}") from None
    except OSError as e:
        raise MalformedDataError(path, f"cannot be read ({e.strerror or e})") from e
