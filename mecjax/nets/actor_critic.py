"""Actor and critic networks of TSG-MARL (paper section 3.2, eqs. 15-17).

Small multilayer perceptrons (``flax.linen``), applied to one agent's row of
features at a time, so one set of weights serves every agent of a class
(parameter sharing: the networks do not depend on N or M except through the
input width and the number of options M + 1).

* :class:`FollowerActor`: device features [..., 5 + 3M] -> logits [..., M + 1]
  over local execution and the M servers (eq. 2).
* :class:`LeaderActor`: one server's features [..., 4] -> a price fraction
  u in (0, 1) by a sigmoid; the posted price is
  ``price_min + u (price_max - price_min)`` (:func:`price_from_fraction`).
* :class:`FollowerCritic`: centralised Q_F [..., M + 1]: the value of each of
  the device's own options given the global state and the others' actions.
* :class:`LeaderCritic`: centralised Q_L(s, p_j) [...] of eq. 17.

What the critics see is assembled by the learner
(:mod:`mecjax.learners.tsg_marl`). :func:`apply_mlp` rebuilds an MLP from its
parameters alone, so a scheduler can run a checkpointed actor whatever hidden
sizes it was trained with.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """Dense layers with ReLU between them: [..., d_in] -> [..., out]."""

    hidden: Sequence[int]
    out: int
    final_scale: float = 1.0  # scale of the last layer's initial weights

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        init = nn.initializers.variance_scaling(self.final_scale, "fan_in", "truncated_normal")
        return nn.Dense(self.out, kernel_init=init)(x)


class FollowerActor(nn.Module):
    """pi^F(o_i): logits [..., M + 1] of device i's offloading options (eq. 2, 16)."""

    hidden: Sequence[int]
    n_options: int

    @nn.compact
    def __call__(self, device_features):
        return MLP(self.hidden, self.n_options, final_scale=0.1)(device_features)


class LeaderActor(nn.Module):
    """mu^L(o_j): price fraction u_j [...] in (0, 1) of server j (eq. 15)."""

    hidden: Sequence[int]

    @nn.compact
    def __call__(self, server_features):
        return nn.sigmoid(MLP(self.hidden, 1, final_scale=0.1)(server_features)[..., 0])


class FollowerCritic(nn.Module):
    """Q_F(s, a_{-i}, .): [..., M + 1] value of each own option of device i.

    The own action enters as the output index (Q_F(s, a_i, a_{-i}) =
    Q_F(s, a_{-i})[a_i]), the others' actions through the input.
    """

    hidden: Sequence[int]
    n_options: int

    @nn.compact
    def __call__(self, x):
        return MLP(self.hidden, self.n_options)(x)


class LeaderCritic(nn.Module):
    """Q_L(s, p_j): [...] value of server j posting price fraction u_j (eq. 17)."""

    hidden: Sequence[int]

    @nn.compact
    def __call__(self, x):
        return MLP(self.hidden, 1)(x)[..., 0]


def price_from_fraction(u, price_min, price_max):
    """Price per Gcycle in [price_min, price_max] from a fraction u in [0, 1]."""
    return price_min + jnp.clip(u, 0.0, 1.0) * (price_max - price_min)


def mlp_shape(params) -> tuple[tuple[int, ...], int]:
    """``(hidden, out)`` of the MLP inside actor/critic ``params`` (static shapes)."""
    layers = params["params"]["MLP_0"]
    names = sorted(layers, key=lambda s: int(s.split("_")[1]))
    widths = tuple(int(layers[k]["kernel"].shape[1]) for k in names)
    return widths[:-1], widths[-1]


def apply_mlp(params, x):
    """Apply actor/critic ``params`` to ``x`` without knowing the module's
    hyper-parameters: the raw MLP output (logits, or the pre-sigmoid price)."""
    hidden, out = mlp_shape(params)
    return MLP(hidden, out).apply({"params": params["params"]["MLP_0"]}, x)


def follower_logits(params, device_features):
    """[..., M + 1] logits of the follower actor ``params``."""
    return apply_mlp(params, device_features)


def leader_fraction(params, server_features):
    """[...] price fraction in (0, 1) of the leader actor ``params``."""
    return jax.nn.sigmoid(apply_mlp(params, server_features)[..., 0])
