"""What the subcommands share: the errors that are the user's to fix, and their one line.

Light on purpose: `slam-bench --help`, a command's `--help` and every usage error are answered
from this package and the suite registry, without importing torch. `user_errors()` imports the
modules that define those errors, so call it only where the work has started.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Tuple

# Exit statuses of every command (documented in `slam-bench --help` and README).
OK, FAILED, USAGE, IO_ERROR, INTERRUPTED = 0, 1, 2, 3, 130
EXIT_STATUSES = ("exit status: 0 done; 1 some trials failed, a result was not reproduced or a "
                 "target missed; 2 a usage or input error (bad argument, missing or malformed "
                 "data, invalid results file); 3 a file could not be read or written "
                 "(permission, read-only or full disk, quota: every row recorded before stays "
                 "intact); 130 interrupted (Ctrl-C)")


def user_errors() -> Tuple[type, ...]:
    """Bad arguments, missing or malformed data, invalid results or caches: exit 2, one line.
    (MalformedDataError is a ValueError, DataMissingError a FileNotFoundError.) Anything else
    is a bug and keeps its traceback; an OSError that is not one of these is exit 3."""
    from slam_bench.data import DatasetUnavailable
    from slam_bench.data.files import DataMissingError
    from slam_bench.pipeline.teacher import CacheError
    from slam_bench.store import ResultsError
    return (ValueError, DatasetUnavailable, DataMissingError, CacheError, ResultsError)


def __getattr__(name: str):
    if name == "USER_ERRORS":  # the tuple, for callers that import it by name
        return user_errors()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def fail(prog: str, error) -> int:
    """Print `PROG: error: ...` on stderr (PROG e.g. "slam-bench run"); returns exit status 2."""
    print(f"{prog}: error: {error}", file=sys.stderr)
    return USAGE


def io_fail(prog: str, error: OSError, kept: str = "") -> int:
    """One line for a file that could not be read or written: its path and the cause (and
    `kept`: what is intact); returns exit status 3."""
    where = f"{error.filename}: " if error.filename else ""
    cause = error.strerror or str(error)
    print(f"{prog}: error: {where}{cause}" + (f"; {kept}" if kept else ""), file=sys.stderr)
    return IO_ERROR


def check_data_root(path: Optional[Path]) -> None:
    """`--data-root` must be an existing folder when given, whatever the suite."""
    if path is not None and not Path(path).is_dir():
        what = "is not a folder" if Path(path).exists() else "does not exist"
        raise ValueError(f"--data-root {str(path)!r} {what}; expected the folder that holds the "
                         f"downloaded datasets")
