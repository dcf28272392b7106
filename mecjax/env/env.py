"""The pure-functional MEC environment: reset, step, evaluate, views.

gymnax-style: ``reset(key, params) -> (obs, state)`` and
``step(key, state, decision, params) -> (obs, state, reward, done, info)``,
pure and jittable; ``params`` is a :class:`~mecjax.Scenario` (static) or an
:class:`~mecjax.config.EnvParams` pytree (vmappable). No auto-reset: an
episode is ``horizon`` slots and ``done`` says when it has ended.

Called eagerly (outside any ``jit``), ``step`` and ``evaluate`` check the
decision and raise ``ValueError`` naming the offending field. Inside ``jit``
the decision is repaired instead (clipped, shares renormalised) and
``info["invalid_decision"]`` and the per-field flags say so.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mecjax.config import EnvParams, Scenario, as_params, per_server, remote_servers
from mecjax.env import dynamics, metrics, physics, rng
from mecjax.env.types import Decision, EnvState, Observation, Outcome

Params = Scenario | EnvParams
SHARE_TOL = 1e-5

# Noise streams: each quantity has its own stream (see rng.uniform). Step streams
# are numbered from 100, so a key used for both a reset and a step gives
# unrelated words. New streams are appended: the hash generator's words of the
# earlier streams stay what they were.
_RESET_STREAMS = ("pos_x", "pos_y", "cpu", "power", "phase", "burst", "fade_prev_1",
                  "fade_prev_2", "fade_1", "fade_2", "bits", "cycles", "battery", "deadline")
_STEP_STREAMS = ("fade_1", "fade_2", "burst", "bits", "cycles", "harvest",
                 "move_step", "move_angle", "deadline")


# --------------------------------------------------------------------------
# Noise: every random number of the model, as uniforms in (0, 1).
# --------------------------------------------------------------------------

def _noise_shapes(names, p: EnvParams) -> dict[str, tuple[int, ...]]:
    n, m = p.n_devices, p.n_servers
    shapes = {}
    for name in names:
        if name.startswith("fade"):
            shapes[name] = (n, m)
        elif name.startswith("move") and not p.mobility:
            continue
        else:
            shapes[name] = (n,)
    return shapes


def _draw(key, names, base_stream, p):
    """{name: uniforms in (0, 1) of its shape} from ``key``, by ``p.noise_rng``."""
    shapes = _noise_shapes(names, p)
    if p.noise_rng == "jax":
        # One call of the key's own generator for all the words, cut into the
        # quantities: one launch (rbg) or one counter range (threefry) per draw.
        sizes = [int(np.prod(shape)) for shape in shapes.values()]
        words = jax.random.bits(jax.random.fold_in(key, base_stream), (sum(sizes),),
                                jnp.uint32)
        parts = jnp.split(words, np.cumsum(sizes)[:-1])
        return {name: rng.to_unit(w).reshape(shape)
                for (name, shape), w in zip(shapes.items(), parts)}
    # Stream base_stream + i for the i-th quantity, all hashed as one array (the same
    # words as one rng.uniform call per stream, from a program about half the size).
    return rng.uniforms(rng.seed_words(key), base_stream, shapes)


def reset_noise(key: jax.Array, params: Params) -> dict[str, jax.Array]:
    """All uniforms in (0, 1) that :func:`reset_from_noise` consumes: [N] per
    device quantity, [N, M] for the fading draws; from ``Scenario.noise_rng``."""
    return _draw(key, _RESET_STREAMS, 0, as_params(params))


def step_noise(key: jax.Array, params: Params) -> dict[str, jax.Array]:
    """All uniforms in (0, 1) that :func:`advance` consumes for one slot: [N]
    per device quantity, [N, M] for the fading draws; from ``Scenario.noise_rng``."""
    return _draw(key, _STEP_STREAMS, 100, as_params(params))


def _between(u, lo, hi):
    return lo + u * (hi - lo)


def _tasks(t, phase, burst, noise, p):
    load = dynamics.load_intensity(t, phase, burst, p.load_mean, p.load_amplitude,
                                   p.load_period_slots)
    bits = dynamics.task_from_load(load, noise["bits"], p.task_noise,
                                   p.task_bits_min, p.task_bits_max)
    cycles = dynamics.task_from_load(load, noise["cycles"], p.task_noise,
                                     p.task_cycles_min, p.task_cycles_max)
    return bits, cycles


def _deadlines(noise, p):
    """[N] each task's deadline, U(deadline_min_s, deadline_max_s)."""
    return _between(noise["deadline"], p.deadline_min_s, p.deadline_max_s)


def reset_from_noise(noise: dict[str, jax.Array], params: Params) -> EnvState:
    """The initial state, given the uniforms of :func:`reset_noise`."""
    p = as_params(params)
    if p.device_xy is None:
        positions = p.area_m * jnp.stack([noise["pos_x"], noise["pos_y"]], -1)
    else:   # a fixed topology: the position draws are made but not used
        positions = jnp.asarray(p.device_xy, jnp.float32)
    if p.server_xy is None:
        servers = dynamics.server_layout(p.n_servers, p.area_m, p.server_radius_m)
    else:
        servers = jnp.asarray(p.server_xy, jnp.float32)
    path = dynamics.large_scale_gain(positions, servers, p)
    # The slot before the first: its channel is what schedulers see at t = 0.
    prev_re, prev_im = dynamics.complex_normal(noise["fade_prev_1"], noise["fade_prev_2"])
    e_re, e_im = dynamics.complex_normal(noise["fade_1"], noise["fade_2"])
    g_re, g_im = dynamics.gauss_markov(prev_re, prev_im, e_re, e_im, p.fading_rho)
    phase = dynamics.TWO_PI * noise["phase"]
    burst = dynamics.centred_uniform(noise["burst"], p.burst_std)
    t = jnp.zeros((), jnp.int32)
    bits, cycles = _tasks(t, phase, burst, noise, p)
    return EnvState(
        t=t,
        positions=positions,
        server_positions=servers,
        task_bits=bits,
        task_cycles=cycles,
        cpu_freq=_between(noise["cpu"], p.device_cpu_min_hz, p.device_cpu_max_hz),
        tx_power=_between(noise["power"], p.tx_power_min_w, p.tx_power_max_w),
        path_gain=path,
        fading_re=g_re,
        fading_im=g_im,
        gain=dynamics.channel_gain(path, g_re, g_im),
        gain_observed=dynamics.channel_gain(path, prev_re, prev_im),
        battery=p.battery_capacity_j * _between(noise["battery"], p.battery_init_min, 1.0),
        backlog=jnp.zeros((p.n_servers,), jnp.float32),
        prices=jnp.full((p.n_servers,), p.price_init, jnp.float32),
        load_phase=phase,
        burst=burst,
        task_deadline=_deadlines(noise, p),
        device_backlog=jnp.zeros((p.n_devices,), jnp.float32),
    )


def queues_after(backlog, device_backlog, task_cycles, cpu_freq, outcome: Outcome,
                 params: Params):
    """``(backlog' [M], device_backlog' [N])`` after a slot's executed ``outcome``.

    Server j: Q_j' = max(0, Q_j + (cycles of the tasks it received) - F_j tau); a failed
    task reaches no server. Device i (``Scenario.device_queue``; else ``device_backlog``
    is returned as is): FIFO, q_i' = max(0, q_i + C_i [computed locally] - f_i tau).
    """
    p = as_params(params)
    served = outcome.offload
    if p.battery_hard:
        served = jnp.where(outcome.failed, 0, served)
    work_in = physics.per_server_sum(served, task_cycles, p.n_servers)
    backlog = dynamics.backlog_update(backlog, work_in, p.server_cpu_hz, p.slot_s)
    if p.device_queue:
        local_work = jnp.where(outcome.offload == 0, task_cycles, 0.0)
        device_backlog = dynamics.backlog_update(device_backlog, local_work, cpu_freq, p.slot_s)
    return backlog, device_backlog


def advance(state: EnvState, outcome: Outcome, prices, noise, params: Params) -> EnvState:
    """The next slot's state after ``outcome`` was executed, given step uniforms."""
    p = as_params(params)
    positions, path = state.positions, state.path_gain
    if p.mobility:
        positions = dynamics.random_walk(positions, noise["move_step"], noise["move_angle"],
                                         p.mobility_step_m, p.area_m)
        path = dynamics.large_scale_gain(positions, state.server_positions, p)
    e_re, e_im = dynamics.complex_normal(noise["fade_1"], noise["fade_2"])
    g_re, g_im = dynamics.gauss_markov(state.fading_re, state.fading_im, e_re, e_im,
                                       p.fading_rho)
    burst = dynamics.burst_update(state.burst, noise["burst"], p.burst_rho, p.burst_std)
    t = state.t + 1
    bits, cycles = _tasks(t, state.load_phase, burst, noise, p)
    backlog, device_backlog = queues_after(state.backlog, state.device_backlog,
                                           state.task_cycles, state.cpu_freq, outcome, p)
    return state.replace(
        t=t,
        positions=positions,
        path_gain=path,
        task_bits=bits,
        task_cycles=cycles,
        fading_re=g_re,
        fading_im=g_im,
        gain=dynamics.channel_gain(path, g_re, g_im),
        gain_observed=state.gain,
        battery=dynamics.battery_update(state.battery, outcome.energy, noise["harvest"],
                                        p.harvest_max_j, p.battery_capacity_j),
        backlog=backlog,
        prices=prices,
        burst=burst,
        task_deadline=_deadlines(noise, p),
        device_backlog=device_backlog,
    )


# --------------------------------------------------------------------------
# Decisions: checking and repair.
# --------------------------------------------------------------------------

def _check_static(decision: Decision, p: EnvParams) -> None:
    """Shape and dtype errors: always raised, traced or not (they are static)."""
    if not isinstance(decision, Decision):
        raise TypeError(f"decision must be a mecjax.env.Decision, got {type(decision).__name__}")
    n, m = p.n_devices, p.n_servers
    off = jnp.asarray(decision.offload) if not hasattr(decision.offload, "shape") else decision.offload
    if off.shape != (n,):
        raise ValueError(f"Decision.offload has shape {tuple(off.shape)}; the scenario needs "
                         f"({n},) (one action in 0..{m} per device)")
    if not jnp.issubdtype(off.dtype, jnp.integer):
        raise ValueError(f"Decision.offload has dtype {off.dtype}; it must be an integer "
                         f"array of actions in 0..{m}")
    prices = decision.prices
    if getattr(prices, "shape", None) != (m,):
        raise ValueError(f"Decision.prices has shape {getattr(prices, 'shape', None)}; the "
                         f"scenario needs ({m},) (one price per server)")
    for name in ("bandwidth_share", "cpu_share"):
        share = getattr(decision, name)
        if share is not None and getattr(share, "shape", None) != (n,):
            raise ValueError(f"Decision.{name} has shape {getattr(share, 'shape', None)}; "
                             f"it must be ({n},) or None")


def repair_shares(share, offload, n_servers):
    """[N] valid resource shares for assignment ``offload``.

    ``None`` gives equal shares per server. Otherwise non-finite or negative
    entries count as 0, offloading devices left with no share get their
    equal share, local devices get 0, and servers whose shares sum above 1
    are scaled back to exactly 1.
    """
    equal = physics.equal_shares(offload, n_servers)
    if share is None:
        return equal
    offloading = offload > 0
    s = jnp.where(jnp.isfinite(share), jnp.clip(share, 0.0, 1.0), 0.0)
    s = jnp.where(offloading, jnp.where(s > 0, s, equal), 0.0)
    total = physics.per_device_of_server(offload, physics.per_server_sum(offload, s, n_servers))
    return jnp.where(total > 1.0, s / jnp.where(total > 1.0, total, 1.0), s)


def _share_problem(share, offload, n_servers):
    """Scalar bool: the shares as given are not a valid allocation."""
    if share is None:
        return jnp.zeros((), bool)
    bad = ~jnp.isfinite(share) | (share < 0) | (share > 1)
    bad = bad | ((offload > 0) & ~(share > 0))
    over = physics.per_server_sum(offload, jnp.where(jnp.isfinite(share), share, 0.0),
                                  n_servers) > 1 + SHARE_TOL
    return jnp.any(bad) | jnp.any(over)


def sanitize_decision(decision: Decision, params: Params) -> tuple[Decision, dict[str, jax.Array]]:
    """Repair a decision into a valid one and flag what was wrong.

    Returns ``(valid_decision, flags)`` with scalar bool flags
    ``offload_invalid``, ``prices_invalid``, ``bandwidth_share_invalid``,
    ``cpu_share_invalid`` and their disjunction ``invalid_decision``.
    Works under jit; never produces NaN.
    """
    p = as_params(params)
    _check_static(decision, p)
    m = p.n_servers
    off = decision.offload
    off_bad = jnp.any((off < 0) | (off > m))
    off = jnp.clip(off, 0, m).astype(jnp.int32)
    prices = decision.prices
    price_bad = jnp.any(~jnp.isfinite(prices) | (prices < p.price_min) | (prices > p.price_max))
    prices = jnp.clip(jnp.nan_to_num(prices, nan=p.price_min), p.price_min, p.price_max)
    flags = {
        "offload_invalid": off_bad,
        "prices_invalid": price_bad,
        "bandwidth_share_invalid": _share_problem(decision.bandwidth_share, off, m),
        "cpu_share_invalid": _share_problem(decision.cpu_share, off, m),
    }
    flags["invalid_decision"] = functools.reduce(jnp.logical_or, flags.values())
    valid = Decision(
        offload=off,
        prices=prices.astype(jnp.float32),
        bandwidth_share=None if decision.bandwidth_share is None
        else repair_shares(decision.bandwidth_share, off, m),
        cpu_share=None if decision.cpu_share is None else repair_shares(decision.cpu_share, off, m),
    )
    return valid, flags


def is_concrete(tree: Any) -> bool:
    """Whether no leaf of ``tree`` is a tracer: the call runs eagerly, outside any
    ``jit``, ``vmap`` or other transformation (where one compiled program beats
    dispatching each operation on its own)."""
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


def check_decision(decision: Decision, params: Params) -> None:
    """Eagerly validate a decision; raise ``ValueError`` naming the first bad field."""
    p = as_params(params)
    _check_static(decision, p)
    m = p.n_servers
    off = np.asarray(decision.offload)
    if off.min() < 0 or off.max() > m:
        raise ValueError(f"Decision.offload has actions in [{off.min()}, {off.max()}]; each "
                         f"must be in 0..{m} (0 = local, j = server j)")
    # Compare in float32, the precision the environment runs at (and its bounds are stored in).
    prices = np.asarray(decision.prices, np.float32)
    lo, hi = np.float32(p.price_min), np.float32(p.price_max)
    if not np.all(np.isfinite(prices)) or prices.min() < lo or prices.max() > hi:
        raise ValueError(f"Decision.prices={prices.tolist()} must be finite and in "
                         f"[price_min, price_max] = [{lo}, {hi}]")
    for name in ("bandwidth_share", "cpu_share"):
        share = getattr(decision, name)
        if share is None:
            continue
        s = np.asarray(share, np.float32)
        if not np.all(np.isfinite(s)):
            raise ValueError(f"Decision.{name} has {int(np.sum(~np.isfinite(s)))} non-finite "
                             f"entries; shares must be finite and in [0, 1]")
        if s.min() < 0 or s.max() > 1:
            raise ValueError(f"Decision.{name} must be in [0, 1]; got values in "
                             f"[{s.min()}, {s.max()}]")
        starved = (off > 0) & ~(s > 0)
        if starved.any():
            raise ValueError(f"Decision.{name} is 0 for offloading devices "
                             f"{np.flatnonzero(starved)[:8].tolist()}: an offloading device "
                             f"needs a positive share")
        for j in range(1, m + 1):
            total = s[off == j].sum()
            if total > 1 + SHARE_TOL:
                raise ValueError(f"Decision.{name} sums to {total:.6g} on server {j}; the "
                                 f"shares of one server must sum to at most 1")


# --------------------------------------------------------------------------
# Evaluation of a decision in a state, without advancing time.
# --------------------------------------------------------------------------

def forced_offload(offload, battery, local_energy, gain_observed):
    """[N] the executed actions: a device whose battery cannot pay for local
    execution (``local_energy`` [N], kappa f^2 C) offloads to its best observed server
    instead (docs/model.md: an empty battery forces offloading)."""
    return force_to_best(offload, battery < local_energy, best_observed_server(gain_observed))


def best_observed_server(gain_observed):
    """[N] int32 action of each device's strongest observed server (1..M)."""
    return jnp.argmax(gain_observed, axis=-1).astype(jnp.int32) + 1


def force_to_best(offload, cannot_local, best):
    """[N] ``offload`` with the local choice of each device that ``cannot_local`` [N]
    replaced by its ``best`` [N] server (:func:`forced_offload` given its parts)."""
    return jnp.where((offload == 0) & cannot_local, best, offload)


def local_latency(task_cycles, cpu_freq, device_backlog, params: Params):
    """[N] latency of computing locally: C_i / f_i, or (q_i + C_i) / f_i behind the
    device's own queue q_i with ``Scenario.device_queue``."""
    p = as_params(params)
    if p.device_queue:
        return physics.local_latency(device_backlog + task_cycles, cpu_freq)
    return physics.local_latency(task_cycles, cpu_freq)


def wan_delays(params: Params):
    """[M] float32 WAN round trip of each server (``Scenario.wan_delay_s``), or None
    when no server is remote (nothing to add)."""
    p = as_params(params)
    if not any(remote_servers(p)):
        return None
    return jnp.asarray(per_server(p.wan_delay_s, p.n_servers), jnp.float32)


def evaluate_arrays(task_bits, task_cycles, cpu_freq, tx_power, gain, gain_observed, battery,
                    backlog, decision: Decision, params: Params, device_backlog=None) -> Outcome:
    """Per-device outcome of a (valid) decision given the raw arrays, all [N] / [N, M] / [M]
    (``device_backlog`` [N]: the devices' own queues, used with ``Scenario.device_queue``;
    None reads as empty)."""
    p = as_params(params)
    m = p.n_servers
    local_e = physics.local_energy(task_cycles, cpu_freq, p.kappa)
    off = forced_offload(decision.offload, battery, local_e, gain_observed)
    offloading = off > 0
    # A device forced to offload has no share of its own: the shares are repaired for the
    # executed assignment (equal shares when the decision gives none).
    bw = repair_shares(decision.bandwidth_share, off, m)
    cpu = repair_shares(decision.cpu_share, off, m)
    h = physics.gain_of_server(off, gain)
    rate = physics.uplink_rate(jnp.where(offloading, bw, 1.0),
                               physics.of_server(off, p.bandwidth_hz), tx_power, h, p.noise_w)
    return outcome_at_rate(off, rate, cpu, local_e, task_bits, task_cycles, cpu_freq, tx_power,
                           battery, backlog, decision.prices, p, device_backlog)


def outcome_at_rate(off, rate, cpu_share, local_e, task_bits, task_cycles, cpu_freq, tx_power,
                    battery, backlog, prices, params: Params, device_backlog=None) -> Outcome:
    """Per-device outcome [N] of the executed assignment ``off`` [N] (forcing applied) given
    each offloading device's uplink ``rate`` [N] (bit/s, floored) and ``cpu_share`` [N], and
    the local energy ``local_e`` [N]: the part of :func:`evaluate_arrays` after the rates
    (which an optimizer evaluating many candidates on one slot computes from per-slot
    terms, :mod:`mecjax.optim.objective`)."""
    p = as_params(params)
    offloading = off > 0
    wait = physics.per_device_of_server(off, physics.queue_wait(backlog, p.server_cpu_hz))
    price = physics.per_device_of_server(off, prices)
    edge_latency = (physics.transmission_time(task_bits, rate) + wait
                    + physics.edge_compute_time(task_cycles, jnp.where(offloading, cpu_share, 1.0),
                                                physics.of_server(off, p.server_cpu_hz)))
    wan = wan_delays(p)
    if wan is not None:
        edge_latency = edge_latency + physics.per_device_of_server(off, wan)
    if p.device_queue and device_backlog is None:
        device_backlog = jnp.zeros_like(task_cycles)
    local_lat = local_latency(task_cycles, cpu_freq, device_backlog, p)
    latency = jnp.where(offloading, edge_latency, local_lat)
    energy = jnp.where(offloading, physics.transmission_energy(tx_power, task_bits, rate),
                       local_e)
    pay = jnp.where(offloading, physics.payment(price, task_cycles), 0.0)
    cost = physics.weighted_cost(latency, energy, pay, p.alpha, p.beta, p.gamma)
    rate = jnp.where(offloading, rate, 0.0)
    failed = jnp.zeros(off.shape, bool)
    if p.battery_hard:
        # The battery cannot pay the executed option: the task fails, draws nothing, pays
        # nothing, and costs at least what it would have cost run, and at least computing
        # locally, plus failure_cost (docs/model.md, "Hard battery").
        failed = battery < energy
        local_cost = physics.weighted_cost(local_lat, local_e, 0.0, p.alpha, p.beta, p.gamma)
        cost = jnp.where(failed, jnp.maximum(cost, local_cost) + p.failure_cost, cost)
        energy = jnp.where(failed, 0.0, energy)
        pay = jnp.where(failed, 0.0, pay)
        rate = jnp.where(failed, 0.0, rate)
    return Outcome(
        latency=latency,
        energy=energy,
        payment=pay,
        cost=cost,
        rate=rate,
        offload=off,
        failed=failed,
    )


def evaluate_unchecked(state, decision, params) -> Outcome:
    """:func:`evaluate` without validating or repairing ``decision``: for jitted inner
    loops (optimizers) whose decisions are valid by construction. [N] per device."""
    gain = state.gain if isinstance(state, EnvState) else state.gain_observed
    return evaluate_arrays(state.task_bits, state.task_cycles, state.cpu_freq, state.tx_power,
                           gain, state.gain_observed, state.battery, state.backlog, decision,
                           params, state.device_backlog)


def _evaluate_repaired(state, decision, params) -> Outcome:
    """:func:`evaluate_unchecked` of ``decision`` repaired by :func:`sanitize_decision`."""
    return evaluate_unchecked(state, sanitize_decision(decision, params)[0], params)


# Outside jit the repair runs inside the compiled program too: run eagerly, its operations
# compiled one by one the first time and dispatched one by one after (about 1 s, then
# 6-10 ms a call at N = 6, against well under 1 ms for the compiled program). The eager
# evaluate, reset and step pass a Scenario as EnvParams (its numbers as leaves): scenarios
# that differ only in numbers (a bandwidth, a cost weight) share one compiled program,
# where a Scenario, static under jit, would compile its own.
_evaluate_jit = jax.jit(_evaluate_repaired)


def evaluate(state: EnvState | Observation, decision: Decision, params: Params) -> Outcome:
    """Latency, energy, payment, weighted cost and rate of ``decision`` [N].

    Given an :class:`EnvState` it uses the true channel of the slot (the
    oracle view); given an :class:`Observation` it uses the delayed channel a
    causal scheduler can know. Time does not advance; nothing is random.
    Outside jit a malformed decision raises ``ValueError``; inside, it is
    repaired as in :func:`sanitize_decision`.
    """
    if is_concrete((state, decision, params)):
        check_decision(decision, params)
        return _evaluate_jit(state, decision, as_params(params))
    return _evaluate_repaired(state, decision, params)


# --------------------------------------------------------------------------
# reset / step / observation.
# --------------------------------------------------------------------------

def observe(state: EnvState) -> Observation:
    """What schedulers may see: everything but the true channel of this slot."""
    return Observation(
        t=state.t, positions=state.positions, server_positions=state.server_positions,
        task_bits=state.task_bits, task_cycles=state.task_cycles, cpu_freq=state.cpu_freq,
        tx_power=state.tx_power, gain_observed=state.gain_observed, battery=state.battery,
        backlog=state.backlog, prices=state.prices, task_deadline=state.task_deadline,
        device_backlog=state.device_backlog,
    )


def _reset(key, params):
    state = reset_from_noise(reset_noise(key, params), params)
    return observe(state), state


_reset_jit = jax.jit(_reset)


def reset(key: jax.Array, params: Params) -> tuple[Observation, EnvState]:
    """A fresh instance: devices placed, tasks drawn, batteries charged, queues empty."""
    if is_concrete(key):
        return _reset_jit(key, as_params(params))
    return _reset(key, params)


def reset_where(key: jax.Array, done, obs: Observation, state: EnvState, params: Params):
    """Batched auto-reset for training loops: the instances whose ``done`` [B]
    is True are replaced by fresh ones (keys split from ``key``), the others
    kept. The resets are skipped when no instance is done."""
    b = done.shape[0]
    fresh_obs, fresh_state = jax.lax.cond(
        jnp.any(done), lambda: jax.vmap(reset, (0, None))(jax.random.split(key, b), params),
        lambda: (obs, state))

    def pick(fresh, old):
        return jnp.where(done.reshape((b,) + (1,) * (old.ndim - 1)), fresh, old)

    return jax.tree.map(pick, fresh_obs, obs), jax.tree.map(pick, fresh_state, state)


def transition(state: EnvState, decision: Decision, noise, params: Params):
    """Deterministic core of :func:`step` given the step's uniforms."""
    p = as_params(params)
    valid, flags = sanitize_decision(decision, p)
    outcome = evaluate_unchecked(state, valid, p)
    slot = metrics.slot_metrics(state.task_bits, state.task_cycles, state.cpu_freq, outcome,
                                valid.prices, p, task_deadline=state.task_deadline,
                                device_backlog=state.device_backlog)
    next_state = advance(state, outcome, valid.prices, noise, p)
    info = {
        "latency": outcome.latency,
        "energy": outcome.energy,
        "payment": outcome.payment,
        "cost": outcome.cost,
        "rate": outcome.rate,
        "offload": outcome.offload,
        "forced_offload": outcome.offload != valid.offload,
        "task_failed": outcome.failed,
        **slot,
        **flags,
    }
    reward = -jnp.mean(outcome.cost)
    done = next_state.t >= p.horizon
    return observe(next_state), next_state, reward, done, info


def _step(key, state, decision, params):
    return transition(state, decision, step_noise(key, params), params)


_step_jit = jax.jit(_step)


def step(key: jax.Array, state: EnvState, decision: Decision, params: Params):
    """Execute ``decision`` in slot ``state.t`` and move to the next slot.

    Returns ``(obs, state, reward, done, info)``: reward is minus the mean
    weighted device cost; info holds per-device ``latency``, ``energy``,
    ``payment``, ``cost``, ``rate``, the executed ``offload``, ``forced_offload``
    and ``task_failed`` (bool), the slot's metrics (see :mod:`mecjax.env.metrics`)
    and the decision flags.
    """
    if is_concrete((key, state, decision, params)):
        check_decision(decision, params)
        return _step_jit(key, state, decision, as_params(params))
    return _step(key, state, decision, params)

