"""Confidence intervals over instances: Student-t intervals of a mean and of a
paired difference, and the per-metric summary of a rollout.

Every interval treats the instances (the leading axis) as i.i.d. draws: a
rollout's instances are independent fresh scenarios, and its slots are not
(they share one instance), so slots are averaged per instance first.
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


__all__ = ["LEVEL", "mean_ci", "paired_diff_ci", "summarize", "t_quantile_975"]
