"""The statistics every report file shares: when an interval exists, the Student-t interval of a
mean, the paired t-test and Holm's step-down adjustment (docs/statistics.md).

One rule for every table, plot and README sentence: an interval (and any claim built on one) needs
at least MIN_TRIALS values and a non-zero spread. With two values the 95% t-interval is
mean +- 12.7 std/sqrt(2), and with no spread it has zero width, which reads as certainty that
the trials do not give.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
ALPHA = 0.05  # a difference is resolved when its Holm-adjusted p-value is below this
MIN_TRIALS = 3  # fewest values for an interval, a bold cell or a claim
# Accuracies are stored to 4 decimals (0.01 points), so a real spread of differences is far
# above this; a smaller std is the rounding noise of subtracting equal differences.
ZERO_SPREAD = 1e-9


def has_spread(std: float) -> bool:
    """Whether a sample std (points) is a real, non-zero spread (False for NaN)."""
    return not math.isnan(std) and std > ZERO_SPREAD


def interval_defined(std: float, n: int) -> bool:
    """The report's rule for drawing, bolding or claiming an interval: n >= 3, spread > 0."""
    return n >= MIN_TRIALS and has_spread(std)


def t_half_width(std: float, n: int, confidence: float = CONFIDENCE) -> float:
    """Half-width of the two-sided Student-t interval for the mean of n values whose sample
    std (ddof=1) is `std`; NaN unless `interval_defined(std, n)`."""
    if not interval_defined(std, n):
        return math.nan
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * float(std) / math.sqrt(n)


def _values(values) -> np.ndarray:
    d = np.asarray(values, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence, got shape {d.shape}")
    return d


def t_interval(values, confidence: float = CONFIDENCE) -> Tuple[float, float, float]:
    """(mean, low, high) of the two-sided Student-t interval for the mean of `values` (1-D,
    float); low = high = NaN unless there are >= 3 values with a non-zero spread."""
    d = _values(values)
    mean = float(d.mean())
    half = t_half_width(float(d.std(ddof=1)) if d.size > 1 else math.nan, d.size, confidence)
    return mean, mean - half, mean + half


def paired_p_value(deltas) -> float:
    """Two-sided p-value of the paired t-test that the mean of `deltas` (1-D, the paired
    differences) is 0, i.e. scipy.stats.ttest_rel(a, b) with deltas = a - b; NaN where the test
    is undefined (fewer than 2 values, or zero spread)."""
    d = _values(deltas)
    std = float(d.std(ddof=1)) if d.size > 1 else math.nan
    if d.size < 2 or not has_spread(std):
        return math.nan
    t = float(d.mean()) / (std / math.sqrt(d.size))
    return float(2.0 * stats.t.sf(abs(t), d.size - 1))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (1-D, float64 out, same order).

    NaN entries (undefined tests) stay NaN and are not members of the family: m counts the
    finite p-values only. With the finite p-values sorted ascending, p_(1) <= ... <= p_(m), the
    adjusted value of p_(i) is max_{j <= i} min(1, (m - j + 1) p_(j)); it controls the
    family-wise error rate under any dependence between the tests (Holm 1979), which the
    comparisons of one file have (they share methods and trials).
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values must be 1-D, got shape {p.shape}")
    finite = np.flatnonzero(~np.isnan(p))
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    out = np.full(p.shape, np.nan)
    if finite.size == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    m = order.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out
