"""One derived file per suite, rewritten atomically from that suite's raw rows."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, List, Optional

import pandas as pd

from slam_bench.fileio import atomic_write, locked
from slam_bench.pipeline.methods import METHODS
from slam_bench.store import read_rows, runs_path, select_variant, suites_with_rows


def write_per_suite(out: Path, suites: Optional[Iterable[str]], relpath: str,
                    render: Callable[[str, pd.DataFrame], Optional[bytes]]) -> List[Path]:
    """For every suite with rows under `out` (or only `suites`), write
    `out / relpath.format(suite=...)` = render(suite, rows of the variant reports show),
    unless render returns None (a file that suite has nothing for); returns the paths written.

    The rows are read through the store's strict reader (registered method names only) and
    the file is written under the rows' lock, so shards finishing at the same time cannot
    leave a file built from older rows than another's."""
    paths = []
    for suite in suites_with_rows(out, suites):
        with locked(runs_path(out, suite)):
            df = read_rows(runs_path(out, suite), known_methods=METHODS)
            if df.empty:
                continue
            path = Path(out) / relpath.format(suite=suite)
            data = render(suite, select_variant(df))
            if data is None:
                continue
            atomic_write(path, data)
        paths.append(path)
    return paths
