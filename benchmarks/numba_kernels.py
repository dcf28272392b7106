"""What a skilled CPU user would write instead of mecjax: hand-fused, parallel Numba
kernels of the same model (the optional ``bench`` extra: ``pip install -e ".[bench]"``).

* :func:`evaluate` computes what :func:`mecjax.env.evaluate` computes from an
  :class:`~mecjax.env.EnvState` and a decision (offloads clipped to 0..M, prices made
  finite and clipped, a device whose battery cannot pay for local execution forced to its
  best observed server, equal bandwidth and CPU shares per server, uplink rate, queue
  wait, latency, energy, payment, weighted cost, the rate and the executed offload) in one
  pass over each instance: a count per server, then one loop over the devices.
* :func:`step` executes one slot of the same dynamics (eq. numbers and the model:
  ``docs/model.md``): the outcome above, then Gauss-Markov fading, the AR(1) burst, the
  next tasks, battery and server backlogs; :func:`rollout` runs ``slots`` of them under the
  benchmark's threshold policy, drawing its uniforms from Numba's own per-thread generator
  inside the kernel (as the JAX rollout draws its own from the key). Given the uniforms
  instead (:func:`step_given_noise`), it reproduces :mod:`mecjax.env.numpy_model`.

Scope: the default model's options (no ``battery_hard``, ``device_queue``, remote servers,
mobility, per-server tuples of bandwidth or CPU); :func:`check_supported` names the field
otherwise. Everything runs in float32, the precision mecjax runs at (constants are cast
once, so no operation silently widens to float64).
"""

from __future__ import annotations

import math

import numpy as np

try:
    import numba
except ImportError as err:  # pragma: no cover - the message is the point
    raise ImportError("the Numba comparison needs the optional bench extra: "
                      "pip install -e \".[bench]\"") from err

from mecjax.config import Scenario

F32 = np.float32
LN2 = F32(math.log(2.0))
TWO_PI = F32(2.0 * math.pi)
SQRT12 = F32(math.sqrt(12.0))


def check_supported(s: Scenario) -> None:
    """Raise ``ValueError`` naming the first Scenario field the kernels do not model."""
    for field, unsupported in (("battery_hard", s.battery_hard), ("device_queue", s.device_queue),
                               ("mobility", s.mobility),
                               ("wan_delay_s", isinstance(s.wan_delay_s, tuple) or s.wan_delay_s > 0),
                               ("bandwidth_hz", isinstance(s.bandwidth_hz, tuple)),
                               ("server_cpu_hz", isinstance(s.server_cpu_hz, tuple))):
        if unsupported:
            raise ValueError(f"Scenario.{field}={getattr(s, field)!r} is not modelled by the "
                             f"Numba kernels (they cover the default model's options)")


def constants(s: Scenario) -> np.ndarray:
    """The scalars the kernels read, float32 (see ``_C_*`` for their order)."""
    check_supported(s)
    return np.array([s.kappa, s.bandwidth_hz, s.noise_w, s.server_cpu_hz, s.alpha, s.beta,
                     s.gamma, s.price_min, s.price_max, s.fading_rho, s.burst_rho, s.burst_std,
                     s.load_mean, s.load_amplitude, s.load_period_slots, s.task_noise,
                     s.task_bits_min, s.task_bits_max, s.task_cycles_min, s.task_cycles_max,
                     s.harvest_max_j, s.battery_capacity_j, s.slot_s, s.deadline_min_s,
                     s.deadline_max_s], F32)


(_C_KAPPA, _C_BW, _C_NOISE, _C_F, _C_ALPHA, _C_BETA, _C_GAMMA, _C_PMIN, _C_PMAX, _C_RHO,
 _C_BRHO, _C_BSTD, _C_LMEAN, _C_LAMP, _C_LPER, _C_TNOISE, _C_BMIN, _C_BMAX, _C_CMIN, _C_CMAX,
 _C_HARV, _C_CAP, _C_SLOT, _C_DMIN, _C_DMAX) = range(25)


@numba.njit(inline="always", fastmath=False)
def _outcome(bits, cycles, f, power, gain, gain_obs, battery, backlog, offload, prices, c,
             counts, lat, en, pay, cost, rate, off_out):
    """One instance's outcome ([N] / [N, M] / [M] views) into ``lat`` ... ``off_out`` [N];
    ``counts`` [M] scratch."""
    n, m = bits.shape[0], gain.shape[1]
    zero, one = F32(0.0), F32(1.0)
    for j in range(m):
        counts[j] = 0
    # executed actions: clipped, an empty battery forced to its best observed server
    for i in range(n):
        a = min(max(offload[i], 0), m)
        if a == 0 and battery[i] < c[_C_KAPPA] * f[i] * f[i] * cycles[i]:
            best, g = 0, gain_obs[i, 0]
            for j in range(1, m):
                if gain_obs[i, j] > g:
                    best, g = j, gain_obs[i, j]
            a = best + 1
        off_out[i] = a
        if a > 0:
            counts[a - 1] += 1
    for i in range(n):
        a = off_out[i]
        if a == 0:
            lat[i] = cycles[i] / f[i]
            en[i] = c[_C_KAPPA] * f[i] * f[i] * cycles[i]
            pay[i] = zero
            rate[i] = zero
        else:
            j = a - 1
            share = one / F32(counts[j])
            se = F32(math.log1p(power[i] * gain[i, j] / c[_C_NOISE])) / LN2
            r = max(share * c[_C_BW] * se, one)
            price = prices[j]
            price = c[_C_PMIN] if price != price else min(max(price, c[_C_PMIN]), c[_C_PMAX])
            lat[i] = bits[i] / r + backlog[j] / c[_C_F] + cycles[i] / (share * c[_C_F])
            en[i] = power[i] * bits[i] / r
            pay[i] = price * cycles[i] * F32(1e-9)
            rate[i] = r
        cost[i] = c[_C_ALPHA] * lat[i] + c[_C_BETA] * en[i] + c[_C_GAMMA] * pay[i]


@numba.njit(parallel=True, fastmath=False, cache=True)
def _evaluate_kernel(bits, cycles, f, power, gain, gain_obs, battery, backlog, offload, prices,
                     c, lat, en, pay, cost, rate, off_out):
    for b in numba.prange(bits.shape[0]):
        counts = np.zeros(gain.shape[2], np.int32)
        _outcome(bits[b], cycles[b], f[b], power[b], gain[b], gain_obs[b], battery[b],
                 backlog[b], offload[b], prices[b], c, counts, lat[b], en[b], pay[b], cost[b],
                 rate[b], off_out[b])


def evaluate(state: dict, offload: np.ndarray, prices: np.ndarray, c: np.ndarray) -> dict:
    """The outcome of ``offload`` [B, N] (int) and ``prices`` [B, M] in ``state`` (a dict of
    float32 arrays as in :mod:`mecjax.env.numpy_model`): dict of [B, N] latency, energy,
    payment, cost, rate (float32) and the executed offload (int32)."""
    shape = state["task_bits"].shape
    out = {k: np.empty(shape, F32) for k in ("latency", "energy", "payment", "cost", "rate")}
    out["offload"] = np.empty(shape, np.int32)
    _evaluate_kernel(state["task_bits"], state["task_cycles"], state["cpu_freq"],
                     state["tx_power"], state["gain"], state["gain_observed"], state["battery"],
                     state["backlog"], offload, np.asarray(prices, F32), c, out["latency"],
                     out["energy"], out["payment"], out["cost"], out["rate"], out["offload"])
    return out


@numba.njit(inline="always", fastmath=False)
def _advance(t, bits, cycles, path, fre, fim, gain, gain_obs, battery, backlog, phase, burst,
             deadline, c, work, en, off_out, u):
    """Advance one instance ([N] / [N, M] / [M] views) one slot in place, given its outcome
    (``en``, ``off_out``) and uniforms ``u`` [7, N, M] (0/1 fading; 2 burst, 3 bits,
    4 cycles, 5 harvest, 6 deadline in column 0); returns the next slot index."""
    n, m = bits.shape[0], gain.shape[1]
    zero, one, half, two = F32(0.0), F32(1.0), F32(0.5), F32(2.0)
    root = F32(math.sqrt(1.0 - float(c[_C_RHO]) ** 2))
    broot = F32(math.sqrt(1.0 - float(c[_C_BRHO]) ** 2))
    for j in range(m):
        work[j] = zero
    for i in range(n):
        if off_out[i] > 0:
            work[off_out[i] - 1] += cycles[i]
    for j in range(m):
        backlog[j] = max(backlog[j] + work[j] - c[_C_F] * c[_C_SLOT], zero)
    t1 = t + 1
    for i in range(n):
        for j in range(m):
            r = F32(math.sqrt(-math.log(u[0, i, j])))
            angle = TWO_PI * u[1, i, j]
            gre = c[_C_RHO] * fre[i, j] + root * (r * F32(math.cos(angle)))
            gim = c[_C_RHO] * fim[i, j] + root * (r * F32(math.sin(angle)))
            fre[i, j], fim[i, j] = gre, gim
            gain_obs[i, j] = gain[i, j]
            gain[i, j] = path[i, j] * (gre * gre + gim * gim)
        burst[i] = c[_C_BRHO] * burst[i] + broot * (SQRT12 * c[_C_BSTD] * (u[2, i, 0] - half))
        periodic = c[_C_LAMP] * F32(math.sin(TWO_PI * F32(t1) / c[_C_LPER] + phase[i]))
        load = min(max(c[_C_LMEAN] + periodic + burst[i], zero), one)
        wb = min(max(load + c[_C_TNOISE] * (two * u[3, i, 0] - one), zero), one)
        wc = min(max(load + c[_C_TNOISE] * (two * u[4, i, 0] - one), zero), one)
        bits[i] = c[_C_BMIN] + wb * (c[_C_BMAX] - c[_C_BMIN])
        cycles[i] = c[_C_CMIN] + wc * (c[_C_CMAX] - c[_C_CMIN])
        battery[i] = min(max(battery[i] - en[i] + u[5, i, 0] * c[_C_HARV], zero), c[_C_CAP])
        deadline[i] = c[_C_DMIN] + u[6, i, 0] * (c[_C_DMAX] - c[_C_DMIN])
    return t1


def _state_args(state: dict):
    return tuple(state[k] for k in ("t", "task_bits", "task_cycles", "cpu_freq", "tx_power",
                                    "path_gain", "fading_re", "fading_im", "gain",
                                    "gain_observed", "battery", "backlog", "prices",
                                    "load_phase", "burst", "task_deadline"))


@numba.njit(parallel=True, fastmath=False, cache=True)
def _step_kernel(t, bits, cycles, f, power, path, fre, fim, gain, gain_obs, battery, backlog,
                 prices_now, phase, burst, deadline, c, offload, prices, noise, cost_out):
    for b in numba.prange(bits.shape[0]):
        n, m = bits.shape[1], gain.shape[2]
        counts = np.zeros(m, np.int32)
        work = np.zeros(m, F32)
        scratch = np.empty((4, n), F32)
        off_out = np.empty(n, np.int32)
        _outcome(bits[b], cycles[b], f[b], power[b], gain[b], gain_obs[b], battery[b],
                 backlog[b], offload[b], prices[b], c, counts, scratch[0], scratch[1],
                 scratch[2], cost_out[b], scratch[3], off_out)
        t[b] = _advance(t[b], bits[b], cycles[b], path[b], fre[b], fim[b], gain[b], gain_obs[b],
                        battery[b], backlog[b], phase[b], burst[b], deadline[b], c, work,
                        scratch[1], off_out, noise[b])
        for j in range(m):
            p = prices[b, j]
            prices_now[b, j] = c[_C_PMIN] if p != p else min(max(p, c[_C_PMIN]), c[_C_PMAX])


def step_given_noise(state: dict, offload: np.ndarray, prices: np.ndarray, noise: dict,
                     c: np.ndarray) -> np.ndarray:
    """Execute one slot of every instance in place (``state``: float32 arrays as in
    :mod:`mecjax.env.numpy_model`, ``t`` int64; ``noise``: its step uniforms [B, ...]);
    returns the slot's cost [B, N]."""
    b, n = state["task_bits"].shape
    m = state["backlog"].shape[1]
    u = np.zeros((b, 7, n, m), F32)
    u[:, 0], u[:, 1] = noise["fade_1"], noise["fade_2"]
    for k, name in enumerate(("burst", "bits", "cycles", "harvest", "deadline"), start=2):
        u[:, k, :, 0] = noise[name]
    cost = np.empty((b, n), F32)
    _step_kernel(*_state_args(state), c, offload, np.asarray(prices, F32), u, cost)
    return cost


@numba.njit(parallel=True, fastmath=False, cache=True)
def _rollout_kernel(slots, t, bits, cycles, f, power, path, fre, fim, gain, gain_obs, battery,
                    backlog, prices_now, phase, burst, deadline, c, heavy_cycles, price, seed,
                    reward):
    for b in numba.prange(bits.shape[0]):
        n, m = bits.shape[1], gain.shape[2]
        np.random.seed(seed + b)  # Numba's generator: one state per thread, seeded per instance
        counts = np.zeros(m, np.int32)
        work = np.zeros(m, F32)
        scratch = np.empty((5, n), F32)
        off_out = np.empty(n, np.int32)
        offload = np.empty(n, np.int64)
        prices = np.full(m, price, F32)
        u = np.empty((7, n, m), F32)
        total = F32(0.0)
        for _ in range(slots):
            for i in range(n):  # the benchmark's policy: heavy tasks to the best observed server
                best, g = 0, gain_obs[b, i, 0]
                for j in range(1, m):
                    if gain_obs[b, i, j] > g:
                        best, g = j, gain_obs[b, i, j]
                offload[i] = best + 1 if cycles[b, i] > heavy_cycles else 0
            _outcome(bits[b], cycles[b], f[b], power[b], gain[b], gain_obs[b], battery[b],
                     backlog[b], offload, prices, c, counts, scratch[0], scratch[1], scratch[2],
                     scratch[3], scratch[4], off_out)
            acc = F32(0.0)
            for i in range(n):
                acc += scratch[3, i]
            total += -acc / F32(n)
            for k in range(7):
                for i in range(n):
                    for j in range(m if k < 2 else 1):
                        v = F32(np.random.random())
                        u[k, i, j] = v if v > F32(0.0) else F32(1.1754944e-38)
            t[b] = _advance(t[b], bits[b], cycles[b], path[b], fre[b], fim[b], gain[b],
                            gain_obs[b], battery[b], backlog[b], phase[b], burst[b], deadline[b],
                            c, work, scratch[1], off_out, u)
            for j in range(m):
                prices_now[b, j] = price
        reward[b] = total / F32(slots)


def rollout(state: dict, s: Scenario, slots: int, seed: int = 0) -> np.ndarray:
    """Run every instance of ``state`` (changed in place) ``slots`` slots under the
    benchmark's threshold policy (tasks above the mid cycle count go to the best observed
    server at ``price_init``); returns each instance's mean reward [B]."""
    c = constants(s)
    heavy = F32(0.5 * (s.task_cycles_min + s.task_cycles_max))
    reward = np.empty(state["task_bits"].shape[0], F32)
    _rollout_kernel(slots, *_state_args(state), c, heavy, F32(s.price_init), seed, reward)
    return reward


def as_float32_state(state: dict) -> dict:
    """A NumPy-model state (:mod:`mecjax.env.numpy_model`) as the kernels' contiguous
    float32 arrays (``t`` int64), copied: the kernels change states in place."""
    return {k: np.array(v, np.int64 if k == "t" else F32, order="C", copy=True)
            for k, v in state.items()}
