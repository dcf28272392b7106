"""Multi-objective decision fusion of the unified framework (paper eq. 23).

    D* = argmin_D  w1 L(D) + w2 E(D) - w3 F(D) - w4 U(D)

over the candidate decisions and QIO's refinement, evaluated on the digital
twin's predicted state. L is the mean latency (s), E the mean device energy
per task (J), F Jain's fairness over per-device throughput and U the utility
(the fraction of the all-local weighted cost saved, which is where the
payment enters): the metrics of :func:`mecjax.env.metrics.slot_metrics`.

The paper gives no values for w1-w4. Ours (:data:`FUSION_WEIGHTS`) were fixed
before any run: w1 = alpha = 1 per s and w2 = beta = 0.5 per J, so that the
L, E part is the device cost of eq. 3 without the payment; w4 = 0.1 brings in
the payment through U (U ranges over a few tenths); w3 = 0.05 makes fairness
a tie-breaker (a 0.1 gain in Jain's index is worth 5 ms of mean latency).
Every candidate is scored with the convex optimal bandwidth and CPU shares it
would be executed with.
"""

from __future__ import annotations

import jax

from mecjax.config import as_params
from mecjax.env import metrics
from mecjax.optim import objective

FUSION_WEIGHTS = (1.0, 0.5, 0.05, 0.1)  # w1 (per s), w2 (per J), w3, w4 of eq. 23


def fusion_terms(view, offload, prices, params, terms=None) -> dict:
    """The four objectives of eq. 23 for offloading vector ``offload`` [N]:
    ``latency_s``, ``energy_j``, ``fairness``, ``utility`` (scalars). ``terms``: the
    view's :func:`mecjax.optim.objective.candidate_terms` (computed when None)."""
    p = as_params(params)
    if terms is None:
        terms = objective.candidate_terms(view, p, "optimal")
    out = objective.outcome_from_terms(terms, view, offload, prices, p, "optimal")
    m = metrics.slot_metrics(view.task_bits, view.task_cycles, view.cpu_freq, out, prices, p,
                             device_backlog=view.device_backlog)
    return {"latency_s": m["latency_ms"] * 1e-3, "energy_j": m["energy_j"],
            "fairness": m["fairness"], "utility": m["utility"]}


def fusion_score(view, offload, prices, params, weights=FUSION_WEIGHTS, terms=None):
    """Scalar eq. 23 objective (lower is better); ``terms`` as in :func:`fusion_terms`."""
    w1, w2, w3, w4 = weights
    t = fusion_terms(view, offload, prices, params, terms)
    return w1 * t["latency_s"] + w2 * t["energy_j"] - w3 * t["fairness"] - w4 * t["utility"]


def population_score_fn(view, prices, params, weights=FUSION_WEIGHTS):
    """offloads [K, N] -> [K] eq. 23 objective of each candidate: QIO's fitness in the
    unified scheduler, the view's terms computed here, once, not in every generation."""
    terms = objective.candidate_terms(view, params, "optimal")
    return jax.vmap(lambda a: fusion_score(view, a, prices, params, weights, terms))


def batch_fusion_score(view, offloads, prices, params, weights=FUSION_WEIGHTS):
    """[K] eq. 23 objective of each candidate in ``offloads`` [K, N]."""
    return population_score_fn(view, prices, params, weights)(offloads)
