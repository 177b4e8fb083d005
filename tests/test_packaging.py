"""pyproject's package list names every package of the source tree, so `pip install .` (not
editable) ships all of them."""
import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts)
               for p in (ROOT / "slam_bench").rglob("__init__.py")}
    on_disk.add("slam_bench.kernels")  # kernels/ is mapped to slam_bench.kernels
    assert (ROOT / "kernels" / "__init__.py").exists()
    assert on_disk - listed == set(), f"packages missing from pyproject.toml: {on_disk - listed}"
    assert listed - on_disk == set(), f"listed packages that do not exist: {listed - on_disk}"
