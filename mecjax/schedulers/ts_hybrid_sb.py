"""TS-Hybrid-SB (paper section 4): the two-stage hybrid benchmark with
Stackelberg-bandit pricing.

Stage 1: confidence-based discrete PSO over offloading vectors
(:mod:`mecjax.optim.pso`). Stage 2: convex bandwidth/CPU allocation
(:mod:`mecjax.optim.allocation`). Stage 3: each server (leader) picks its
price from ``n_levels`` discrete levels with a UCB1 bandit whose reward is its
realised utility (eq. 15), normalised by the largest magnitude seen so far;
the devices (followers) respond through stage 1, which optimises their cost
under the posted prices. The bandit learns online through ``observe``.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import struct

from mecjax.config import as_params
from mecjax.optim import objective, pricing, pso
from mecjax.schedulers.base import Scheduler, fixed_prices


@struct.dataclass
class TSHybridState:
    bandit: pricing.UCBState
    arms: jnp.ndarray    # [M] levels posted this slot
    scale: jnp.ndarray   # [M] largest |utility| seen (reward normalisation)


@dataclasses.dataclass(frozen=True)
class TSHybridSB(Scheduler):
    name = "ts_hybrid_sb"
    particles: int = 30
    iterations: int = 100
    n_levels: int = 5
    exploration: float = 2.0

    def init(self, key, params):
        p = as_params(params)
        return TSHybridState(pricing.ucb_init(p.n_servers, self.n_levels),
                             jnp.zeros((p.n_servers,), jnp.int32),
                             jnp.full((p.n_servers,), 1e-6, jnp.float32))

    def act(self, key, sched_state, obs, params):
        p = as_params(params)
        arms = pricing.ucb_select(sched_state.bandit, self.exploration).astype(jnp.int32)
        prices = pricing.price_levels(p, self.n_levels)[arms]
        cfg = pso.PSOConfig(particles=self.particles, iterations=self.iterations)
        x, _ = pso.search(key, objective.population_cost_fn(obs, prices, p),
                          p.n_devices, p.n_options, cfg)
        return objective.make_decision(obs, x, prices, p), sched_state.replace(arms=arms)

    def observe(self, sched_state, transition, params):
        utility = transition.info["leader_utility"]
        scale = jnp.maximum(sched_state.scale, jnp.abs(utility))
        bandit = pricing.ucb_update(sched_state.bandit, sched_state.arms, utility / scale)
        return sched_state.replace(bandit=bandit, scale=scale)


@dataclasses.dataclass(frozen=True)
class PSOScheduler(Scheduler):
    """Stage 1 and 2 of TS-Hybrid-SB alone, at fixed prices (for the optimality-gap table)."""

    name = "pso"
    particles: int = 30
    iterations: int = 100

    def act(self, key, sched_state, obs, params):
        p = as_params(params)
        prices = fixed_prices(p)
        cfg = pso.PSOConfig(particles=self.particles, iterations=self.iterations)
        x, _ = pso.search(key, objective.population_cost_fn(obs, prices, p),
                          p.n_devices, p.n_options, cfg)
        return objective.make_decision(obs, x, prices, p), sched_state
