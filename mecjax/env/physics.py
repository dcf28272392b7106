"""Closed-form physics of one slot: rate, latency, energy, payment, cost.

Pure elementwise functions over arrays; shapes broadcast. Equation numbers
refer to the paper (Badada & Muddana, 2026); the model is ``docs/model.md``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LN2 = 0.6931471805599453
MIN_RATE_BPS = 1.0  # floor so a vanishing channel gives a huge, finite latency


def path_gain(distance_m, pathloss_db_at_1km, pathloss_slope_db, min_distance_m):
    """Linear large-scale gain of 128.1 + 37.6 log10(d / km) dB path loss."""
    d_km = jnp.maximum(distance_m, min_distance_m) / 1000.0
    # Factored as 10^(-L1/10) d^(-s/10): in float32 this is ~10x more accurate
    # than 10^(-(L1 + s log10 d)/10), whose large exponent amplifies rounding.
    return 10.0 ** (-pathloss_db_at_1km / 10.0) * d_km ** (-pathloss_slope_db / 10.0)


def spectral_efficiency(tx_power, gain, noise_w):
    """log2(1 + P h / sigma^2) in bit/s/Hz (log1p keeps weak channels exact)."""
    return jnp.log1p(tx_power * gain / noise_w) / LN2


def uplink_rate(bandwidth_share, bandwidth_hz, tx_power, gain, noise_w):
    """r_ij = b_ij B log2(1 + P_i h_ij / sigma^2), floored at MIN_RATE_BPS."""
    rate = bandwidth_share * bandwidth_hz * spectral_efficiency(tx_power, gain, noise_w)
    return jnp.maximum(rate, MIN_RATE_BPS)


def local_latency(cycles, cpu_freq):
    """C_i / f_i."""
    return cycles / cpu_freq


def local_energy(cycles, cpu_freq, kappa):
    """kappa f_i^2 C_i (dynamic CMOS power times time)."""
    return kappa * cpu_freq**2 * cycles


def transmission_time(bits, rate):
    """D_i / r_ij."""
    return bits / rate


def transmission_energy(tx_power, bits, rate):
    """P_i D_i / r_ij."""
    return tx_power * bits / rate


def edge_compute_time(cycles, cpu_share, server_cpu_hz):
    """C_i / (c_ij F_j)."""
    return cycles / (cpu_share * server_cpu_hz)


def queue_wait(backlog_cycles, server_cpu_hz):
    """Time to clear the work already queued at a server: W_j = Q_j / F_j."""
    return backlog_cycles / server_cpu_hz


def payment(price_per_gcycle, cycles):
    """p_j C_i / 1e9: the device pays per Gcycle served."""
    return price_per_gcycle * cycles * 1e-9


def weighted_cost(latency, energy, pay, alpha, beta, gamma):
    """alpha L + beta E + gamma payment: the device cost of eqs. 3 and 16."""
    return alpha * latency + beta * energy + gamma * pay


def server_energy(cycles_served, server_cpu_hz, server_kappa):
    """E_j = kappa_s F_j^2 (cycles served): the leader's energy in eq. 15."""
    return server_kappa * server_cpu_hz**2 * cycles_served


def leader_utility(price, gcycles_served, energy_j, mean_delay_s, leader_lambda, leader_mu):
    """U_j = p_j (Gcycles served) - lambda E_j - mu D_j (eq. 15)."""
    return price * gcycles_served - leader_lambda * energy_j - leader_mu * mean_delay_s


def server_onehot(offload, n_servers):
    """[N, M] bool: device i offloads to server j (action j+1). For the few computations
    that need every (device, server) pair; per-server sums and each device's server's
    value are :func:`per_server_sum` and :func:`per_device_of_server`."""
    return offload[..., :, None] == jnp.arange(1, n_servers + 1)


# Up to this many servers each device's server's value is picked by a chain of M
# compare-and-selects, and per-server sums are one masked [..., M, N] sum over the devices;
# above it, by one gather and one scatter-add. On a CPU the selects fuse with the arithmetic
# around them and ran evaluate about 1.5x faster than gathers at M = 3 (a gather is a loop
# XLA does not vectorise); their cost grows with M, the gather's does not. The sums as one
# [M, N] reduction (the devices still the minor axis; the floats differed from M separate
# masked sums' by one ulp at most where compared) ran evaluate 1.3x and the searches
# 1.7-1.8x faster.
SELECT_MAX_SERVERS = 8


def server_index(offload):
    """[N] int32 index of each device's server (action j -> j - 1; 0 for local devices, a
    valid placeholder index whose values the callers mask out)."""
    return jnp.maximum(offload - 1, 0).astype(jnp.int32)


def per_server_sum(offload, values, n_servers):
    """[M] sum of per-device ``values`` [N] over the devices on each server (local devices
    add nothing). Leading batch axes [..., N] -> [..., M]."""
    values = jnp.broadcast_to(values, offload.shape)
    zero = jnp.zeros((), values.dtype)
    if n_servers <= SELECT_MAX_SERVERS:
        on = offload[..., None, :] == jnp.arange(1, n_servers + 1)[:, None]   # [..., M, N]
        return jnp.sum(jnp.where(on, values[..., None, :], zero), axis=-1)
    if offload.ndim > 1:
        return jax.vmap(per_server_sum, (0, 0, None))(offload, values, n_servers)
    values = jnp.where(offload > 0, values, zero)
    return jnp.zeros((n_servers,), values.dtype).at[server_index(offload)].add(values)


def _pick(offload, table, default):
    """[..., N] ``table[..., a - 1]`` for each action a > 0, ``default`` [..., 1] for a = 0;
    ``table`` [..., M] or [..., N, M] (a value per device and server)."""
    per_device = table.ndim == offload.ndim + 1
    m = table.shape[-1]
    if m <= SELECT_MAX_SERVERS:
        out = jnp.broadcast_to(default, offload.shape).astype(table.dtype)
        for j in range(m):
            out = jnp.where(offload == j + 1, table[..., j] if per_device else table[..., j:j + 1],
                            out)
        return out
    if per_device:
        mine = jnp.take_along_axis(table, server_index(offload)[..., None], axis=-1)[..., 0]
    else:
        table = jnp.broadcast_to(table, offload.shape[:-1] + table.shape[-1:])
        mine = jnp.take_along_axis(table, server_index(offload), axis=-1)
    return jnp.where(offload > 0, mine, default)


def per_device_of_server(offload, per_server):
    """[N] the value of each device's server from ``per_server`` [M] (0 for local devices).
    Leading batch axes broadcast: [..., N] and [..., M] -> [..., N]."""
    per_server = jnp.asarray(per_server)
    return _pick(offload, per_server, jnp.zeros((), per_server.dtype))


def of_server(offload, value):
    """Each device's value of a per-server constant: ``value`` itself if it is a scalar
    (the same for every server: no work), else [N] the entry of each device's server
    from ``value`` [M], with the first server's value for local devices (a finite
    placeholder: their edge terms are masked out)."""
    if jnp.ndim(value) == 0:
        return value
    value = jnp.asarray(value)
    return _pick(offload, value, value[..., 0:1])


def gain_of_server(offload, gain):
    """[N] each device's value for its own server from ``gain`` [N, M] (a channel gain, or
    any per device-server quantity; 0 for local devices)."""
    return _pick(offload, gain, jnp.zeros((), gain.dtype))


def equal_shares(offload, n_servers):
    """[N] 1 / (devices on my server) for offloading devices, 0 for local ones."""
    counts = per_server_sum(offload, jnp.ones(offload.shape, jnp.float32), n_servers)
    mine = per_device_of_server(offload, counts)
    return jnp.where(mine > 0, 1.0 / jnp.maximum(mine, 1.0), 0.0)


def sqrt_cycle_cpu_shares(offload, cycles, n_servers):
    """[N] CPU shares proportional to sqrt(C_i) per server.

    For fixed assignments this minimises the sum of edge compute times: the
    Lagrangian of min sum C_i/(c_i F) s.t. sum c_i = 1 gives c_i ~ sqrt(C_i),
    and the total is (sum sqrt C_i)^2 / F.
    """
    root = jnp.sqrt(cycles)
    mine = per_device_of_server(offload, per_server_sum(offload, root, n_servers))
    return jnp.where(mine > 0, root / jnp.where(mine > 0, mine, 1.0), 0.0)
