"""Slot-to-slot dynamics: workload, fading, mobility, battery, backlog.

Every random quantity enters as uniforms in (0, 1) so the NumPy model
(``mecjax.env.numpy_model``) can be fed the same draws and compared exactly.
Shapes: N devices, M servers.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from mecjax.config import remote_servers
from mecjax.env import physics

TWO_PI = 2.0 * math.pi
SQRT12 = math.sqrt(12.0)


def server_layout(n_servers: int, area_m, radius_m):
    """[M, 2] servers evenly spread on a circle around the area's centre."""
    angle = jnp.pi / 2 + TWO_PI * jnp.arange(n_servers) / n_servers
    radius = radius_m if n_servers > 1 else 0.0 * radius_m
    centre = area_m / 2
    return jnp.stack([centre + radius * jnp.cos(angle), centre + radius * jnp.sin(angle)], -1)


def distances(positions, server_positions):
    """[N, M] Euclidean device-server distances."""
    diff = positions[:, None, :] - server_positions[None, :, :]
    return jnp.sqrt(jnp.sum(diff**2, axis=-1))


def reach_remote(path_gain, remote):
    """[N, M] ``path_gain`` with each remote server's column (``remote``: static tuple of
    M bools) replaced by the device's gain to its strongest edge site: a device reaches
    a cloud through the radio of the edge site it is attached to (largest large-scale
    gain, as LTE/NR attach by averaged received power), so the cloud's position does not
    matter. Returns ``path_gain`` itself when no server is remote."""
    if not any(remote):
        return path_gain
    edge = np.flatnonzero(~np.asarray(remote))
    strongest = jnp.max(path_gain[..., edge], axis=-1, keepdims=True)
    return jnp.where(np.asarray(remote), strongest, path_gain)


def large_scale_gain(positions, server_positions, p):
    """[N, M] path gain of every device-server pair from their distance
    (:func:`mecjax.env.physics.path_gain`), remote servers reached through the strongest
    edge site (:func:`reach_remote`). ``p``: Scenario or EnvParams."""
    path = physics.path_gain(distances(positions, server_positions), p.pathloss_db_at_1km,
                             p.pathloss_slope_db, p.min_distance_m)
    return reach_remote(path, remote_servers(p))


def complex_normal(u1, u2):
    """CN(0, 1) sample (re, im) from two uniforms by Box-Muller: |g|^2 ~ Exp(1)."""
    r = jnp.sqrt(-jnp.log(u1))
    angle = TWO_PI * u2
    return r * jnp.cos(angle), r * jnp.sin(angle)


def gauss_markov(g_re, g_im, e_re, e_im, rho):
    """g' = rho g + sqrt(1 - rho^2) e: first-order correlated Rayleigh fading."""
    s = jnp.sqrt(1.0 - rho**2)
    return rho * g_re + s * e_re, rho * g_im + s * e_im


def channel_gain(path_gain, g_re, g_im):
    """h = path gain * |g|^2."""
    return path_gain * (g_re**2 + g_im**2)


def centred_uniform(u, std):
    """Zero-mean uniform noise with standard deviation ``std``."""
    return SQRT12 * std * (u - 0.5)


def burst_update(burst, u, rho, std):
    """AR(1) bursty load: b' = rho b + sqrt(1 - rho^2) eps, eps uniform with std ``std``.

    The stationary standard deviation is ``std``.
    """
    return rho * burst + jnp.sqrt(1.0 - rho**2) * centred_uniform(u, std)


def load_intensity(t, phase, burst, mean, amplitude, period):
    """[N] expected task intensity in [0, 1]: periodic (daily-like) plus burst."""
    periodic = amplitude * jnp.sin(TWO_PI * t / period + phase)
    return jnp.clip(mean + periodic + burst, 0.0, 1.0)


def task_from_load(load, u, noise, lo, hi):
    """Task size in [lo, hi] at intensity ``load`` with uniform jitter of half-width ``noise``."""
    w = jnp.clip(load + noise * (2.0 * u - 1.0), 0.0, 1.0)
    return lo + w * (hi - lo)


def battery_update(battery, energy, u_harvest, harvest_max, capacity):
    """Spend this slot's energy, harvest U(0, harvest_max), stay within [0, capacity]."""
    return jnp.clip(battery - energy + u_harvest * harvest_max, 0.0, capacity)


def backlog_update(backlog, work_in, server_cpu_hz, slot_s):
    """Q' = max(0, Q + work in - F tau): work a server cannot finish carries over.

    The same rule serves a device's own queue (``server_cpu_hz`` = its f_i)."""
    return jnp.maximum(backlog + work_in - server_cpu_hz * slot_s, 0.0)


def random_walk(positions, u_step, u_angle, step_max, area_m):
    """One random-walk step of uniform length in [0, step_max], uniform direction, kept in the area."""
    step = step_max * u_step
    angle = TWO_PI * u_angle
    moved = positions + jnp.stack([step * jnp.cos(angle), step * jnp.sin(angle)], -1)
    return jnp.clip(moved, 0.0, area_m)
