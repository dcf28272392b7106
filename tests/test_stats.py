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


# ------------------------------------------------ IQM, stratified bootstrap, POI (rliable style)

def test_iqm_is_scipys_25_percent_trimmed_mean():
    x = np.random.default_rng(1).standard_cauchy(40)
    assert stats.iqm(x) == pytest.approx(sps.trim_mean(x, 0.25), rel=1e-12)
    # Hand case: of 8 values the middle 4 are averaged; the outliers do not matter.
    assert stats.iqm([-1e9, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 1e9]) == pytest.approx(3.5)
    m = np.arange(24.0).reshape(3, 8)
    np.testing.assert_allclose(stats.iqm(m, axis=-1), sps.trim_mean(m, 0.25, axis=-1))
    assert stats.iqm(m) == pytest.approx(sps.trim_mean(m.ravel(), 0.25))


def test_resample_stratum_draws_runs_and_instances_independently():
    x = np.arange(12.0).reshape(3, 4)                      # value = 4 * run + instance
    boot = stats.resample_stratum(np.random.default_rng(0), x, 500)
    assert boot.shape == (500, 3, 4)
    run, inst = boot // 4, boot % 4
    # Within one copy every run uses the same instances (crossed design).
    assert np.all(inst == inst[:, :1, :])
    assert np.all(run == run[:, :, :1])
    # Both are drawn with replacement: repeats occur, and every value is reachable.
    assert np.any([len(set(r[:, 0])) < 3 for r in run]) and set(np.unique(boot)) == set(x.ravel())


def test_stratified_bootstrap_covers_the_true_mean_and_shrinks_with_n():
    rng = np.random.default_rng(2)
    covered, widths = 0, {}
    for trial in range(40):
        x = rng.normal(1.0, 1.0, (3, 30))
        ci = stats.stratified_bootstrap_ci([x], reps=400, seed=trial)
        assert ci["mean"] == pytest.approx(x.mean()) and ci["n"] == 90
        assert ci["low"] <= ci["mean"] <= ci["high"]
        covered += ci["low"] <= 1.0 <= ci["high"]
    assert covered >= 32                                   # about 95% of 40, with slack
    for n in (10, 100, 1000):
        widths[n] = stats.stratified_bootstrap_ci([rng.normal(0, 1, (3, n))], reps=400)["ci95"]
    assert widths[10] > widths[100] > widths[1000]
    # One stratum of one run: the instances' bootstrap; of constants: a zero-width interval.
    assert stats.stratified_bootstrap_ci([np.full(5, 2.0)])["ci95"] == 0.0


def test_stratified_bootstrap_keeps_each_stratum_whole():
    # Two strata of very different means: a resample never mixes them, so the mean
    # of the pooled values stays at the average of the strata (equal sizes).
    a, b = np.zeros((3, 1)), np.full((3, 1), 10.0)
    ci = stats.stratified_bootstrap_ci([a, b], reps=200)
    assert (ci["mean"], ci["low"], ci["high"]) == (5.0, 5.0, 5.0)
    iq = stats.stratified_bootstrap_ci([np.arange(8.0)], statistic=stats.iqm, reps=200)
    assert iq["mean"] == pytest.approx(sps.trim_mean(np.arange(8.0), 0.25))


def test_ratio_of_means_is_one_for_the_reference_and_zero_for_the_floor():
    rng = np.random.default_rng(3)
    floor = rng.uniform(1.0, 2.0, 20)
    ref = floor - rng.uniform(0.2, 0.4, 20)
    one = stats.ratio_of_means_ci(floor, ref, ref[None, :])
    zero = stats.ratio_of_means_ci(floor, ref, np.stack([floor, floor]))
    assert one["mean"] == pytest.approx(1.0) and one["ci95"] == pytest.approx(0.0, abs=1e-12)
    assert zero["mean"] == pytest.approx(0.0) and zero["ci95"] == pytest.approx(0.0, abs=1e-12)
    # Halfway on every instance: 0.5 in every replicate too (the instances are paired).
    half = stats.ratio_of_means_ci(floor, ref, (floor + ref) / 2)
    assert [half[k] for k in ("mean", "low", "high")] == pytest.approx([0.5] * 3)
    # Runs that differ: the interval is over them (and the instances).
    spread = stats.ratio_of_means_ci(floor, ref, np.stack([floor, ref, (floor + ref) / 2]))
    assert spread["mean"] == pytest.approx(0.5) and spread["low"] < 0.5 < spread["high"]
    assert np.isnan(stats.ratio_of_means_ci(floor, floor, ref)["mean"])


def test_probability_of_improvement_hand_cases_and_rliable_definition():
    x, y = np.array([[3.0, 4.0, 5.0]]), np.array([[0.0, 1.0, 2.0]])
    assert stats.probability_of_improvement([x], [y]) == 1.0
    assert stats.probability_of_improvement([y], [x]) == 0.0
    assert stats.probability_of_improvement([x], [x]) == 0.5
    # Mann-Whitney U / (n m), averaged over tasks: scipy's statistic, as rliable does.
    rng = np.random.default_rng(4)
    xs, ys = rng.normal(0.3, 1, (2, 3, 7)), rng.normal(0, 1, (2, 5, 7))
    want = np.mean([sps.mannwhitneyu(a.ravel(), b.ravel(), alternative="greater").statistic
                    / (a.size * b.size) for a, b in zip(xs, ys)])
    assert stats.probability_of_improvement(list(xs), list(ys)) == pytest.approx(want)
    ci = stats.probability_of_improvement_ci(list(xs), list(ys), reps=300)
    assert ci["mean"] == pytest.approx(want) and 0.0 <= ci["low"] <= ci["high"] <= 1.0
    sure = stats.probability_of_improvement_ci([x], [y], reps=200)
    assert (sure["low"], sure["high"]) == (1.0, 1.0)
    same = stats.probability_of_improvement_ci([np.full(6, 1.0)], [np.full(4, 1.0)], reps=200)
    assert (same["mean"], same["low"], same["high"]) == (0.5, 0.5, 0.5)
