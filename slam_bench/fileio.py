"""Crash-safe file writes, an inter-process lock beside the data, and the check of an output folder.

A bottom-level utility: the pipeline, the report, the CLI and profiling all write through it.

Every result file is written to a temporary file in the same directory and moved into place
with `os.replace`, which is atomic on POSIX: a run killed at any moment (even SIGKILL) leaves
either the old or the new file, never a torn one. Files are created with mode 0666 less the
user's umask, like any file a shell command writes, so a group-shared results folder stays
shared (a `tempfile.mkstemp` file would be 0600).
"""
from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path
from typing import Iterator, Union

from filelock import FileLock


def atomic_write(path: Union[str, Path], data: Union[bytes, str]) -> None:
    """Replace `path` with `data` (bytes, or str written as UTF-8) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # O_EXCL: never follow or reuse a file someone else put there; 0o666: the umask decides.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def lock_path(path: Union[str, Path]) -> Path:
    """The lock file that guards `path`: `.<name>.lock` in the same folder."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def locked(path: Union[str, Path]) -> Iterator[None]:
    """Hold an exclusive inter-process lock for the file `path` during the block.

    Serialises read-modify-write of shared files (a suite's runs CSV, README) between
    processes: pytest-xdist workers, shards of one suite, runs started twice by mistake. The
    lock lives beside the data (`lock_path`), so every process that writes there meets the same
    lock whatever its TMPDIR, host or user (`path` itself cannot carry it: os.replace swaps
    its inode). Not reentrant: do not nest two blocks for the same path in one process.
    """
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    # A writer holds it for milliseconds: poll often rather than filelock's default 50 ms.
    with FileLock(lock).acquire(poll_interval=0.005):
        yield


def ensure_writable_dir(path: Union[str, Path], arg: str = "--out") -> Path:
    """Create `path` if needed and check that files can be written in it, before any work.

    Raises ValueError naming `arg` when `path` is a file, lies under a file, or is not
    writable, so a command fails in its first second rather than after its measurements.
    """
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            raise ValueError(f"{arg} {str(path)!r}: {str(p)!r} is a file, expected a folder")
        if p.exists():
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ValueError(f"{arg} {str(path)!r} is not a writable folder: "
                         f"{e.strerror or e}") from None
    return path
