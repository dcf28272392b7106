"""Non-cooperative offloading dynamics: greedy sequential choice and best response.

Each device minimises its *own* weighted cost (eq. 16) given the others'
choices. ``best_response`` is the finite-improvement dynamics of Chen et al.
(2015, IEEE/ACM ToN): devices revise in turn to a strictly better option until
no device can improve alone (a pure Nash equilibrium) or a round limit is hit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mecjax.config import as_params
from mecjax.optim import objective

IMPROVE_TOL = 1e-6  # relative improvement a device needs to switch (guarantees termination)


def slot_costs_fn(view, prices, params, allocation_rule="equal"):
    """offload [N] -> [N] each device's weighted cost in this slot (eq. 16); the view's
    candidate terms are computed here, once, not in every call."""
    terms = objective.candidate_terms(view, params, allocation_rule)
    return lambda a: objective.outcome_from_terms(terms, view, a, prices, params,
                                                  allocation_rule).cost


def own_costs(view, offload, i, prices, params, allocation_rule="equal", costs_fn=None):
    """[M+1] the cost device ``i`` would pay for each option, others fixed.

    ``costs_fn`` (offload [N] -> per-device costs [N]) replaces the one-slot
    cost, e.g. by the look-ahead cost over a horizon (:mod:`mecjax.optim.lookahead`).
    """
    p = as_params(params)
    options = jnp.arange(p.n_servers + 1, dtype=jnp.int32)
    costs_fn = slot_costs_fn(view, prices, params, allocation_rule) if costs_fn is None else costs_fn

    def cost_if(o):
        return costs_fn(offload.at[i].set(o))[i]

    return jax.vmap(cost_if)(options)


def greedy(view, prices, params, allocation_rule="equal", order=None, costs_fn=None):
    """[N] devices in turn (index order, or ``order``) pick their cheapest option
    given the choices made before them; devices not yet decided compute locally.
    ``costs_fn``: as in :func:`own_costs`."""
    p = as_params(params)
    order = jnp.arange(p.n_devices) if order is None else order
    if costs_fn is None:   # built once, outside the scan
        costs_fn = slot_costs_fn(view, prices, params, allocation_rule)

    def choose(a, i):
        costs = own_costs(view, a, i, prices, params, allocation_rule, costs_fn)
        return a.at[i].set(jnp.argmin(costs).astype(jnp.int32)), None

    a, _ = jax.lax.scan(choose, jnp.zeros(p.n_devices, jnp.int32), order)
    return a


def best_response(view, prices, params, init=None, max_rounds: int = 20,
                  allocation_rule="equal", costs_fn=None):
    """Round-robin best-response dynamics from ``init`` (default: greedy).

    Returns ``(offload [N], converged, rounds)``; converged means a whole round
    passed in which no device could lower its own cost by more than
    IMPROVE_TOL (relative): an (epsilon-)Nash equilibrium. ``costs_fn``: each
    device's own cost of a joint assignment, as in :func:`own_costs` (default:
    this slot's weighted cost).
    """
    p = as_params(params)
    if costs_fn is None:   # built once, outside the loops
        costs_fn = slot_costs_fn(view, prices, params, allocation_rule)
    a0 = (greedy(view, prices, params, allocation_rule, costs_fn=costs_fn) if init is None
          else init.astype(jnp.int32))

    def revise(carry, i):
        a, changed = carry
        costs = own_costs(view, a, i, prices, params, allocation_rule, costs_fn)
        best = jnp.argmin(costs).astype(jnp.int32)
        better = costs[best] < costs[a[i]] * (1 - IMPROVE_TOL)
        return (a.at[i].set(jnp.where(better, best, a[i])), changed | better), None

    def one_round(state):
        a, _, rounds = state
        (a, changed), _ = jax.lax.scan(revise, (a, False), jnp.arange(p.n_devices))
        return a, changed, rounds + 1

    def keep_going(state):
        _, changed, rounds = state
        return changed & (rounds < max_rounds)

    a, changed, rounds = jax.lax.while_loop(keep_going, one_round, (a0, True, 0))
    return a, ~changed, rounds
