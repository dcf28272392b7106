"""Pricing: leader utility (eq. 15), follower cost (eq. 16), a Stackelberg
price search and a UCB bandit over discrete price levels per server."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from mecjax.config import as_params
from mecjax.env import metrics
from mecjax.optim import game, objective


def initial_prices(params):
    """[M] every server posts the scenario's initial price."""
    p = as_params(params)
    return jnp.full((p.n_servers,), p.price_init, jnp.float32)


def price_levels(params, n_levels: int):
    """[L] evenly spaced price levels over (price_min, price_max]."""
    p = as_params(params)
    frac = jnp.arange(1, n_levels + 1, dtype=jnp.float32) / n_levels
    return p.price_min + frac * (p.price_max - p.price_min)


def follower_costs(view, offload, prices, params, allocation_rule="equal"):
    """[N] eq. 16: each device's weighted cost L + E + payment under ``prices``."""
    return objective.outcome_of(view, offload, prices, params, allocation_rule).cost


def leader_utilities(view, offload, prices, params, allocation_rule="equal"):
    """[M] eq. 15: U_j = p_j (Gcycles served) - lambda E_j - mu D_j."""
    p = as_params(params)
    out = objective.outcome_of(view, offload, prices, params, allocation_rule)
    return metrics.server_accounts(out.offload, prices, view.task_cycles, out.latency,
                                   p)["leader_utility"]


def stackelberg_prices(view, params, n_levels: int = 5, rounds: int = 2, init_prices=None,
                       allocation_rule="equal"):
    """Leaders (servers) choose prices anticipating the followers' response.

    Followers respond greedily (:func:`mecjax.optim.game.greedy`) to any price
    vector. Leaders revise in turn, each to the price level maximising its own
    utility given the others' prices and the followers' response, for
    ``rounds`` rounds (a leader-level best-response search for a Stackelberg
    equilibrium on the price grid). Returns ``(prices [M], offload [N])``.
    """
    p = as_params(params)
    levels = price_levels(p, n_levels)
    prices0 = jnp.full((p.n_servers,), p.price_init) if init_prices is None else init_prices

    def leader_turn(prices, j):
        def utility_at(level):
            trial = prices.at[j].set(level)
            response = game.greedy(view, trial, params, allocation_rule)
            return leader_utilities(view, response, trial, params, allocation_rule)[j]

        utils = jax.vmap(utility_at)(levels)
        return prices.at[j].set(levels[jnp.argmax(utils)]), None

    order = jnp.tile(jnp.arange(p.n_servers), rounds)
    prices, _ = jax.lax.scan(leader_turn, prices0.astype(jnp.float32), order)
    return prices, game.greedy(view, prices, params, allocation_rule)


@struct.dataclass
class UCBState:
    """Per-server UCB1 statistics over L price levels."""

    counts: jax.Array  # [M, L]
    means: jax.Array   # [M, L] running mean reward
    t: jax.Array       # [] total rounds


def ucb_init(n_servers: int, n_levels: int) -> UCBState:
    return UCBState(jnp.zeros((n_servers, n_levels)), jnp.zeros((n_servers, n_levels)),
                    jnp.zeros((), jnp.float32))


def ucb_select(state: UCBState, exploration: float = 2.0):
    """[M] arm per server: every arm once first, then max mean + sqrt(c ln t / n)."""
    bonus = jnp.sqrt(exploration * jnp.log(jnp.maximum(state.t, 1.0)) / jnp.maximum(state.counts, 1.0))
    score = jnp.where(state.counts > 0, state.means + bonus, jnp.inf)
    return jnp.argmax(score, axis=-1)


def ucb_update(state: UCBState, arms, rewards) -> UCBState:
    """Record ``rewards`` [M] for the pulled ``arms`` [M]."""
    onehot = jax.nn.one_hot(arms, state.counts.shape[-1])
    counts = state.counts + onehot
    means = state.means + onehot * (rewards[:, None] - state.means) / jnp.maximum(counts, 1.0)
    return UCBState(counts, means, state.t + 1)
