"""Crash-safe file writes, an inter-process lock beside the data, and the check of an output folder.

A bottom-level utility: the pipeline, the report, the CLI and profiling all write through it.

Every result file is written to a temporary file in the same directory and moved into place
with `os.replace`, which is atomic on POSIX: a run killed at any moment (even SIGKILL) leaves
either the old or the new file, never a torn one. Files are created with mode 0666 less the
user's umask, like any file a shell command writes, so a group-shared results folder stays
shared (a `tempfile.mkstemp` file would be 0600). The temporary file's name says which host
and process wrote it, so a later run can remove what a killed one left (`remove_orphans`).

An I/O failure (permission, read-only file system, disk full, quota) is an `OSError` whose
`filename` is the file that could not be written, whatever step failed (a failed `write` names
no file by itself); the command line turns it into one line and its own exit status.
"""
from __future__ import annotations

import contextlib
import glob
import os
import re
import secrets
import socket
import tempfile
from pathlib import Path
from typing import Iterator, Union

from filelock import FileLock


# This host's name as it appears in temporary file names (letters, digits and dashes).
HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def atomic_write(path: Union[str, Path], data: Union[bytes, str]) -> None:
    """Replace `path` with `data` (bytes, or str written as UTF-8) atomically.

    OSError (with `filename` = `path`) when it cannot be written; `path` is then unchanged.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: never follow or reuse a file someone else put there; 0o666: the umask decides.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as e:
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_orphans(path: Union[str, Path], recursive: bool = False) -> int:
    """Remove temporary files that killed writers left (`atomic_write`'s); returns how many.

    recursive=False: the temporaries of the file `path`, whoever wrote them; call it only
    while holding `locked(path)`, and only for a file that is written under that lock (then
    nobody else is writing it). recursive=True: every temporary under the folder `path` that
    a process of this host wrote and that is no longer running (another host's are left alone:
    its processes cannot be seen from here).
    """
    path = Path(path)
    if recursive:
        pattern = re.compile(rf"\..+\.{re.escape(HOST)}\.(\d+)\.[0-9a-f]{{8}}\.tmp")
        found = [(f, int(m.group(1))) for f in path.rglob(".*.tmp")
                 if (m := pattern.fullmatch(f.name))]
        doomed = [f for f, pid in found if pid != os.getpid() and not _alive(pid)]
    else:
        # Also the names written before they carried the host (no host part).
        pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:[A-Za-z0-9-]+\.)?\d+\.[0-9a-f]{{8}}\.tmp")
        doomed = [f for f in path.parent.glob(f".{glob.escape(path.name)}.*.tmp")
                  if pattern.fullmatch(f.name)] if path.parent.is_dir() else []
    for f in doomed:
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
    return len(doomed)


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
