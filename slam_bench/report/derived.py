"""One derived file per suite, rewritten atomically from that suite's raw rows."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, List, Optional

import pandas as pd

from slam_bench.fileio import atomic_write
from slam_bench.pipeline.results import read_all_runs


def write_per_suite(out: Path, suites: Optional[Iterable[str]], relpath: str,
                    render: Callable[[str, pd.DataFrame], bytes]) -> List[Path]:
    """For every suite with rows under `out` (or only `suites`), write
    `out / relpath.format(suite=...)` = render(suite, rows); returns the paths written."""
    paths = []
    for suite, df in read_all_runs(out, suites):
        if df.empty:
            continue
        path = Path(out) / relpath.format(suite=suite)
        atomic_write(path, render(suite, df))
        paths.append(path)
    return paths
