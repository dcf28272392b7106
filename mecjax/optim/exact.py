"""The exhaustive optimum of one slot: all (M+1)^N offloading vectors.

Each candidate gets the closed-form optimal allocation (by default), so the
result is the optimum of the whole slot problem for fixed prices: the
yardstick every heuristic is scored against. Candidates are decoded from
their index on the fly and evaluated in chunks, so memory stays flat.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mecjax.config import as_params
from mecjax.env.env import is_concrete
from mecjax.optim import objective

MAX_CANDIDATES = 1 << 22  # about 4.2 million: N <= 11 at M = 3, N <= 22 at M = 1


def n_candidates(n_devices: int, n_servers: int) -> int:
    return (n_servers + 1) ** n_devices


def check_size(n_devices: int, n_servers: int) -> None:
    """Refuse instances too large to enumerate, naming the limit."""
    count = n_candidates(n_devices, n_servers)
    if count > MAX_CANDIDATES:
        raise ValueError(
            f"exact: (M+1)^N = {n_servers + 1}^{n_devices} = {count:.3g} candidates exceeds "
            f"the limit of {MAX_CANDIDATES} (N <= {max_devices(n_servers)} at M = {n_servers}); "
            f"use a heuristic scheduler for larger instances")


def max_devices(n_servers: int) -> int:
    n = 0
    while n_candidates(n + 1, n_servers) <= MAX_CANDIDATES:
        n += 1
    return n


def decode(index, n_devices: int, n_options: int):
    """[..., N] base-(M+1) digits of candidate ``index`` (device 0 least significant)."""
    powers = n_options ** jnp.arange(n_devices, dtype=jnp.int32)
    return ((index[..., None] // powers) % n_options).astype(jnp.int32)


def exact_offload(view, prices, params, allocation_rule="optimal", chunk: int = 4096):
    """Returns ``(offload [N], mean cost)`` of the best of all (M+1)^N vectors."""
    p = as_params(params)
    check_size(p.n_devices, p.n_servers)
    if is_concrete((view, prices, p)):
        # called eagerly: the candidates' terms and the scan as one compiled program,
        # not the terms' operations compiled and dispatched one by one
        return _exact_offload_jit(view, prices, p, allocation_rule, chunk)
    return _exact_offload(view, prices, p, allocation_rule, chunk)


def _exact_offload(view, prices, p, allocation_rule, chunk):
    total = n_candidates(p.n_devices, p.n_servers)
    chunk = min(chunk, total)
    n_chunks = -(-total // chunk)
    fitness = objective.population_cost_fn(view, prices, p, allocation_rule)

    def scan_chunk(best, c):
        idx = c * chunk + jnp.arange(chunk, dtype=jnp.int32)
        cand = decode(jnp.minimum(idx, total - 1), p.n_devices, p.n_options)
        cost = fitness(cand)
        cost = jnp.where(idx < total, cost, jnp.inf)
        k = jnp.argmin(cost)
        better = cost[k] < best[1]
        return (jnp.where(better, idx[k], best[0]), jnp.where(better, cost[k], best[1])), None

    (best_idx, best_cost), _ = jax.lax.scan(scan_chunk, (jnp.int32(0), jnp.float32(jnp.inf)),
                                            jnp.arange(n_chunks))
    return decode(best_idx, p.n_devices, p.n_options), best_cost


_exact_offload_jit = jax.jit(_exact_offload, static_argnums=(3, 4))
