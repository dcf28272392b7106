"""Confidence intervals over instances: Student-t intervals of a mean and of a
paired difference, and the per-metric summary of a rollout; and, for results over
several training seeds and tasks, the interquartile mean, stratified bootstrap
intervals and the probability of improvement of Agarwal et al. 2021 ("Deep
reinforcement learning at the edge of the statistical precipice", NeurIPS; the
rliable library), written here with numpy and scipy.

Every interval treats the instances (the leading axis) as i.i.d. draws: a
rollout's instances are independent fresh scenarios, and its slots are not
(they share one instance), so slots are averaged per instance first.

The bootstrap functions take *strata*: one array per task, ``[runs]`` or
``[runs, instances]``. As in rliable's ``StratifiedBootstrap``, each replicate
resamples every stratum's runs (training seeds) with replacement, within the
stratum, so every task keeps its weight. A 2-D stratum holds each run's score on
each of the same evaluation instances (common random numbers, a crossed design);
its instances are resampled too, independently of its runs and the same
instances for every run (Owen's "pigeonhole" bootstrap of a crossed design, 2007),
so the interval covers both the seed-to-seed and the instance-to-instance
spread. A 1-D stratum is rliable's case exactly. Intervals are percentile
intervals of the replicates, rliable's default.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

LEVEL = 0.95


def t_quantile_975(dof: int) -> float:
    """The 97.5% quantile of Student's t with ``dof`` degrees of freedom
    (``inf`` below one degree of freedom: no interval)."""
    if dof < 1:
        return math.inf
    return float(stats.t.ppf(0.5 + LEVEL / 2, dof))


def mean_ci(values) -> dict[str, float]:
    """Mean and 95% t-interval over the leading (instance) axis of ``values`` [B].

    Returns ``{"mean", "ci95" (half-width), "low", "high", "n"}``; with one
    instance the half-width is ``inf``.
    """
    x = np.asarray(values, np.float64)
    if x.ndim != 1 or x.shape[0] < 1:
        raise ValueError(f"mean_ci needs a non-empty 1-D array of per-instance values, got shape "
                         f"{x.shape}")
    n = x.shape[0]
    mean = float(x.mean())
    half = float(t_quantile_975(n - 1) * x.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    return {"mean": mean, "ci95": half, "low": mean - half, "high": mean + half, "n": n}


def paired_diff_ci(a, b) -> dict[str, float]:
    """95% t-interval of the mean of ``a - b`` over instances, ``a`` and ``b``
    [B] measured on the same instances (common random numbers).

    Pairing removes the between-instance spread that two unpaired intervals
    would both carry, so a small consistent difference is detected even when
    the two intervals overlap. Same keys as :func:`mean_ci`.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values must have the same shape, got {a.shape} and {b.shape}")
    return mean_ci(a - b)


def summarize(per_slot) -> dict[str, dict[str, float]]:
    """``{metric: mean_ci}`` of a rollout's ``{metric: [B, T]}``: each metric
    averaged over the T slots of each instance, then the 95% interval over the
    B instances."""
    return {k: mean_ci(np.asarray(v, np.float64).mean(axis=1)) for k, v in per_slot.items()}


# ------------------------------------------------------------ over seeds and tasks

#: Bootstrap replicates when not given (rliable's figures use 50 000; 2 000 keeps a
#: percentile interval's ends within about 1% of their limit for these sizes).
REPS = 2000


def iqm(values, axis=None):
    """Interquartile mean: the mean of the middle 50% of ``values`` (25% trimmed from
    each end; ``scipy.stats.trim_mean(values, 0.25, axis)``, as rliable's
    ``aggregate_iqm``), flattened when ``axis`` is None. Robust to a few outlying runs
    or instances, less variable than the median."""
    return stats.trim_mean(np.asarray(values, np.float64), 0.25, axis=axis)


def _stratum(x) -> np.ndarray:
    a = np.asarray(x, np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"a stratum must be a non-empty [runs] or [runs, instances] array, got "
                         f"shape {np.shape(x)}")
    return a


def resample_stratum(rng: np.random.Generator, x: np.ndarray, reps: int) -> np.ndarray:
    """``reps`` bootstrap copies ``[reps, runs, instances]`` of a stratum ``x``
    ``[runs, instances]``: runs drawn with replacement and, independently, instances
    drawn with replacement (the same instances for every run of a copy)."""
    runs = rng.integers(0, x.shape[0], (reps, x.shape[0]))
    inst = rng.integers(0, x.shape[1], (reps, x.shape[1]))
    return x[runs[:, :, None], inst[:, None, :]]


def _interval(estimate: float, replicates: np.ndarray, level: float, n: int) -> dict:
    reps = replicates[np.isfinite(replicates)]
    if reps.size == 0 or not np.isfinite(estimate):
        low = high = math.nan
    else:
        low, high = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return {"mean": float(estimate), "low": float(low), "high": float(high),
            "ci95": float((high - low) / 2), "n": int(n)}


def stratified_bootstrap_ci(strata, statistic=np.mean, reps: int = REPS, level: float = LEVEL,
                            seed: int = 0) -> dict[str, float]:
    """Point estimate and percentile bootstrap interval of ``statistic`` over every
    value of every stratum (see the module docstring for the resampling).

    ``strata``: a sequence of arrays, one per stratum (task), each ``[runs]`` or
    ``[runs, instances]``. ``statistic(x, axis=-1)`` reduces the pooled values, e.g.
    ``np.mean`` or :func:`iqm`. Returns ``{"mean" (the estimate on the data), "low",
    "high", "ci95" (half the interval's width), "n" (values pooled)}``; the interval
    is rliable's ``get_interval_estimates`` with ``method="percentile"``.
    """
    strata = [_stratum(x) for x in strata]
    if not strata:
        raise ValueError("stratified_bootstrap_ci needs at least one stratum")
    rng = np.random.default_rng(seed)
    pooled = np.concatenate([x.ravel() for x in strata])
    boot = np.concatenate([resample_stratum(rng, x, reps).reshape(reps, -1) for x in strata],
                          axis=1)
    return _interval(float(statistic(pooled, axis=-1)), np.asarray(statistic(boot, axis=-1)),
                     level, pooled.size)


def ratio_of_means_ci(floor, reference, method, reps: int = REPS, level: float = LEVEL,
                      seed: int = 0) -> dict[str, float]:
    """``(mean(floor) - mean(method)) / (mean(floor) - mean(reference))`` with a
    bootstrap interval: the share of the reference's improvement over the floor that
    ``method`` achieves (e.g. the headroom share of a cost, floor = all-local,
    reference = the best known method).

    ``floor`` and ``reference`` are ``[instances]`` (one run each), ``method``
    ``[runs, instances]`` or ``[instances]``, all on the same instances. Each
    replicate draws the method's runs and, independently, one set of instances used
    by all three (the instances are paired); the denominator is re-estimated in every
    replicate, so its uncertainty is in the interval. A replicate whose denominator
    is zero is left out; the estimate is NaN when the data's is.
    """
    f, r = (np.asarray(v, np.float64).ravel() for v in (floor, reference))
    m = _stratum(method) if np.ndim(method) == 2 else _stratum(method)[:, 0][None, :]
    if not (f.shape[0] == r.shape[0] == m.shape[1]):
        raise ValueError(f"floor, reference and method must share the instances, got "
                         f"{f.shape[0]}, {r.shape[0]} and {m.shape[1]}")
    rng = np.random.default_rng(seed)
    runs = rng.integers(0, m.shape[0], (reps, m.shape[0]))
    inst = rng.integers(0, m.shape[1], (reps, m.shape[1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        den = f.mean() - r.mean()
        est = (f.mean() - m.mean()) / den if den != 0 else math.nan
        boot_den = f[inst].mean(1) - r[inst].mean(1)
        boot = (f[inst].mean(1) - m[runs[:, :, None], inst[:, None, :]].mean((1, 2))) / boot_den
    return _interval(est, np.where(boot_den != 0, boot, np.nan), level, m.size)


def _u_fraction(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The Mann-Whitney U statistic of ``x`` over ``y`` divided by ``n m``, along the
    last axis: the fraction of pairs with x > y, ties counting one half."""
    n, m = x.shape[-1], y.shape[-1]
    ranks = stats.rankdata(np.concatenate([x, y], axis=-1), axis=-1)   # ties: average rank
    return (ranks[..., :n].sum(-1) - n * (n + 1) / 2) / (n * m)


def probability_of_improvement(x_strata, y_strata) -> float:
    """P(X > Y): for each stratum (task), the probability that a random value of X
    exceeds a random value of Y (ties count one half), i.e. the Mann-Whitney U
    statistic divided by n m, averaged over the strata. rliable's
    ``probability_of_improvement``, with every value of a stratum (each run on each
    instance) as one draw. Higher values must be better."""
    x_strata, y_strata = [_stratum(x) for x in x_strata], [_stratum(y) for y in y_strata]
    if len(x_strata) != len(y_strata) or not x_strata:
        raise ValueError("X and Y need the same, non-zero number of strata")
    return float(np.mean([_u_fraction(x.ravel(), y.ravel()) for x, y in zip(x_strata, y_strata)]))


def probability_of_improvement_ci(x_strata, y_strata, reps: int = REPS, level: float = LEVEL,
                                  seed: int = 0) -> dict[str, float]:
    """:func:`probability_of_improvement` with a percentile bootstrap interval: each
    replicate resamples X's and Y's runs (and instances) independently within each
    stratum, as rliable's ``StratifiedIndependentBootstrap``."""
    x_strata, y_strata = [_stratum(x) for x in x_strata], [_stratum(y) for y in y_strata]
    est = probability_of_improvement(x_strata, y_strata)
    rng = np.random.default_rng(seed)
    boot = np.mean([_u_fraction(resample_stratum(rng, x, reps).reshape(reps, -1),
                                resample_stratum(rng, y, reps).reshape(reps, -1))
                    for x, y in zip(x_strata, y_strata)], axis=0)
    return _interval(est, boot, level, sum(x.size for x in x_strata))


__all__ = ["LEVEL", "REPS", "iqm", "mean_ci", "paired_diff_ci", "probability_of_improvement",
           "probability_of_improvement_ci", "ratio_of_means_ci", "resample_stratum",
           "stratified_bootstrap_ci", "summarize", "t_quantile_975"]
