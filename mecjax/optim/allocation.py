"""Convex resource allocation for a fixed offloading vector (closed forms).

For a fixed assignment the weighted cost separates per server into

    sum_i K_i / b_i  (transmission: latency and energy)   s.t. sum_i b_i <= 1
    sum_i alpha C_i / (c_i F)  (edge computing latency)   s.t. sum_i c_i <= 1

with K_i = (alpha + beta P_i) D_i / (B se_i) and se_i the spectral efficiency.
The KKT conditions of min sum K_i / b_i on the simplex give b_i ~ sqrt(K_i)
and the minimum (sum sqrt K_i)^2; likewise c_i ~ sqrt(C_i). Both are the
global optimum (the objectives are convex in the shares).
"""

from __future__ import annotations

import jax.numpy as jnp

from mecjax.config import as_params
from mecjax.env import physics
from mecjax.env.env import forced_offload
from mecjax.env.types import Decision, EnvState


def proportional_shares(weights, offload, n_servers):
    """[N] ``weights`` [N] divided by their sum over each device's server (0 for local
    devices): the optimal allocation's shares given its weights."""
    w = jnp.where(offload > 0, weights, 0.0)
    total = physics.per_device_of_server(offload, physics.per_server_sum(offload, w, n_servers))
    return jnp.where(offload > 0, w / jnp.where(total > 0, total, 1.0), 0.0)


def optimal_bandwidth_shares(view, offload, params):
    """[N] bandwidth shares minimising the transmission part of the weighted cost.

    ``view``: an Observation (delayed channel) or EnvState (true channel).
    """
    p = as_params(params)
    gain = view.gain if isinstance(view, EnvState) else view.gain_observed
    h = physics.gain_of_server(offload, gain)
    se = jnp.maximum(physics.spectral_efficiency(view.tx_power, h, p.noise_w), 1e-12)
    k = (p.alpha + p.beta * view.tx_power) * view.task_bits / se
    return proportional_shares(jnp.sqrt(k), offload, p.n_servers)


def optimal_cpu_shares(view, offload, params):
    """[N] CPU shares ~ sqrt(C_i) per server: minimum total edge compute time."""
    p = as_params(params)
    return physics.sqrt_cycle_cpu_shares(offload, view.task_cycles, p.n_servers)


def allocate(view, offload, prices, params) -> Decision:
    """The decision with optimal bandwidth and CPU shares for the assignment
    that will be executed: ``offload`` after empty-battery forcing."""
    p = as_params(params)
    local_e = physics.local_energy(view.task_cycles, view.cpu_freq, p.kappa)
    offload = forced_offload(jnp.asarray(offload, jnp.int32), view.battery, local_e,
                             view.gain_observed)
    return Decision(offload, prices, optimal_bandwidth_shares(view, offload, params),
                    optimal_cpu_shares(view, offload, params))
