"""What the subcommands share: the errors that are the user's to fix, and their one line."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from slam_bench.data import DatasetUnavailable
from slam_bench.data.files import DataMissingError
from slam_bench.pipeline.results import ResultsError
from slam_bench.pipeline.teacher import CacheError

# Bad arguments, missing or malformed data, invalid results or caches: exit 2, one line.
# (MalformedDataError is a ValueError.) Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, DatasetUnavailable, DataMissingError, CacheError, ResultsError)


def fail(prog: str, error) -> int:
    """Print `PROG: error: ...` on stderr (PROG e.g. "slam-bench run"); returns exit status 2."""
    print(f"{prog}: error: {error}", file=sys.stderr)
    return 2


def check_data_root(path: Optional[Path]) -> None:
    """`--data-root` must be an existing folder when given, whatever the suite."""
    if path is not None and not Path(path).is_dir():
        what = "is not a folder" if Path(path).exists() else "does not exist"
        raise ValueError(f"--data-root {str(path)!r} {what}; expected the folder that holds the "
                         f"downloaded datasets")
