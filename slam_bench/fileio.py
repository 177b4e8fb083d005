"""Crash-safe file writes, an inter-process lock, and the check of an output folder.

A bottom-level utility: the pipeline, the report, the CLI and profiling all write through it.

Every result file is written to a temporary file in the same directory and moved into place
with `os.replace`, which is atomic on POSIX: a run killed at any moment (even SIGKILL) leaves
either the old or the new file, never a torn one.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union


def atomic_write(path: Union[str, Path], data: Union[bytes, str]) -> None:
    """Replace `path` with `data` (bytes, or str written as UTF-8) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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


@contextlib.contextmanager
def locked(path: Union[str, Path]) -> Iterator[None]:
    """Hold an exclusive advisory lock for the file `path` during the block.

    Serialises read-modify-write of shared files (README, a suite's runs CSV) between
    processes, e.g. pytest-xdist workers. The lock file lives in the system temp directory,
    named by a hash of the resolved path, so no lock files litter the results or the repo
    (and `path` itself cannot carry the lock: os.replace swaps its inode).
    """
    key = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:24]
    lock_dir = Path(tempfile.gettempdir()) / "slam-bench-locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{key}.lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


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
