"""The slot objective every optimizer minimises: the mean weighted device cost.

A candidate is an offloading vector [N] (prices fixed). With
``allocation="optimal"`` its bandwidth and CPU shares are the closed-form
optimum of :mod:`mecjax.optim.allocation`; with ``"equal"`` each server splits
its resources equally (the environment's default).

A search evaluates many candidates on one slot. What no candidate changes (each
device's rate at a full share to every server, a log per pair; the optimal
allocation's weights, square roots) is computed once per view
(:func:`candidate_terms`); a candidate then costs a few selects, per-server sums and
divisions per device (:func:`outcome_from_terms`), the same arithmetic as
:func:`mecjax.env.evaluate` after its rates (:func:`mecjax.env.env.outcome_at_rate`).
``tests/test_objective_terms.py`` checks it against the allocation and the environment.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from mecjax.config import as_params
from mecjax.env import env as _env
from mecjax.env import physics
from mecjax.env.types import Decision, EnvState, Outcome
from mecjax.optim import allocation

ALLOCATIONS = ("optimal", "equal")


def make_decision(view, offload, prices, params, allocation_rule: str = "optimal") -> Decision:
    """The decision for ``offload`` under the given allocation rule."""
    if allocation_rule == "optimal":
        return allocation.allocate(view, offload, prices, params)
    if allocation_rule == "equal":
        return Decision(jnp.asarray(offload, jnp.int32), prices)
    raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation_rule!r}")


@struct.dataclass
class CandidateTerms:
    """What evaluating a candidate offloading vector on one view needs and no candidate
    changes, computed once per view (:func:`candidate_terms`): the transcendental part of
    an evaluation (a log per device and server), so that each candidate then costs a few
    selects, sums and divisions per device."""

    full_rate: jax.Array     # [N, M] B_j log2(1 + P_i h_ij / sigma^2): the rate at share 1
    local_energy: jax.Array  # [N] kappa f_i^2 C_i
    best_server: jax.Array   # [N] int32 strongest observed server: where an empty battery goes
    root_k: Any = None       # [N, M] sqrt(K_ij), the optimal bandwidth weights ("optimal")
    root_c: Any = None       # [N] sqrt(C_i), the optimal CPU weights ("optimal")


def candidate_terms(view, params, allocation_rule: str = "optimal") -> CandidateTerms:
    """:class:`CandidateTerms` of ``view`` (an Observation: delayed channel, or an EnvState:
    true channel, as :func:`mecjax.env.evaluate`) under ``allocation_rule``."""
    if allocation_rule not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation_rule!r}")
    p = as_params(params)
    gain = view.gain if isinstance(view, EnvState) else view.gain_observed
    se = physics.spectral_efficiency(view.tx_power[:, None], gain, p.noise_w)          # [N, M]
    bandwidth = jnp.asarray(p.bandwidth_hz, jnp.float32)
    terms = CandidateTerms(full_rate=bandwidth * se,
                           local_energy=physics.local_energy(view.task_cycles, view.cpu_freq,
                                                             p.kappa),
                           best_server=_env.best_observed_server(view.gain_observed))
    if allocation_rule == "equal":
        return terms
    # allocation.optimal_bandwidth_shares's weights for every server at once
    k = ((p.alpha + p.beta * view.tx_power[:, None]) * view.task_bits[:, None]
         / jnp.maximum(se, 1e-12))
    return terms.replace(root_k=jnp.sqrt(k), root_c=jnp.sqrt(view.task_cycles))


def outcome_from_terms(terms: CandidateTerms, view, offload, prices, params,
                       allocation_rule: str = "optimal") -> Outcome:
    """Per-device outcome [N] of ``offload`` [N] under ``allocation_rule``: what
    :func:`outcome_of` computes (to float32 rounding), from the view's precomputed
    ``terms``."""
    p = as_params(params)
    m = p.n_servers
    off = _env.force_to_best(jnp.asarray(offload, jnp.int32),
                             view.battery < terms.local_energy, terms.best_server)
    offloading = off > 0
    if allocation_rule == "optimal":
        bw = allocation.proportional_shares(physics.gain_of_server(off, terms.root_k), off, m)
        cpu = allocation.proportional_shares(terms.root_c, off, m)
    else:
        bw = cpu = physics.equal_shares(off, m)
    full_rate = physics.gain_of_server(off, terms.full_rate)
    rate = jnp.maximum(jnp.where(offloading, bw, 1.0) * full_rate, physics.MIN_RATE_BPS)
    return _env.outcome_at_rate(off, rate, cpu, terms.local_energy, view.task_bits,
                                view.task_cycles, view.cpu_freq, view.tx_power, view.battery,
                                view.backlog, prices, p, view.device_backlog)


def outcome_of(view, offload, prices, params, allocation_rule: str = "optimal") -> Outcome:
    """Per-device outcome [N] of ``offload`` (jit-only path: no eager checks)."""
    return outcome_from_terms(candidate_terms(view, params, allocation_rule), view, offload,
                              prices, params, allocation_rule)


def mean_cost(view, offload, prices, params, allocation_rule: str = "optimal"):
    """Scalar mean weighted cost of ``offload`` [N]."""
    return jnp.mean(outcome_of(view, offload, prices, params, allocation_rule).cost)


def batch_outcomes(view, offloads, prices, params, allocation_rule: str = "optimal") -> Outcome:
    """Outcome [K, N] of each candidate in ``offloads`` [K, N], the view's terms computed
    once."""
    terms = candidate_terms(view, params, allocation_rule)
    return jax.vmap(lambda a: outcome_from_terms(terms, view, a, prices, params,
                                                 allocation_rule))(offloads)


def batch_mean_cost(view, offloads, prices, params, allocation_rule: str = "optimal"):
    """[K] mean weighted cost of each candidate in ``offloads`` [K, N] (the view's terms
    computed once)."""
    return population_cost_fn(view, prices, params, allocation_rule)(offloads)


def population_cost_fn(view, prices, params, allocation_rule: str = "optimal"):
    """offloads [K, N] -> [K] mean weighted cost of each: a search's fitness, the view's
    terms computed here, once, not in every generation."""
    terms = candidate_terms(view, params, allocation_rule)

    def fitness(offloads):
        out = jax.vmap(lambda a: outcome_from_terms(terms, view, a, prices, params,
                                                    allocation_rule))(offloads)
        return jnp.mean(out.cost, -1)

    return fitness
