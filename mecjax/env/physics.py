"""Closed-form physics of one slot: rate, latency, energy, payment, cost.

Pure elementwise functions over arrays; shapes broadcast. Equation numbers
refer to the paper (Badada & Muddana, 2026); the model is ``docs/model.md``.
"""

from __future__ import annotations

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
    """[N, M] bool: device i offloads to server j (action j+1)."""
    return offload[..., :, None] == jnp.arange(1, n_servers + 1)


def per_server_sum(onehot, values):
    """[M] sum of per-device values over the devices on each server."""
    return jnp.sum(jnp.where(onehot, values[..., :, None], 0.0), axis=-2)


def per_device_of_server(onehot, per_server):
    """[N] the value of each device's server (0 for local devices)."""
    return jnp.sum(jnp.where(onehot, per_server[..., None, :], 0.0), axis=-1)


def of_server(onehot, value):
    """Each device's value of a per-server constant: ``value`` itself if it is a scalar
    (the same for every server: no work), else [N] the entry of each device's server
    from ``value`` [M], with the first server's value for local devices (a finite
    placeholder: their edge terms are masked out)."""
    if jnp.ndim(value) == 0:
        return value
    value = jnp.asarray(value)
    mine = per_device_of_server(onehot, jnp.broadcast_to(value, onehot.shape[-1:]))
    return jnp.where(jnp.any(onehot, axis=-1), mine, value[0])


def equal_shares(offload, n_servers):
    """[N] 1 / (devices on my server) for offloading devices, 0 for local ones."""
    onehot = server_onehot(offload, n_servers)
    counts = jnp.sum(onehot, axis=-2).astype(jnp.float32)
    mine = per_device_of_server(onehot, counts)
    return jnp.where(mine > 0, 1.0 / jnp.maximum(mine, 1.0), 0.0)


def sqrt_cycle_cpu_shares(offload, cycles, n_servers):
    """[N] CPU shares proportional to sqrt(C_i) per server.

    For fixed assignments this minimises the sum of edge compute times: the
    Lagrangian of min sum C_i/(c_i F) s.t. sum c_i = 1 gives c_i ~ sqrt(C_i),
    and the total is (sum sqrt C_i)^2 / F.
    """
    onehot = server_onehot(offload, n_servers)
    root = jnp.sqrt(cycles)
    totals = per_server_sum(onehot, root)
    mine = per_device_of_server(onehot, totals)
    return jnp.where(mine > 0, root / jnp.where(mine > 0, mine, 1.0), 0.0)
