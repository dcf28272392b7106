"""A plain NumPy implementation of the QIO search of :mod:`mecjax.optim.qio`.

The same algorithm, written again with NumPy arrays and a
``np.random.Generator``, vectorized over B instances and over the population:

* encoding: ``q = ceil(log2(M+1))`` qubits per device, stored as the amplitude
  beta = sin theta of |1> (alpha = sqrt(1 - beta^2)), ``P(1) = beta^2``; the search
  starts from theta = pi/4;
* measurement: one uniform per qubit, ``bit = u < beta^2``; codes >= M+1
  are repaired modulo M+1;
* update: the global best is updated first, then every qubit whose measured
  bit differs from the best's bit turns by ``delta_theta`` towards it (the
  rotation matrix applied to the amplitudes), stopped at
  ``[theta_min, pi/2 - theta_min]``;
* fitness: the mean weighted device cost, with the optimal closed-form
  bandwidth and CPU shares of :mod:`mecjax.optim.allocation` (re-implemented
  here in NumPy), evaluated by the NumPy model
  (:func:`mecjax.env.numpy_model.evaluate`) on the observed channel.

The population is folded into the instance axis: a ``[B, P, N]`` batch of
candidates is evaluated as ``B * P`` instances of the NumPy model, against the
state tiled ``P`` times.

It is the NumPy baseline of ``mecjax bench optim``, and, fed the uniforms the
JAX ``qio.ask`` draws (``uniforms=``), it reproduces the JAX search
(``tests/test_bench_optim.py``).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from mecjax.config import Scenario
from mecjax.env import numpy_model as nm

# State fields the model's evaluate reads (the rest are not tiled).
EVAL_FIELDS = ("gain", "gain_observed", "task_bits", "task_cycles", "cpu_freq", "tx_power",
               "battery", "backlog")


def n_qubits(n_options: int) -> int:
    """ceil(log2(M+1)) qubits per device (at least 1), as :func:`mecjax.optim.qio.n_qubits`."""
    return max(1, math.ceil(math.log2(n_options)))


# --------------------------------------------------------------------------
# Optimal allocation (closed forms of mecjax.optim.allocation), batched [B, N].
# --------------------------------------------------------------------------

def _proportional(weights, offload, on):
    """[B, N] shares proportional to ``weights`` among the devices of each server.

    ``on`` [B, N, M] is the device-server incidence of ``offload`` (float).
    """
    per_server = np.einsum("...nm,...n->...m", on, weights)                # [B, M]
    total = np.take_along_axis(per_server, np.maximum(offload - 1, 0), -1)  # [B, N]
    off = offload > 0
    return np.where(off, weights / np.where(off & (total > 0), total, 1.0), 0.0)


def _incidence(offload, n_servers, dtype):
    return (offload[..., None] == np.arange(1, n_servers + 1)).astype(dtype)


def optimal_bandwidth_shares(state, offload, s: Scenario, true_channel: bool = False, on=None):
    """[B, N] bandwidth shares ~ sqrt((alpha + beta P_i) D_i / se_i) per server."""
    gain = state["gain"] if true_channel else state["gain_observed"]
    on = _incidence(offload, s.n_servers, gain.dtype) if on is None else on
    h = np.einsum("...nm,...nm->...n", on, gain)
    se = np.maximum(np.log1p(state["tx_power"] * h / s.noise_w) / math.log(2.0), 1e-12)
    k = (s.alpha + s.beta * state["tx_power"]) * state["task_bits"] / se
    return _proportional(np.sqrt(k), offload, on)


def optimal_cpu_shares(state, offload, s: Scenario, on=None):
    """[B, N] CPU shares ~ sqrt(C_i) per server."""
    root = np.sqrt(state["task_cycles"])
    on = _incidence(offload, s.n_servers, root.dtype) if on is None else on
    return _proportional(root, offload, on)


def allocate(state, offload, s: Scenario, true_channel: bool = False):
    """``(bandwidth_share, cpu_share)`` [B, N], the optimum for ``offload`` [B, N]."""
    offload = np.asarray(offload)
    on = _incidence(offload, s.n_servers, np.asarray(state["task_cycles"]).dtype)
    return (optimal_bandwidth_shares(state, offload, s, true_channel, on),
            optimal_cpu_shares(state, offload, s, on))


def mean_cost(state, offload, prices, s: Scenario, true_channel: bool = False):
    """[B] mean weighted device cost of ``offload`` [B, N] under the optimal allocation."""
    bw, cpu = allocate(state, offload, s, true_channel)
    out = nm.evaluate(state, offload, prices, s, bw, cpu, true_channel=true_channel)
    return out["cost"].mean(-1)


def tile_state(state, population: int):
    """The fields of ``state`` [B, ...] that evaluate reads, each instance repeated
    ``population`` times: [B * P, ...] in instance-major order (b * P + p)."""
    return {k: np.repeat(np.asarray(state[k]), population, axis=0)
            for k in EVAL_FIELDS if k in state}


# --------------------------------------------------------------------------
# QIO.
# --------------------------------------------------------------------------

def _bits(x, q: int):
    """[..., q] binary digits of codes x (least significant first)."""
    return (x[..., None] >> np.arange(q)) & 1


def measure(beta, u, n_options: int):
    """[B, P, N] offloading vectors from the |1> amplitudes and uniforms [B, P, N, q]
    (eq. 19)."""
    bits = (u < beta ** 2).astype(np.int32)
    codes = (bits << np.arange(beta.shape[-1], dtype=np.int32)).sum(-1)
    return (codes % n_options).astype(np.int32)


def update(beta, best_x, best_f, x, fitness, delta_theta, theta_min):
    """Global-best update then rotation (eq. 20) of the |1> amplitudes; returns
    ``(beta, best_x, best_f)``.

    beta [B, P, N, q], best_x [B, N], best_f [B], x [B, P, N], fitness [B, P].
    """
    b = np.arange(x.shape[0])
    k = np.argmin(fitness, axis=1)
    better = fitness[b, k] < best_f
    best_x = np.where(better[:, None], x[b, k], best_x)
    best_f = np.where(better, fitness[b, k], best_f)
    q = beta.shape[-1]
    target = _bits(best_x, q)[:, None]                                     # [B, 1, N, q]
    measured = _bits(x, q)                                                 # [B, P, N, q]
    dt = beta.dtype.type
    direction = np.where(measured == target, 0.0,
                         np.where(target == 1, 1.0, -1.0)).astype(beta.dtype)
    alpha = np.sqrt(np.maximum(dt(1.0) - beta * beta, dt(0.0)))
    turned = dt(math.cos(delta_theta)) * beta + direction * dt(math.sin(delta_theta)) * alpha
    beta = np.clip(np.where(direction == 0, beta, turned), dt(math.sin(theta_min)),
                   dt(math.cos(theta_min)))
    return beta, best_x, best_f


def search(rng, state, prices, scenario: Scenario, population: int = 30, iterations: int = 100,
           delta_theta: float = 0.02 * math.pi, theta_min: float = 0.02 * math.pi,
           uniforms: np.ndarray | Callable | None = None, dtype=np.float32):
    """QIO on B instances at once; returns ``(best_x [B, N] int32, best_fitness [B])``.

    rng: an ``np.random.Generator`` (or a seed for one); it draws the
        measurement uniforms, one per qubit and generation.
    state: a NumPy state dict with a leading instance axis, e.g. ``{k: np.asarray(v)
        for k, v in vars(obs).items()}`` of a batched Observation; the fitness uses its
        observed channel ``gain_observed``.
    prices: [M] or [B, M], fixed during the search.
    uniforms: optional source of the measurement uniforms instead of ``rng``: an
        array [iterations, B, P, N, q] or a callable ``g -> [B, P, N, q]``.
    dtype: precision of the amplitudes (float32, as the JAX search).
    """
    s = scenario
    n_options = s.n_servers + 1
    batch = np.asarray(state["task_bits"]).shape[0]
    n = s.n_devices
    q = n_qubits(n_options)
    shape = (batch, population, n, q)
    if uniforms is None:
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        draw = lambda g: rng.random(shape, dtype=np.float32)  # noqa: E731
    elif callable(uniforms):
        draw = uniforms
    else:
        uniforms = np.asarray(uniforms)
        if uniforms.shape != (iterations,) + shape:
            raise ValueError(f"uniforms has shape {uniforms.shape}; expected "
                             f"{(iterations,) + shape} (iterations, B, P, N, q)")
        draw = uniforms.__getitem__

    tiled = tile_state(state, population)
    cost_dtype = tiled["task_bits"].dtype
    prices = np.broadcast_to(np.asarray(prices, cost_dtype), (batch, s.n_servers))
    tiled_prices = np.repeat(prices, population, axis=0)

    beta = np.full(shape, math.sqrt(0.5), dtype)
    best_x = np.zeros((batch, n), np.int32)
    best_f = np.full((batch,), np.inf, cost_dtype)
    for g in range(iterations):
        x = measure(beta, np.asarray(draw(g)), n_options)                  # [B, P, N]
        fitness = mean_cost(tiled, x.reshape(batch * population, n), tiled_prices, s,
                            true_channel=False).reshape(batch, population)
        beta, best_x, best_f = update(beta, best_x, best_f, x, fitness, delta_theta,
                                      theta_min)
    return best_x, best_f
