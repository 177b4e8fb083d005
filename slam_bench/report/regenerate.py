"""Regenerate everything derived from the raw rows: leaderboards, paired leaderboards,
summaries, plots (and the top-K plots of suites run on top-K teacher caches), README table."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional

from slam_bench.report.leaderboard import update_readme, write_leaderboards
from slam_bench.report.paired import write_paired
from slam_bench.report.plots import write_plots, write_topk_plots
from slam_bench.report.summary import write_summaries


def default_readme(out: Path) -> Optional[Path]:
    """README.md beside `out` when `out` is the project's own results/ directory, else None
    (so `--out out/` never overwrites the README's published table)."""
    out = Path(out).resolve()
    readme = out.parent / "README.md"
    return readme if out.name == "results" and readme.exists() else None


def regenerate(out: Path, suites: Optional[Iterable[str]] = None,
               readme: Optional[Path] = None) -> List[Path]:
    """Rewrite leaderboards, paired leaderboards, summaries and plots of `suites` (all with rows
    if None) and, if given, the README table (all suites). Returns the paths written."""
    paths = (write_leaderboards(out, suites) + write_paired(out, suites)
             + write_summaries(out, suites) + write_plots(out, suites)
             + write_topk_plots(out, suites))
    if readme is not None and update_readme(readme, out):
        paths.append(Path(readme))
    return paths
