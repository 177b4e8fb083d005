"""Crash-safe file writes and an inter-process lock.

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
