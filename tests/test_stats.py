"""Confidence intervals (mecjax.stats) against scipy and hand-computed cases."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from mecjax import stats


def test_t_quantile_is_scipys_and_matches_table_values():
    for dof in (1, 2, 3, 4, 7, 30, 200, 10_000):
        assert stats.t_quantile_975(dof) == pytest.approx(sps.t.ppf(0.975, dof), rel=1e-12)
    # Printed tables (two-sided 95%).
    assert stats.t_quantile_975(1) == pytest.approx(12.7062, abs=1e-4)
    assert stats.t_quantile_975(3) == pytest.approx(3.1824, abs=1e-4)
    assert stats.t_quantile_975(10) == pytest.approx(2.2281, abs=1e-4)
    assert stats.t_quantile_975(10**7) == pytest.approx(1.959964, abs=1e-5)   # the normal's
    assert stats.t_quantile_975(0) == math.inf


def test_mean_ci_hand_case():
    ci = stats.mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    # sd = sqrt(2.5), se = sd / sqrt(5) = sqrt(0.5), t(0.975, 4) = 2.776445
    assert ci["mean"] == 3.0 and ci["n"] == 5
    assert ci["ci95"] == pytest.approx(2.776445 * math.sqrt(0.5), rel=1e-6)
    assert ci["low"] == pytest.approx(3.0 - ci["ci95"])
    assert ci["high"] == pytest.approx(3.0 + ci["ci95"])
    single = stats.mean_ci([7.0])
    assert single["mean"] == 7.0 and single["ci95"] == math.inf
    with pytest.raises(ValueError, match="1-D"):
        stats.mean_ci(np.ones((2, 3)))
    with pytest.raises(ValueError, match="non-empty"):
        stats.mean_ci([])


@pytest.mark.parametrize("n", [2, 10, 30])
def test_mean_ci_is_scipys_t_interval(n):
    x = np.random.default_rng(n).normal(3.0, 2.0, n)
    ci = stats.mean_ci(x)
    lo, hi = sps.t.interval(0.95, n - 1, loc=x.mean(), scale=sps.sem(x))
    assert ci["mean"] == pytest.approx(x.mean(), rel=1e-12)
    assert ci["low"] == pytest.approx(lo, rel=1e-10)
    assert ci["high"] == pytest.approx(hi, rel=1e-10)


def test_paired_difference_removes_the_between_instance_spread():
    base = np.array([10.0, 20.0, 30.0, 40.0])
    shifted = base + 1.0
    d = stats.paired_diff_ci(shifted, base)
    assert d["mean"] == pytest.approx(1.0) and d["ci95"] == pytest.approx(0.0, abs=1e-12)
    # Unpaired, the two intervals overlap widely; paired, the difference is clear.
    assert stats.mean_ci(shifted)["low"] < stats.mean_ci(base)["high"]
    assert d["low"] > 0
    # Hand case: differences (1, -1, 3, 1): mean 1, sd = sqrt(8/3), t(0.975, 3) = 3.182446.
    d = stats.paired_diff_ci(base + [1, -1, 3, 1], base)
    assert d["mean"] == pytest.approx(1.0)
    assert d["ci95"] == pytest.approx(3.182446 * math.sqrt(8 / 3) / 2, rel=1e-6)
    # It is scipy's one-sample t-interval of the differences.
    a, b = np.random.default_rng(0).normal(size=(2, 12))
    lo, hi = sps.t.interval(0.95, 11, loc=(a - b).mean(), scale=sps.sem(a - b))
    d = stats.paired_diff_ci(a, b)
    assert (d["low"], d["high"]) == (pytest.approx(lo, rel=1e-10), pytest.approx(hi, rel=1e-10))
    with pytest.raises(ValueError, match="same shape"):
        stats.paired_diff_ci([1.0, 2.0], [1.0, 2.0, 3.0])


def test_summarize_averages_slots_then_gives_a_ci_over_instances():
    per_slot = {"latency_ms": np.asarray([[1.0, 3.0], [2.0, 4.0], [6.0, 6.0], [0.0, 2.0],
                                          [5.0, 1.0]])}
    res = stats.summarize(per_slot)["latency_ms"]
    per_instance = np.array([2.0, 3.0, 6.0, 1.0, 3.0])
    assert res == stats.mean_ci(per_instance)
    lo, hi = sps.t.interval(0.95, 4, loc=per_instance.mean(), scale=sps.sem(per_instance))
    assert res["ci95"] == pytest.approx((hi - lo) / 2, rel=1e-10)
