"""The slot objective every optimizer minimises: the mean weighted device cost.

A candidate is an offloading vector [N] (prices fixed). With
``allocation="optimal"`` its bandwidth and CPU shares are the closed-form
optimum of :mod:`mecjax.optim.allocation`; with ``"equal"`` each server splits
its resources equally (the environment's default).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mecjax.env import env as _env
from mecjax.env.types import Decision, Outcome
from mecjax.optim import allocation

ALLOCATIONS = ("optimal", "equal")


def make_decision(view, offload, prices, params, allocation_rule: str = "optimal") -> Decision:
    """The decision for ``offload`` under the given allocation rule."""
    if allocation_rule == "optimal":
        return allocation.allocate(view, offload, prices, params)
    if allocation_rule == "equal":
        return Decision(jnp.asarray(offload, jnp.int32), prices)
    raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation_rule!r}")


def outcome_of(view, offload, prices, params, allocation_rule: str = "optimal") -> Outcome:
    """Per-device outcome [N] of ``offload`` (jit-only path: no eager checks)."""
    dec = make_decision(view, offload, prices, params, allocation_rule)
    return _env.evaluate_unchecked(view, dec, params)


def mean_cost(view, offload, prices, params, allocation_rule: str = "optimal"):
    """Scalar mean weighted cost of ``offload`` [N]."""
    return jnp.mean(outcome_of(view, offload, prices, params, allocation_rule).cost)


def batch_mean_cost(view, offloads, prices, params, allocation_rule: str = "optimal"):
    """[K] mean weighted cost of each candidate in ``offloads`` [K, N]."""
    return jax.vmap(lambda a: mean_cost(view, a, prices, params, allocation_rule))(offloads)
