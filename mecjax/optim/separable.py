"""The slot objective in separable form, for fast cooperative search and a lower bound.

With the optimal closed-form shares of :mod:`mecjax.optim.allocation`, the
system's weighted cost of an offloading vector x splits into per-device terms
and one convex term per server (all on the delayed channel a scheduler sees):

    N * mean_cost(x) = sum_i own_i(x_i) + sum_j [ S_j(x)^2 + (alpha / F_j) T_j(x)^2 ]
    S_j = sum_{i on j} sqrt(K_ij),   K_ij = (alpha + beta P_i) D_i / (B_j se_ij)
    T_j = sum_{i on j} sqrt(C_i)
    own_i(0) = alpha (q_i + C_i) / f_i + beta kappa f_i^2 C_i         (local, eq. 1-2)
    own_i(j) = alpha (Q_j / F_j + w_j) + gamma p_j C_i 1e-9           (wait, WAN, payment)

(sum_i K_ij / b_i is minimised by b_i ~ sqrt K_ij at (sum sqrt K_ij)^2, and
alpha sum C_i / (c_i F) by c_i ~ sqrt C_i at alpha (sum sqrt C_i)^2 / F.) A
device whose battery cannot pay for local execution is forced to its best
server, so its option 0 costs what that server costs. (q_i is the device's own
queue with ``Scenario.device_queue``, else 0; w_j the server's WAN delay, 0 for
an edge server.) Equal to :func:`mecjax.optim.objective.mean_cost` except where
an uplink rate hits the 1 bit/s floor (a vanishing channel; tested on random
vectors).

With ``Scenario.battery_hard`` a device on server j fails when its battery is
below its transmission energy at the optimal share, E_ij = P_i D_i S_j /
(sqrt(K_ij) B_j se_ij), which depends on the others on j through S_j: the cost is
no longer separable. :func:`separable_mean_cost` then sums each device's cost
(``sqrt(K_ij) S_j + (alpha / F_j) sqrt(C_i) T_j + own``, replaced by the failure
cost of :func:`mecjax.env.evaluate_arrays` where the device fails), exactly, and
:func:`descend` prices every move by that full sum (O(N M) per option instead of
O(1)). The relaxation bound is unchanged and still a lower bound: a failed
task never costs less than it would have cost run.

Two uses: :func:`descend`, coordinate descent whose every move costs O(M)
instead of a full O(N) evaluation (server sums updated incrementally), and
:func:`relaxation_bound`, a lower bound on the slot's optimum: the objective
is a convex quadratic in the assignment, so its minimum over fractional
assignments (each device's options on a simplex) is below every integer
assignment's cost. Frank-Wolfe on that relaxation certifies a bound at every
iteration (the linear minorant at the current point).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from typing import Any

from mecjax.config import as_params
from mecjax.env import env, physics
from mecjax.optim.indexing import at, set_at
from mecjax.optim.loops import batched_like

IMPROVE_TOL = 1e-7  # relative drop of a device's contribution a move needs
HARD_IMPROVE_TOL = 1e-6  # relative drop of the total a move needs (battery_hard: float32 sums)


@struct.dataclass
class SlotTerms:
    """The separable slot objective of one instance (see the module docstring)."""

    own: jax.Array       # [N, M+1] per-device cost of each option (forcing applied to 0)
    root_k: jax.Array    # [N, M] sqrt(K_ij)
    root_c: jax.Array    # [N] sqrt(C_i)
    edge: jax.Array      # [] or [M] alpha / F_j
    target: jax.Array    # [N, M+1] int: the server each option executes on (0 = local)
    # Scenario.battery_hard only (else None): (tx_energy [N, M] P_i D_i / (B_j se_ij),
    # battery [N], local cost [N], failure_cost []).
    hard: Any = None


def slot_terms(view, prices, params) -> SlotTerms:
    """The separable terms of ``view`` (an Observation: delayed channel) at ``prices`` [M]."""
    p = as_params(params)
    se = jnp.maximum(physics.spectral_efficiency(view.tx_power[:, None], view.gain_observed,
                                                 p.noise_w), 1e-12)                 # [N, M]
    k = (p.alpha + p.beta * view.tx_power[:, None]) * view.task_bits[:, None] / (
        p.bandwidth_hz * se)
    cycles = view.task_cycles
    local_energy = physics.local_energy(cycles, view.cpu_freq, p.kappa)                # [N]
    local = physics.weighted_cost(env.local_latency(cycles, view.cpu_freq,
                                                    view.device_backlog, p),
                                  local_energy, 0.0, p.alpha, p.beta, p.gamma)          # [N]
    wait = physics.queue_wait(view.backlog, p.server_cpu_hz)                           # [M]
    wan = env.wan_delays(p)
    if wan is not None:
        wait = wait + wan
    edge_own = (p.alpha * wait[None, :]
                + p.gamma * physics.payment(prices[None, :], cycles[:, None]))       # [N, M]
    best = env.best_observed_server(view.gain_observed)
    forced = view.battery < local_energy
    n, m = edge_own.shape
    servers = jnp.broadcast_to(jnp.arange(1, m + 1, dtype=jnp.int32), (n, m))
    target = jnp.concatenate([jnp.where(forced, best, 0)[:, None], servers], axis=1)
    own_local = jnp.where(forced, jnp.take_along_axis(edge_own, (best - 1)[:, None], 1)[:, 0],
                          local)
    hard = None
    if p.battery_hard:
        tx_energy = view.tx_power[:, None] * view.task_bits[:, None] / (p.bandwidth_hz * se)
        hard = (tx_energy, view.battery, local, jnp.asarray(p.failure_cost, jnp.float32))
    return SlotTerms(own=jnp.concatenate([own_local[:, None], edge_own], axis=1),
                     root_k=jnp.sqrt(k), root_c=jnp.sqrt(cycles),
                     edge=jnp.float32(p.alpha) / p.server_cpu_hz, target=target, hard=hard)


def _server_sums(terms: SlotTerms, x):
    """([M], [M]) S_j and T_j of assignment x [N] (options, forcing applied)."""
    on = jnp.take_along_axis(terms.target, x[:, None], 1)[:, 0]
    m = terms.root_k.shape[1]
    return (physics.per_server_sum(on, physics.gain_of_server(on, terms.root_k), m),
            physics.per_server_sum(on, terms.root_c, m))


def _device_costs(terms: SlotTerms, x):
    """[N] each device's weighted cost under assignment x [N] (optimal shares), failures of
    ``Scenario.battery_hard`` included: the module docstring's per-device form."""
    s, t = _server_sums(terms, x)
    on = jnp.take_along_axis(terms.target, x[:, None], 1)[:, 0]
    rk = physics.gain_of_server(on, terms.root_k)                       # 0 for local devices
    s_mine = physics.per_device_of_server(on, s)
    t_mine = physics.per_device_of_server(on, t)
    edge = physics.of_server(on, terms.edge)
    own = jnp.take_along_axis(terms.own, x[:, None], 1)[:, 0]
    cost = own + rk * s_mine + edge * terms.root_c * t_mine
    if terms.hard is None:
        return cost
    tx_energy, battery, local, failure_cost = terms.hard
    # at its optimal share b = sqrt(K_ij) / S_j the device needs P D / (b B se) joules
    energy = (physics.gain_of_server(on, tx_energy) * s_mine
              / jnp.where(on > 0, rk, 1.0))
    failed = (on > 0) & (battery < energy)
    return jnp.where(failed, jnp.maximum(cost, local) + failure_cost, cost)


def separable_mean_cost(terms: SlotTerms, x):
    """Scalar mean weighted cost of offloading vector x [N] under optimal shares."""
    if terms.hard is not None:
        return jnp.mean(_device_costs(terms, x))
    s, t = _server_sums(terms, x)
    own = jnp.take_along_axis(terms.own, x[:, None], 1)[:, 0]
    return (jnp.sum(own) + jnp.sum(s**2 + terms.edge * t**2)) / x.shape[0]


def _option_costs(terms: SlotTerms, i, s, t):
    """[M+1] device i's contribution to N * mean_cost for each option, the others' sums
    ``s``, ``t`` [M] (device i removed)."""
    rk, rc = at(terms.root_k, i), at(terms.root_c, i)
    server = (2 * s * rk + rk**2) + terms.edge * (2 * t * rc + rc**2)             # [M]
    server = jnp.concatenate([jnp.zeros((1,)), server])                             # [M+1]
    where = at(terms.target, i)                                                     # [M+1]
    return at(terms.own, i) + jnp.take(server, where)


def descend(terms: SlotTerms, x0, max_sweeps: int = 20):
    """Cooperative coordinate descent on :func:`separable_mean_cost` from x0 [N].

    Devices in index order move to the option that lowers the system's cost most,
    until a sweep moves none or ``max_sweeps`` sweeps ran. Each move is O(M): the
    server sums are updated, not recomputed. Returns ``(x [N], sweeps, converged)``.
    With ``Scenario.battery_hard`` a move is priced by the full objective instead
    (see the module docstring).
    """
    if terms.hard is not None:
        return _descend_full(terms, x0, max_sweeps)
    m = terms.root_k.shape[1]
    options = jnp.arange(m + 1)

    def move(carry, i):
        x, s, t, changed = carry
        now, rk, rc = at(x, i), at(terms.root_k, i), at(terms.root_c, i)
        cur = at(terms.target, i, now)
        mine = (options[1:] == cur).astype(s.dtype)                                # [M]
        s_wo, t_wo = s - mine * rk, t - mine * rc
        costs = _option_costs(terms, i, s_wo, t_wo)
        best = jnp.argmin(costs).astype(jnp.int32)
        better = at(costs, best) < at(costs, now) * (1 - IMPROVE_TOL)
        xi = jnp.where(better, best, now)
        on = (options[1:] == at(terms.target, i, xi)).astype(s.dtype)
        return (set_at(x, xi, i), s_wo + on * rk, t_wo + on * rc, changed | better), None

    def sweep(state):
        x, _, sweeps = state
        s, t = _server_sums(terms, x)        # fresh sums each sweep: no drift
        (x, _, _, changed), _ = jax.lax.scan(move, batched_like((x, s, t, False), terms.own),
                                             jnp.arange(x.shape[0]))
        return x, changed, sweeps + 1

    x, changed, sweeps = jax.lax.while_loop(
        lambda st: st[1] & (st[2] < max_sweeps), sweep,
        batched_like((jnp.asarray(x0, jnp.int32), jnp.bool_(True), jnp.int32(0)), terms.own))
    return x, sweeps, ~changed


def _descend_full(terms: SlotTerms, x0, max_sweeps: int):
    """:func:`descend` with every move priced by the whole objective (:func:`_device_costs`
    summed): devices in index order move to their best option while it lowers the total."""
    options = jnp.arange(terms.own.shape[1], dtype=jnp.int32)

    def move(carry, i):
        x, changed = carry
        costs = jax.vmap(lambda o: jnp.sum(_device_costs(terms, set_at(x, o, i))))(options)
        best = jnp.argmin(costs).astype(jnp.int32)
        now = at(x, i)
        better = at(costs, best) < at(costs, now) - HARD_IMPROVE_TOL * jnp.abs(at(costs, now))
        return (set_at(x, jnp.where(better, best, now), i), changed | better), None

    def sweep(state):
        x, _, sweeps = state
        (x, changed), _ = jax.lax.scan(move, batched_like((x, False), terms.own),
                                       jnp.arange(x.shape[0]))
        return x, changed, sweeps + 1

    x, changed, sweeps = jax.lax.while_loop(
        lambda st: st[1] & (st[2] < max_sweeps), sweep,
        batched_like((jnp.asarray(x0, jnp.int32), jnp.bool_(True), jnp.int32(0)), terms.own))
    return x, sweeps, ~changed


def _relaxed_cost(terms: SlotTerms, w):
    """N * mean_cost at fractional assignment w [N, M+1] (rows on the simplex)."""
    m = terms.root_k.shape[1]
    on = jax.nn.one_hot(terms.target, m + 1)[..., 1:]                 # [N, M+1, M]
    share = jnp.einsum("no,nom->nm", w, on)                           # [N, M] weight on server j
    s = jnp.sum(share * terms.root_k, axis=0)
    t = jnp.sum(share * terms.root_c[:, None], axis=0)
    return jnp.sum(w * terms.own) + jnp.sum(s**2 + terms.edge * t**2)


def relaxation_bound(terms: SlotTerms, iterations: int = 200):
    """Scalar lower bound on min_x mean_cost(x) over integer x (optimal shares).

    Frank-Wolfe on the convex relaxation: at each iterate w, f(w) + min_v <grad, v - w>
    (v a vertex: one option per device) is below the relaxation's minimum, hence
    below every integer assignment's cost; the best such value over the iterations is
    returned (divided by N, as a mean). With ``Scenario.battery_hard`` it bounds the
    cost without failures, which is below the cost with them (a failed task costs at
    least what it would have cost run), so it is a lower bound there too.
    """
    n, k = terms.own.shape
    w0 = jnp.full((n, k), 1.0 / k)
    f_grad = jax.value_and_grad(lambda w: _relaxed_cost(terms, w))

    def step(carry, it):
        w, bound = carry
        f, g = f_grad(w)
        vertex = jax.nn.one_hot(jnp.argmin(g, axis=1), k)
        gap = jnp.sum(g * (w - vertex))
        bound = jnp.maximum(bound, f - gap)
        gamma = 2.0 / (it + 2.0)
        return ((1 - gamma) * w + gamma * vertex, bound), None

    (_, bound), _ = jax.lax.scan(step, (w0, -jnp.inf), jnp.arange(iterations, dtype=jnp.float32))
    return bound / n
