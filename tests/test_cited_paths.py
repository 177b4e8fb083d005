"""Every design note the code, the docs and the README cite is a file of the repository.

Code comments cite notes as `docs/<name>.md`; a citation of a note that is not in the
repository (for example a brief that lives outside it) points a reader nowhere, and is an
error here rather than a dead reference in a user's installed package.
"""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["README.md", "pyproject.toml", "conftest.py", "slam_bench", "kernels", "suites",
           "tests", "docs", ".ci"]
# A cited markdown path: one or more folder names, then a file name ending in .md.
CITED = re.compile(r"(?<![\w./-])((?:[\w.-]+/)+[\w.-]+\.md)\b")


def _files():
    for entry in SOURCES:
        path = ROOT / entry
        if path.is_file():
            yield path
        elif path.is_dir():
            yield from (p for p in sorted(path.rglob("*"))
                        if p.is_file() and p.suffix in {".py", ".md", ".toml", ""}
                        and "__pycache__" not in p.parts)


def _citations():
    for path in _files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            for match in CITED.finditer(line):
                yield path.relative_to(ROOT), lineno, match.group(1)


def test_every_cited_note_exists():
    missing = [f"{path}:{lineno}: {cited}" for path, lineno, cited in _citations()
               if not (ROOT / cited).is_file()]
    assert not missing, "cited files that the repository does not hold:\n" + "\n".join(missing)


def test_the_scan_sees_citations():
    # The check above would pass vacuously if the pattern stopped matching.
    cited = {c for _, _, c in _citations()}
    assert {"docs/method.md", "docs/kernels.md", "docs/suites.md"} <= cited, sorted(cited)
