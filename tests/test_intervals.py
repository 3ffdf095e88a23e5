"""Student-t and Welch intervals: quantiles against published table values, coverage, errors."""
from __future__ import annotations

import math
import random
import statistics

import pytest

from effnet_tutorial import intervals

# Two-sided 95% (p = 0.975) and 99% (p = 0.995) quantiles of Student's t, from standard tables.
TABLE = [(1, 0.975, 12.7062), (2, 0.975, 4.3027), (4, 0.975, 2.7764), (9, 0.975, 2.2622),
         (30, 0.975, 2.0423), (4, 0.995, 4.6041), (10, 0.995, 3.1693)]


@pytest.mark.parametrize("df, p, expected", TABLE)
def test_t_quantile_matches_the_tables(df, p, expected):
    assert intervals.t_quantile(p, df) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_approaches_the_normal_and_handles_fractional_df():
    assert intervals.t_quantile(0.975, 1e6) == pytest.approx(1.959964, abs=1e-4)
    assert intervals.t_quantile(0.5, 3) == pytest.approx(0.0, abs=1e-12)
    assert 2.2622 < intervals.t_quantile(0.975, 8.5) < 2.3060  # between df 9 and df 8


def test_mean_interval_by_hand():
    values = [0.5, 0.6, 0.55, 0.58, 0.52]
    i = intervals.mean_interval(values)
    half = 2.776445105 * statistics.stdev(values) / math.sqrt(5)
    assert (i.estimate, i.n, i.confidence) == (pytest.approx(0.55), 5, 0.95)
    assert (i.low, i.high) == (pytest.approx(0.55 - half), pytest.approx(0.55 + half))
    assert i.scaled(100).low == pytest.approx(100 * i.low)


def test_welch_interval_by_hand_and_its_sign():
    a, b = [0.5, 0.6, 0.55, 0.58, 0.52], [0.4, 0.45, 0.5, 0.42, 0.47]
    d = intervals.difference_interval(a, b)
    # Reference values computed with SciPy's ttest_ind(equal_var=False).confidence_interval().
    assert (d.low, d.high) == (pytest.approx(0.0430114, abs=1e-6), pytest.approx(0.1609886, abs=1e-6))
    assert d.sign() == 1 and intervals.difference_interval(b, a).sign() == -1
    assert intervals.difference_interval(a, a).sign() == 0
    assert intervals.difference_interval([1.0, 1.0], [0.0, 0.0]).low == 1.0  # no spread: the difference


def test_mean_interval_covers_the_truth_about_95_percent_of_the_time():
    rng = random.Random(0)
    covered = 0
    for _ in range(2000):
        i = intervals.mean_interval([rng.gauss(3.0, 2.0) for _ in range(5)])
        covered += i.low < 3.0 < i.high
    assert 0.935 < covered / 2000 < 0.965


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least two"):
        intervals.mean_interval([0.5])
    with pytest.raises(ValueError, match="NaN"):
        intervals.difference_interval([0.5, float("nan")], [0.1, 0.2])
    with pytest.raises(ValueError, match="0.5 <= p < 1"):
        intervals.t_quantile(0.2, 3)
    with pytest.raises(ValueError, match="df > 0"):
        intervals.t_quantile(0.975, 0)
