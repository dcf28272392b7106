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
import jax.numpy as jnp
import numpy as np

from mecjax import env
from mecjax.config import Scenario
from mecjax.optim import separable
from mecjax.schedulers import make
from mecjax.schedulers.base import fixed_prices


def _instance_gaps(key, s: Scenario, slots: int, fw_iterations: int):
    """[T] planned cost and [T] bound along one instance's cooperative trajectory."""
    sched = make("cooperative")
    k_reset, k_sched, k_env, k_act = jax.random.split(key, 4)   # as mecjax.rollout does
    obs, state = env.reset(k_reset, s)
    prices = fixed_prices(s)

    def slot(carry, t):
        obs, state, sched_state = carry
        decision, sched_state = sched.act(jax.random.fold_in(k_act, t), sched_state, obs, s)
        terms = separable.slot_terms(obs, prices, s)
        planned = separable.separable_mean_cost(terms, decision.offload)
        bound = separable.relaxation_bound(terms, fw_iterations)
        obs, state, _, _, _ = env.step(jax.random.fold_in(k_env, t), state, decision, s)
        return (obs, state, sched_state), (planned, bound)

    _, (planned, bound) = jax.lax.scan(slot, (obs, state, sched.init(k_sched, s)),
                                       jnp.arange(slots))
    return planned, bound


@partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _gaps(key, s: Scenario, instances: int, slots: int, fw_iterations: int):
    keys = jax.random.split(key, instances)
    return jax.vmap(lambda k: _instance_gaps(k, s, slots, fw_iterations))(keys)


def cooperative_bound_gaps(s: Scenario, seed: int, instances: int, slots: int,
                           fw_iterations: int = 200) -> dict[str, list[float]]:
    """Per-instance slot averages of the cooperative plan's cost, the bound and the
    relative gap, on the instances ``mecjax.rollout.rollout`` draws from ``key(seed)``."""
    planned, bound = _gaps(jax.random.key(seed), s, instances, slots, fw_iterations)
    planned, bound = np.asarray(planned, np.float64), np.asarray(bound, np.float64)
    return {"planned_cost": planned.mean(1).tolist(), "bound": bound.mean(1).tolist(),
            "gap": ((planned - bound) / bound).mean(1).tolist()}
