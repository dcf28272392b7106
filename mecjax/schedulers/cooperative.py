"""The cooperative reference: coordinate descent on the system's mean cost.

Not a paper method: the strong reference the paper's methods are scored
against at sizes where the exact optimum is out of reach. Every device in
turn takes the option (local or one of the M servers) that lowers the
*system's* mean weighted cost of the slot most, with the optimal closed-form
bandwidth and CPU shares (:mod:`mecjax.optim.allocation`), until a whole
sweep moves no device. The descent runs on the objective's separable form
(:func:`mecjax.optim.separable.descend`), where a move costs O(M) rather
than a full evaluation, which is what makes it affordable at N = 150.
It starts from the better of all-local and the best-response equilibrium
(the selfish reference), so it is never worse than either on the slot's
objective. Prices are fixed at the scenario's initial price, as for every
non-pricing method; the objective is the environment's ``cost`` (eq. 16).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from mecjax.config import as_params
from mecjax.env.types import Decision
from mecjax.optim import game, objective, separable
from mecjax.schedulers.base import Scheduler, fixed_prices


def cooperative_offload(obs, prices, params, max_sweeps: int = 20, br_rounds: int = 20):
    """``(x [N], mean_cost [])``: the coordinate-descent offloading vector and its cost.

    Start: the better (on the system's mean cost, optimal shares) of all-local and the
    best-response equilibrium (``game.best_response``, equal shares, the selfish
    reference), so the result is never worse than either."""
    p = as_params(params)
    terms = separable.slot_terms(obs, prices, p)
    local = jnp.zeros((p.n_devices,), jnp.int32)
    nash, _, _ = game.best_response(obs, prices, p, max_rounds=br_rounds)
    start = jnp.where(separable.separable_mean_cost(terms, nash)
                      < separable.separable_mean_cost(terms, local), nash, local)
    x, _, _ = separable.descend(terms, start, max_sweeps)
    return x, separable.separable_mean_cost(terms, x)


@dataclasses.dataclass(frozen=True)
class Cooperative(Scheduler):
    """Coordinate descent on the system's mean cost each slot (see the module docstring)."""

    name = "cooperative"
    max_sweeps: int = 20

    def __post_init__(self):
        if self.max_sweeps < 1:
            raise ValueError(f"cooperative: max_sweeps={self.max_sweeps} must be >= 1")

    def act(self, key, sched_state, obs, params) -> tuple[Decision, object]:
        p = as_params(params)
        prices = fixed_prices(p)
        x, _ = cooperative_offload(obs, prices, p, self.max_sweeps)
        return objective.make_decision(obs, x, prices, p), sched_state
