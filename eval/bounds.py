"""How far the cooperative reference may still be from the slot optimum.

Along the cooperative scheduler's own trajectory, each slot's decision is
scored against a lower bound on that slot's optimum: the Frank-Wolfe bound
of the convex relaxation (:func:`mecjax.optim.separable.relaxation_bound`).
Both are on the objective the schedulers plan on: the mean weighted cost
with optimal shares on the observed (delayed) channel. The relative gap
(planned - bound) / bound bounds the cooperative reference's distance to
the optimum of each slot; it says nothing of the multi-slot optimum (a
decision changes later batteries and backlogs), which no method here targets
except DT-MEC's look-ahead.
"""

from __future__ import annotations

from functools import partial

import jax
import numpy as np

from mecjax.config import Scenario
from mecjax.optim import separable
from mecjax.rollout import rollout_instances
from mecjax.schedulers import make
from mecjax.schedulers.base import fixed_prices


def _planned_and_bound(obs, decision, s: Scenario, fw_iterations: int) -> dict:
    """The slot's planned cost of ``decision`` and the bound on the slot's optimum."""
    terms = separable.slot_terms(obs, fixed_prices(s), s)
    return {"planned": separable.separable_mean_cost(terms, decision.offload),
            "bound": separable.relaxation_bound(terms, fw_iterations)}


@partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _gaps(key, s: Scenario, instances: int, slots: int, fw_iterations: int):
    """[B, T] planned cost and [B, T] bound along each instance's cooperative trajectory."""
    per_slot = rollout_instances(make("cooperative"), s, jax.random.split(key, instances), slots,
                                 probe=partial(_planned_and_bound, fw_iterations=fw_iterations))
    return per_slot["planned"], per_slot["bound"]


def cooperative_bound_gaps(s: Scenario, seed: int, instances: int, slots: int,
                           fw_iterations: int = 200) -> dict[str, list[float]]:
    """Per-instance slot averages of the cooperative plan's cost, the bound and the
    relative gap, on the instances ``mecjax.rollout.rollout`` draws from ``key(seed)``."""
    planned, bound = _gaps(jax.random.key(seed), s, instances, slots, fw_iterations)
    planned, bound = np.asarray(planned, np.float64), np.asarray(bound, np.float64)
    return {"planned_cost": planned.mean(1).tolist(), "bound": bound.mean(1).tolist(),
            "gap": ((planned - bound) / bound).mean(1).tolist()}
