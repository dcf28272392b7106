"""Q-network of DRL-FGSO (paper eqs. 1-2, 5): an MLP from a device's state to
the action values of its M+1 options, one network per device.

A single network maps a device state s_i [F] (eq. 1; F = 5 + 3M for the
features of :func:`mecjax.env.features.device_features`) to
Q(s_i, .) [M+1] (eq. 2: 0 = local, j = server j). Device models are a
*batched* parameter pytree with a leading device axis [N, ...]:
:func:`init_device_params` creates N independent initialisations and
:func:`apply_devices` runs every device's states through its own parameters
(``vmap`` over the device axis). :func:`apply_q` evaluates one (e.g. the
federated global) model.

The hidden sizes are read back from the parameter shapes, so a parameter
pytree is all a scheduler needs to execute a policy.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class QNetwork(nn.Module):
    """MLP ``[..., F] -> [..., n_actions]`` with ReLU hidden layers.

    Layers are named ``Dense_0 .. Dense_{len(hidden)}`` (the last is the
    linear output layer, eq. 5's Q(s, a; theta) for every a at once).
    """

    hidden: Sequence[int]
    n_actions: int

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.n_actions)(x)


def init_params(key, in_dim: int, n_actions: int, hidden: Sequence[int]):
    """Parameters of one Q-network (flax ``{"params": {...}}`` dict)."""
    module = QNetwork(tuple(hidden), n_actions)
    return module.init(key, jnp.zeros((in_dim,), jnp.float32))


def init_device_params(key, n_devices: int, in_dim: int, n_actions: int,
                       hidden: Sequence[int]):
    """N independently initialised Q-networks: every leaf gets a leading [N] axis."""
    keys = jax.random.split(key, n_devices)
    return jax.vmap(lambda k: init_params(k, in_dim, n_actions, hidden))(keys)


def _layers(params) -> list[str]:
    inner = params["params"]
    names = sorted(inner, key=lambda s: int(s.split("_")[-1]))
    if not names or any(not n.startswith("Dense_") for n in names):
        raise ValueError(f"not QNetwork parameters: layers {sorted(inner)}")
    return names


def architecture(params) -> tuple[tuple[int, ...], int]:
    """``(hidden, n_actions)`` of a parameter pytree, from its kernel shapes
    (static: shapes are known at trace time; a leading [N] device axis is fine)."""
    widths = [int(params["params"][n]["kernel"].shape[-1]) for n in _layers(params)]
    return tuple(widths[:-1]), widths[-1]


def apply_q(params, states):
    """Q-values ``[..., M+1]`` of one model for states ``[..., F]``."""
    hidden, n_actions = architecture(params)
    return QNetwork(hidden, n_actions).apply(params, states)


def apply_devices(params, states):
    """Per-device Q-values: ``params`` with leading [N] axis, ``states``
    ``[N, K, F]`` (K states of each device) -> ``[N, K, M+1]``."""
    return jax.vmap(apply_q)(params, states)


__all__ = ["QNetwork", "apply_devices", "apply_q", "architecture", "init_device_params",
           "init_params"]
