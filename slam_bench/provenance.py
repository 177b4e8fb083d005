"""What produced a result row: the package's version, torch's and Triton's, and the git commit.

Read from the installed distributions' metadata (no import of torch or Triton), so an installed
wheel records its versions too. The git commit is the checkout's the package runs from, or
"none" when it does not run from one (an installed wheel): never a guess.
"""
from __future__ import annotations

import functools
import importlib.metadata
import subprocess
from pathlib import Path
from typing import Dict

# Recorded when a distribution is not installed (e.g. Triton on macOS or Windows).
ABSENT = "none"


def version(dist: str) -> str:
    """The installed version of distribution `dist`, or "none"."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ABSENT


# The runs' own output: rows written into a checkout's results/ do not make the code they
# came from "dirty" (a benchmark that writes suite after suite would otherwise sign its later
# suites' rows with "-dirty" while the code was unchanged).
OUTPUT_DIR = "results"


@functools.lru_cache(maxsize=1)
def git_sha() -> str:
    """The commit (12 hex digits, "-dirty" with uncommitted changes to tracked files outside
    results/) of the checkout this package runs from, or "none" when it is not one: a package
    installed into a folder that happens to lie in some other repository does not take that
    repository's commit."""
    package = Path(__file__).resolve().parent
    try:
        top = subprocess.run(["git", "-C", str(package), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, timeout=10)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() / "slam_bench" != package:
            return ABSENT
        root = top.stdout.strip()
        sha = subprocess.run(["git", "-C", root, "describe", "--always", "--abbrev=12",
                              "--exclude=*"], capture_output=True, text=True, timeout=10)
        if sha.returncode != 0 or not sha.stdout.strip():
            return ABSENT
        # Tracked files only, as `git describe --dirty` counts them.
        changed = subprocess.run(["git", "-C", root, "status", "--porcelain",
                                  "--untracked-files=no", "--", ".",
                                  f":(exclude){OUTPUT_DIR}"],
                                 capture_output=True, text=True, timeout=10)
        if changed.returncode != 0:
            return ABSENT
        return sha.stdout.strip() + ("-dirty" if changed.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return ABSENT


def row_fields() -> Dict[str, str]:
    """The provenance columns of a result row."""
    return {"git_sha": git_sha(), "slam_bench_version": version("slam-bench"),
            "torch_version": version("torch"), "triton_version": version("triton")}
