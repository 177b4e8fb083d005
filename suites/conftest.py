"""`pytest suites/` is the smoke run; `pytest suites/ --benchmark` is the full benchmark.

Without --benchmark every suite runs at its smoke size into a temporary directory and
pytest-benchmark timings are disabled (each benchmarked function runs once, as a check).
With --benchmark the full suites run, rewrite the files under results/, and pytest-benchmark
times the throughput benchmarks. A run skips the rows already recorded with the same
configuration; --recompute recomputes every row (and teacher) from scratch, e.g.
`pytest suites/ --benchmark --recompute -n 2` to regenerate the committed results.
"""
import pytest


def pytest_addoption(parser):
    parser.addoption("--benchmark", action="store_true", default=False,
                     help="run the full benchmark suites and rewrite results/ (default: smoke run)")
    parser.addoption("--recompute", action="store_true", default=False,
                     help="recompute every row and teacher, even those already recorded with "
                          "the same configuration (default: skip them)")


def pytest_configure(config):
    if config.getoption("--benchmark"):
        # pyproject's addopts disable pytest-benchmark timing for ordinary test runs.
        config.option.benchmark_disable = False


@pytest.fixture
def full_run(request) -> bool:
    """True under --benchmark: run at full size and write results/; else smoke size, tmp dir."""
    return bool(request.config.getoption("--benchmark"))


@pytest.fixture
def recompute(request) -> bool:
    """True under --recompute: every row is computed again, none skipped as recorded."""
    return bool(request.config.getoption("--recompute"))
