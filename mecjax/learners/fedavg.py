"""Federated averaging (FedAvg, McMahan et al. 2017; paper eq. 7) as pure
functions over a *batched* parameter pytree.

The N local models are one pytree whose every leaf has a leading device axis
``[N, ...]``. Eq. 7 aggregates them into the global model

    theta = sum_i n_i theta_i / sum_k n_k

with n_i the amount of data device i trained on, and the global model is
broadcast back to every device. Works on any pytree (nested dicts, tuples,
flax parameter dicts, struct dataclasses) whose leaves are floating-point
arrays with the same leading axis N.

What is averaged is the caller's choice: DRL-FGSO averages the online
Q-network parameters only. Optimizer states (Adam moments and step counts)
are *not* averaged: they stay local to each device, as in FedAvg where
clients run their own optimizer between rounds. Non-floating leaves (such as
an optax step count) are refused with a ``TypeError`` instead of being
silently averaged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def normalised_weights(weights) -> jax.Array:
    """[N] float32 weights n_i / sum_k n_k (eq. 7). All-zero weights give the
    plain mean (no device has data yet: every model counts the same)."""
    w = jnp.asarray(weights, jnp.float32)
    if w.ndim != 1:
        raise ValueError(f"FedAvg weights must be a [N] vector, got shape {w.shape}")
    total = jnp.sum(w)
    uniform = jnp.full_like(w, 1.0 / w.shape[0])
    return jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), uniform)


def _check_leaf(x, n: int) -> None:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"FedAvg averages floating-point leaves only; got a {x.dtype} leaf "
                        f"(optimizer step counts and other integer state are not averaged)")
    if x.ndim < 1 or x.shape[0] != n:
        raise ValueError(f"every leaf needs the leading device axis [N={n}, ...]; got shape "
                         f"{x.shape}")


def average(params, weights):
    """The global model of eq. 7: ``sum_i w_i theta_i`` with w = n / sum n.

    ``params``: pytree with leaves [N, ...]; ``weights``: [N] data counts n_i
    (any non-negative numbers). Returns the pytree without the device axis,
    each leaf in its own dtype (accumulated in float32 at least).
    """
    w = normalised_weights(weights)
    n = w.shape[0]

    def avg(x):
        _check_leaf(x, n)
        dtype = x.dtype
        acc = jnp.promote_types(x.dtype, jnp.float32)
        x = x.astype(acc)
        # theta_0 + sum_i w_i (theta_i - theta_0) equals eq. 7 (the weights sum to 1)
        # and returns identical models bit-exactly, whatever the rounding of sum w.
        return (x[0] + jnp.tensordot(w.astype(acc), x - x[0], axes=1)).astype(dtype)

    return jax.tree.map(avg, params)


def broadcast(global_params, n_devices: int):
    """Every device receives the global model: leaves ``[...] -> [N, ...]``."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (n_devices,) + x.shape), global_params)


def aggregate(params, weights):
    """One FedAvg round: eq. 7 then broadcast, ``[N, ...] -> [N, ...]``."""
    w = jnp.asarray(weights)
    return broadcast(average(params, w), w.shape[0])


__all__ = ["aggregate", "average", "broadcast", "normalised_weights"]
