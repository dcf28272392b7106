"""Per-agent features of an observation: THE device state (eq. 1) and server
state that every learner, scheduler and the graph view use.

All features are scaled to about [0, 1] so that networks need no input
normalisation:

* :func:`scaled_db`: a channel gain h in scaled dB, ``(10 log10 h + 110) / 30``
  (about -0.3 .. 2 over the default geometry: 117 dB path loss at the far
  corner, 53 dB at the 10 m minimum distance), with h floored at
  ``GAIN_FLOOR`` and the result clipped to +-``FEATURE_CLIP`` (see there).
* :func:`device_features` ``[N, 5 + 3M]``: device i's state s_i^t (eq. 1).
* :func:`server_features` ``[M, 4]``: server j's own view (the leaders' input).

Learners that feed more inputs (GAT embeddings, say) concatenate them onto
these columns; nothing rebuilds them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mecjax.config import EnvParams, Scenario, as_params
from mecjax.env import physics
from mecjax.env.types import EnvState, Observation

Params = Scenario | EnvParams

# log10(0) = -inf: a vanishing channel (a deep fade) is floored at -200 dB, i.e. -3
# in scaled dB, far below the gains the model produces (about -150 dB at the far
# corner in a 1e-3 fade), so the floor does not change a realistic feature.
GAIN_FLOOR = 1e-20
# Physical gains stay below 0 dB (scaled 11/3); the clip bounds gains that are not
# physical, such as a forecaster's extrapolation fed back as an observed channel.
FEATURE_CLIP = 5.0
SERVER_FEATURES = 4


def scaled_db(gain):
    """``clip((10 log10 max(h, GAIN_FLOOR) + 110) / 30, -FEATURE_CLIP, FEATURE_CLIP)``:
    a linear channel gain (any shape) in scaled dB, always finite for h >= 0."""
    db = (10.0 * jnp.log10(jnp.maximum(gain, GAIN_FLOOR)) + 110.0) / 30.0
    return jnp.clip(db, -FEATURE_CLIP, FEATURE_CLIP)


def from_scaled_db(s):
    """Inverse of :func:`scaled_db` (within its floor and clip): the linear gain."""
    return 10.0 ** ((30.0 * s - 110.0) / 10.0)


def device_feature_dim(n_servers: int) -> int:
    """F = 5 + 3M: the width of a device state (eq. 1)."""
    return 5 + 3 * n_servers


def device_features(obs: Observation | EnvState, params: Params, prices=None) -> jax.Array:
    """[N, 5 + 3M] float32: every device's state s_i (eq. 1), scaled to about [0, 1].

    Columns: battery / capacity, D / D_max, C / C_max, f / f_max, P / P_max
    (the device's own five); the observed channel to each server in
    :func:`scaled_db` [M] (last slot's: CSI delay); each server's price /
    p_max [M] and backlog in slots of its work [M] (shared by all devices).
    ``prices`` [M] are the prices the devices respond to: by default the ones
    posted last slot (``obs.prices``); a Stackelberg leader that posts its
    price before the followers move passes the prices of this slot.
    ``obs`` may also be an :class:`EnvState` (only observed fields are read).
    """
    p = as_params(params)
    prices = obs.prices if prices is None else prices
    own = jnp.stack([obs.battery / p.battery_capacity_j, obs.task_bits / p.task_bits_max,
                     obs.task_cycles / p.task_cycles_max, obs.cpu_freq / p.device_cpu_max_hz,
                     obs.tx_power / p.tx_power_max_w], -1)                             # [N, 5]
    shared = jnp.concatenate([prices / p.price_max,
                              obs.backlog / (p.server_cpu_hz * p.slot_s)])              # [2M]
    return jnp.concatenate([own, scaled_db(obs.gain_observed),
                            jnp.broadcast_to(shared, (own.shape[0], shared.shape[0]))],
                           -1).astype(jnp.float32)


def server_features(obs: Observation | EnvState, params: Params) -> jax.Array:
    """[M, 4] float32 per-server features: backlog in slots of its work, last
    price / p_max, mean over devices of the observed channel in
    :func:`scaled_db`, and offered load: the work of the devices that see it
    as their best server, in slots of its capacity."""
    p = as_params(params)
    capacity = p.server_cpu_hz * p.slot_s
    best = jnp.argmax(obs.gain_observed, -1).astype(jnp.int32) + 1
    offered = physics.per_server_sum(best, obs.task_cycles, p.n_servers) / capacity
    return jnp.stack([obs.backlog / capacity, obs.prices / p.price_max,
                      jnp.mean(scaled_db(obs.gain_observed), axis=0), offered],
                     -1).astype(jnp.float32)


__all__ = ["FEATURE_CLIP", "GAIN_FLOOR", "SERVER_FEATURES", "device_feature_dim",
           "device_features", "from_scaled_db", "scaled_db", "server_features"]
