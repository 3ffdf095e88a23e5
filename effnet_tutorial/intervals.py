"""Confidence intervals for experiments repeated over a few seeds.

Part II trains every network several times, changing only the seed, and compares the means. With
five seeds a mean is uncertain by more than its standard deviation suggests, so the book reports a
Student-t interval for every mean (:func:`mean_interval`) and a Welch interval for every difference
of two means (:func:`difference_interval`), and states a difference only where that interval
excludes zero (:meth:`Interval.sign`). The t quantile is computed here (no SciPy needed).

In the book: Chapter 5, *Scaling one dimension at a time, and all three together*.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def _t_pdf(x: float, df: float) -> float:
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1) / 2 * math.log1p(x * x / df))


def _t_cdf_above_zero(x: float, df: float, steps: int = 2000) -> float:
    """``P(0 < T < x)`` by Simpson's rule (``steps`` even): accurate to ~1e-9 for x up to 100."""
    h = x / steps
    total = _t_pdf(0.0, df) + _t_pdf(x, df)
    total += sum((4 if k % 2 else 2) * _t_pdf(k * h, df) for k in range(1, steps))
    return total * h / 3


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom, for ``0.5 <= p < 1``.

    ``t_quantile(0.975, 4)`` is the factor of a two-sided 95% interval from five samples (2.776).
    """
    if not 0.5 <= p < 1 or df <= 0:
        raise ValueError(f"t_quantile needs 0.5 <= p < 1 and df > 0, got p={p}, df={df}")
    target, low, high = p - 0.5, 0.0, 1.0
    while _t_cdf_above_zero(high, df) < target:  # bracket the quantile, then bisect
        low, high = high, 2 * high
        if high > 1e4:
            raise ValueError(f"t quantile too far in the tail: p={p}, df={df}")
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if _t_cdf_above_zero(mid, df) < target else (low, mid)
    return (low + high) / 2


@dataclass(frozen=True)
class Interval:
    """An estimate with a two-sided confidence interval ``[low, high]`` from ``n`` samples."""

    estimate: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

    @property
    def half_width(self) -> float:
        """Half the interval's width (the "+-" of "estimate +- half_width")."""
        return (self.high - self.low) / 2

    def sign(self) -> int:
        """+1 if the whole interval lies above 0, -1 if below, 0 if it contains 0 (not separated)."""
        return 1 if self.low > 0 else -1 if self.high < 0 else 0

    def scaled(self, factor: float) -> Interval:
        """The same interval in other units (``scaled(100)`` turns fractions into percentage points)."""
        return Interval(self.estimate * factor, self.low * factor, self.high * factor, self.n, self.confidence)

    def __str__(self) -> str:
        return f"{self.estimate:.3g} [{self.low:.3g}, {self.high:.3g}]"


def _check(values: Sequence[float], name: str) -> list[float]:
    values = [float(v) for v in values]
    if len(values) < 2:
        raise ValueError(f"{name} needs at least two values (seeds) for an interval, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} contains a NaN or infinite value: {values}")
    return values


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The mean of ``values`` with its Student-t interval: ``mean +- t * s / sqrt(n)``."""
    values = _check(values, "mean_interval")
    n, mean = len(values), statistics.fmean(values)
    half = t_quantile(0.5 + confidence / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, confidence)


def difference_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Interval:
    """``mean(a) - mean(b)`` with Welch's interval (unequal variances, Welch-Satterthwaite df).

    When both samples have zero spread the interval collapses to the difference itself.
    """
    a, b = _check(a, "difference_interval (a)"), _check(b, "difference_interval (b)")
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.fmean(a) - statistics.fmean(b)
    if va + vb == 0:
        return Interval(diff, diff, diff, len(a) + len(b), confidence)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t_quantile(0.5 + confidence / 2, df) * math.sqrt(va + vb)
    return Interval(diff, diff - half, diff + half, len(a) + len(b), confidence)
