"""Per-slot metrics of the model (docs/model.md): latency, energy, throughput,
Jain fairness, utility, leader revenue and utility, deadline misses and failures."""

from __future__ import annotations

import jax.numpy as jnp

from mecjax.env import physics


def jain_fairness(x):
    """(sum x)^2 / (n sum x^2) over the last axis; 1 when all equal, 1/n when one takes all."""
    n = x.shape[-1]
    denom = n * jnp.sum(x**2, axis=-1)
    return jnp.where(denom > 0, jnp.sum(x, axis=-1) ** 2 / jnp.where(denom > 0, denom, 1.0), 1.0)


def all_local_cost(task_cycles, cpu_freq, p, device_backlog=None):
    """[N] the weighted cost each device would pay computing its task itself (behind
    its own queue ``device_backlog`` [N] with ``Scenario.device_queue``)."""
    if p.device_queue and device_backlog is not None:
        lat = physics.local_latency(device_backlog + task_cycles, cpu_freq)
    else:
        lat = physics.local_latency(task_cycles, cpu_freq)
    en = physics.local_energy(task_cycles, cpu_freq, p.kappa)
    return physics.weighted_cost(lat, en, 0.0, p.alpha, p.beta, p.gamma)


def server_accounts(offload, prices, task_cycles, latency, p):
    """Per-server economics of one slot (eq. 15).

    ``offload`` [N] are the tasks each server serves (a failed task: 0, none).
    Returns dict of [M] arrays: gcycles served, revenue, server energy, mean
    delay of its tasks (0 when idle) and leader utility.
    """
    m = p.n_servers
    cycles = physics.per_server_sum(offload, task_cycles, m)
    count = physics.per_server_sum(offload, jnp.ones(offload.shape, jnp.float32), m)
    delay = physics.per_server_sum(offload, latency, m) / jnp.maximum(count, 1.0)
    gcycles = cycles * 1e-9
    energy = physics.server_energy(cycles, p.server_cpu_hz, p.server_kappa)
    return {
        "gcycles": gcycles,
        "revenue": prices * gcycles,
        "server_energy": energy,
        "server_delay": delay,
        "leader_utility": physics.leader_utility(prices, gcycles, energy, delay,
                                                 p.leader_lambda, p.leader_mu),
    }


def slot_metrics(task_bits, task_cycles, cpu_freq, outcome, prices, p, task_deadline=None,
                 device_backlog=None):
    """Scalar metrics of one slot from the per-device outcome of a decision.

    latency_ms: mean latency; energy_j: mean device energy per task;
    throughput_mbps: mean D_i / L_i (0 for a failed task); fairness: Jain over the same;
    utility: fraction of the all-local weighted cost saved; welfare_cost: the mean
    weighted cost without payments (alpha L + beta E: payments are transfers between
    devices and servers, not a loss to the system); revenue: total leader revenue;
    offload_fraction: share of devices whose executed action is a server (failed or not);
    failed: share of tasks that failed (``Scenario.battery_hard``); deadline_miss (when
    ``task_deadline`` [N] is given): share of tasks whose latency exceeds their deadline,
    a failed task counting as missed. ``device_backlog`` [N]: the devices' own queues
    (``Scenario.device_queue``), part of the all-local reference.
    """
    throughput = task_bits / outcome.latency
    served = outcome.offload
    if p.battery_hard:
        throughput = jnp.where(outcome.failed, 0.0, throughput)
        served = jnp.where(outcome.failed, 0, served)
    local = all_local_cost(task_cycles, cpu_freq, p, device_backlog)
    accounts = server_accounts(served, prices, task_cycles, outcome.latency, p)
    extra = {"failed": jnp.mean(outcome.failed.astype(jnp.float32), axis=-1)}
    if task_deadline is not None:
        missed = (outcome.latency > task_deadline) | outcome.failed
        extra["deadline_miss"] = jnp.mean(missed.astype(jnp.float32), axis=-1)
    return {
        "latency_ms": 1e3 * jnp.mean(outcome.latency, axis=-1),
        "energy_j": jnp.mean(outcome.energy, axis=-1),
        "throughput_mbps": 1e-6 * jnp.mean(throughput, axis=-1),
        "fairness": jain_fairness(throughput),
        "utility": 1.0 - jnp.sum(outcome.cost, axis=-1) / jnp.sum(local, axis=-1),
        "mean_cost": jnp.mean(outcome.cost, axis=-1),
        "welfare_cost": jnp.mean(outcome.cost - p.gamma * outcome.payment, axis=-1),
        "revenue": jnp.sum(accounts["revenue"], axis=-1),
        "leader_utility": accounts["leader_utility"],
        "offload_fraction": jnp.mean((outcome.offload > 0).astype(jnp.float32), axis=-1),
        **extra,
    }
