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

from mecjax.config import EnvParams, Scenario, as_params
from mecjax.env import dynamics, metrics, physics, rng
from mecjax.env.types import Decision, EnvState, Observation, Outcome

Params = Scenario | EnvParams
SHARE_TOL = 1e-5

# Noise streams: each quantity has its own stream (see rng.uniform). Step streams
# are numbered from 100, so a key used for both a reset and a step gives
# unrelated words.
_RESET_STREAMS = ("pos_x", "pos_y", "cpu", "power", "phase", "burst", "fade_prev_1",
                  "fade_prev_2", "fade_1", "fade_2", "bits", "cycles", "battery")
_STEP_STREAMS = ("fade_1", "fade_2", "burst", "bits", "cycles", "harvest",
                 "move_step", "move_angle")


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
    seed = rng.seed_words(key)
    return {name: rng.uniform(seed, base_stream + i, shape)
            for i, (name, shape) in enumerate(shapes.items())}


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


def reset_from_noise(noise: dict[str, jax.Array], params: Params) -> EnvState:
    """The initial state, given the uniforms of :func:`reset_noise`."""
    p = as_params(params)
    positions = p.area_m * jnp.stack([noise["pos_x"], noise["pos_y"]], -1)
    servers = dynamics.server_layout(p.n_servers, p.area_m, p.server_radius_m)
    path = physics.path_gain(dynamics.distances(positions, servers), p.pathloss_db_at_1km,
                             p.pathloss_slope_db, p.min_distance_m)
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
    )


def advance(state: EnvState, outcome: Outcome, prices, noise, params: Params) -> EnvState:
    """The next slot's state after ``outcome`` was executed, given step uniforms."""
    p = as_params(params)
    positions, path = state.positions, state.path_gain
    if p.mobility:
        positions = dynamics.random_walk(positions, noise["move_step"], noise["move_angle"],
                                         p.mobility_step_m, p.area_m)
        path = physics.path_gain(dynamics.distances(positions, state.server_positions),
                                 p.pathloss_db_at_1km, p.pathloss_slope_db, p.min_distance_m)
    e_re, e_im = dynamics.complex_normal(noise["fade_1"], noise["fade_2"])
    g_re, g_im = dynamics.gauss_markov(state.fading_re, state.fading_im, e_re, e_im,
                                       p.fading_rho)
    burst = dynamics.burst_update(state.burst, noise["burst"], p.burst_rho, p.burst_std)
    t = state.t + 1
    bits, cycles = _tasks(t, state.load_phase, burst, noise, p)
    onehot = physics.server_onehot(outcome.offload, p.n_servers)
    work_in = physics.per_server_sum(onehot, state.task_cycles)
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
        backlog=dynamics.backlog_update(state.backlog, work_in, p.server_cpu_hz, p.slot_s),
        prices=prices,
        burst=burst,
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
    onehot = physics.server_onehot(offload, n_servers)
    total = physics.per_device_of_server(onehot, physics.per_server_sum(onehot, s))
    return jnp.where(total > 1.0, s / jnp.where(total > 1.0, total, 1.0), s)


def _share_problem(share, offload, n_servers):
    """Scalar bool: the shares as given are not a valid allocation."""
    if share is None:
        return jnp.zeros((), bool)
    bad = ~jnp.isfinite(share) | (share < 0) | (share > 1)
    bad = bad | ((offload > 0) & ~(share > 0))
    onehot = physics.server_onehot(offload, n_servers)
    over = physics.per_server_sum(onehot, jnp.where(jnp.isfinite(share), share, 0.0)) > 1 + SHARE_TOL
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


def _is_concrete(tree: Any) -> bool:
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

def forced_offload(offload, battery, cycles, cpu_freq, gain_observed, p):
    """[N] the executed actions: a device whose battery cannot pay for local
    execution offloads to its best observed server instead (docs/model.md: an
    empty battery forces offloading)."""
    cannot_local = battery < physics.local_energy(cycles, cpu_freq, p.kappa)
    best = jnp.argmax(gain_observed, axis=-1).astype(jnp.int32) + 1
    return jnp.where((offload == 0) & cannot_local, best, offload)


def evaluate_arrays(task_bits, task_cycles, cpu_freq, tx_power, gain, gain_observed, battery,
                    backlog, decision: Decision, params: Params) -> Outcome:
    """Per-device outcome of a (valid) decision given the raw arrays, all [N] / [N, M] / [M]."""
    p = as_params(params)
    m = p.n_servers
    off = forced_offload(decision.offload, battery, task_cycles, cpu_freq, gain_observed, p)
    onehot = physics.server_onehot(off, m)
    offloading = off > 0
    bw = repair_shares(decision.bandwidth_share, off, m)
    cpu = repair_shares(decision.cpu_share, off, m)
    h = jnp.sum(jnp.where(onehot, gain, 0.0), axis=-1)
    rate = physics.uplink_rate(jnp.where(offloading, bw, 1.0), p.bandwidth_hz, tx_power, h,
                               p.noise_w)
    wait = physics.per_device_of_server(onehot, physics.queue_wait(backlog, p.server_cpu_hz))
    price = physics.per_device_of_server(onehot, decision.prices)
    edge_latency = (physics.transmission_time(task_bits, rate) + wait
                    + physics.edge_compute_time(task_cycles, jnp.where(offloading, cpu, 1.0),
                                                p.server_cpu_hz))
    latency = jnp.where(offloading, edge_latency, physics.local_latency(task_cycles, cpu_freq))
    energy = jnp.where(offloading, physics.transmission_energy(tx_power, task_bits, rate),
                       physics.local_energy(task_cycles, cpu_freq, p.kappa))
    pay = jnp.where(offloading, physics.payment(price, task_cycles), 0.0)
    return Outcome(
        latency=latency,
        energy=energy,
        payment=pay,
        cost=physics.weighted_cost(latency, energy, pay, p.alpha, p.beta, p.gamma),
        rate=jnp.where(offloading, rate, 0.0),
        offload=off,
    )


def evaluate_unchecked(state, decision, params) -> Outcome:
    """:func:`evaluate` without validating or repairing ``decision``: for jitted inner
    loops (optimizers) whose decisions are valid by construction. [N] per device."""
    gain = state.gain if isinstance(state, EnvState) else state.gain_observed
    return evaluate_arrays(state.task_bits, state.task_cycles, state.cpu_freq, state.tx_power,
                           gain, state.gain_observed, state.battery, state.backlog, decision,
                           params)


_evaluate_jit = jax.jit(evaluate_unchecked)


def evaluate(state: EnvState | Observation, decision: Decision, params: Params) -> Outcome:
    """Latency, energy, payment, weighted cost and rate of ``decision`` [N].

    Given an :class:`EnvState` it uses the true channel of the slot (the
    oracle view); given an :class:`Observation` it uses the delayed channel a
    causal scheduler can know. Time does not advance; nothing is random.
    Outside jit a malformed decision raises ``ValueError``; inside, it is
    repaired as in :func:`sanitize_decision`.
    """
    if _is_concrete((state, decision, params)):
        check_decision(decision, params)
        return _evaluate_jit(state, sanitize_decision(decision, params)[0], params)
    return evaluate_unchecked(state, sanitize_decision(decision, params)[0], params)


# --------------------------------------------------------------------------
# reset / step / observation.
# --------------------------------------------------------------------------

def observe(state: EnvState) -> Observation:
    """What schedulers may see: everything but the true channel of this slot."""
    return Observation(
        t=state.t, positions=state.positions, server_positions=state.server_positions,
        task_bits=state.task_bits, task_cycles=state.task_cycles, cpu_freq=state.cpu_freq,
        tx_power=state.tx_power, gain_observed=state.gain_observed, battery=state.battery,
        backlog=state.backlog, prices=state.prices,
    )


def _reset(key, params):
    state = reset_from_noise(reset_noise(key, params), params)
    return observe(state), state


_reset_jit = jax.jit(_reset)


def reset(key: jax.Array, params: Params) -> tuple[Observation, EnvState]:
    """A fresh instance: devices placed, tasks drawn, batteries charged, queues empty."""
    if _is_concrete(key):
        return _reset_jit(key, params)
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
                                valid.prices, p)
    next_state = advance(state, outcome, valid.prices, noise, p)
    info = {
        "latency": outcome.latency,
        "energy": outcome.energy,
        "payment": outcome.payment,
        "cost": outcome.cost,
        "rate": outcome.rate,
        "offload": outcome.offload,
        "forced_offload": outcome.offload != valid.offload,
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
    ``payment``, ``cost``, ``rate``, the executed ``offload``, the slot's
    metrics (see :mod:`mecjax.env.metrics`) and the decision flags.
    """
    if _is_concrete((key, state, decision, params)):
        check_decision(decision, params)
        return _step_jit(key, state, decision, params)
    return _step(key, state, decision, params)

