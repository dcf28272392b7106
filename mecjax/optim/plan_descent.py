"""Cooperative coordinate descent on eq. 22 whose moves cost O(H M), not a horizon evaluation.

:func:`mecjax.optim.lookahead.cooperative_plan` lowers eq. 22 (the system's
cost summed over devices and the H predicted slots) one (slot, device) pair
at a time. Evaluating each of a pair's M+1 options by simulating the whole
horizon costs O(H N) per option, O(H^2 N^2 M) per sweep. Under equal shares
(the look-ahead's rule) the objective has a server-level form that makes a
move O(H M) instead:

    N * eq22 = sum_k [ sum_{i local} l_ki
                       + sum_j ( n_kj U_kj + alpha n_kj Q_kj / F_j + E_kj ) ]
    u_kij = (alpha + beta P_i) D_ki / r_kij + alpha C_ki / F_j   (a device's cost per
                                                                  device sharing j)
    U_kj = sum_{i on j} u_kij,   E_kj = sum_{i on j} (alpha w_j + gamma p_j C_ki 1e-9)
    Q_k+1,j = max(0, Q_kj + W_kj - F_j tau),   W_kj = sum_{i on j} C_ki

(r_kij the rate at a full share, n_kj the devices on j in slot k, l_ki the
local cost, w_j the WAN delay). Moving device i in slot k changes only slot
k's aggregates of its old and new server, and through the backlog chain
their later waits: every option is priced by re-summing [H, M] aggregates.

What this form leaves out is the battery: a device's energy depends on its
server's count, so a move changes the batteries of every device on the two
servers in later slots, and a device planned local whose battery crosses its
local energy is forced to offload (which changes that slot's counts). A move
is priced by the aggregates only when no such crossing can happen: each
device's battery changes by at most the energy change at slot k in every
later slot (the battery update is 1-Lipschitz), so the move is safe when that
change is below the device's smallest later margin |battery - local energy|
in the slots where it plans to compute locally. Otherwise, and where a
vanishing channel could reach the 1 bit/s rate floor, the pair's options are
evaluated by simulating the horizon (:func:`mecjax.optim.lookahead.plan_mean_cost`),
and if one is accepted the aggregates are rebuilt from the plan; an accepted
safe move updates them (slot k's row, the energies, every later battery and
margin). Under ``vmap`` the simulations and rebuilds run in a loop that
executes only when some instance needs it. ``tests/test_plan_descent.py``
checks moves, values, states and results against the horizon simulation.

The pairs are visited in the order of
:func:`mecjax.optim.coordinate.coordinate_descent` and a move must improve by
more than its ``IMPROVE_TOL``, so both descents make the same moves up to the
float rounding of near ties.

Scenarios with ``battery_hard`` (a failure depends on the battery and the
count) or ``device_queue`` (a local task delays the device's later ones) and
the optimal allocation rule are not covered by this form:
:func:`cooperative_plan` uses the horizon-evaluating descent there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from mecjax.config import as_params
from mecjax.env import dynamics, physics
from mecjax.env import env as _env
from mecjax.optim.coordinate import IMPROVE_TOL

# A margin |battery - local energy| counts as safe only above this relative slack: the
# aggregates' batteries and the simulation's differ in float32 rounding.
MARGIN_RTOL = 1e-5


def supported(params, allocation_rule: str) -> bool:
    """Whether :func:`descend` applies: equal shares, no hard battery, no device queue."""
    p = as_params(params)
    return allocation_rule == "equal" and not p.battery_hard and not p.device_queue


@struct.dataclass
class PlanTerms:
    """Per (slot, device, server) constants of one decision's horizon (leaves [H, ...])."""

    unit: jax.Array         # [H, N, M] u_kij: cost per device sharing the server
    unit_energy: jax.Array  # [H, N, M] P_i D_ki / r_kij: energy per device sharing it
    edge_own: jax.Array     # [H, N, M] alpha w_j + gamma p_j C_ki 1e-9
    local_cost: jax.Array   # [H, N] l_ki
    local_energy: jax.Array  # [H, N] kappa f_i^2 C_ki
    cycles: jax.Array       # [H, N] C_ki
    best_server: jax.Array  # [H, N] int32: where an empty battery sends a local task
    floor_risk: jax.Array   # [H, M] bool: some rate on j could reach the floor
    battery0: jax.Array     # [N]
    backlog0: jax.Array     # [M]


def plan_terms(obs, slots, terms, prices, params) -> PlanTerms:
    """:class:`PlanTerms` from the observation, the predicted ``slots`` and their
    :func:`mecjax.optim.lookahead.horizon_terms` (equal shares)."""
    p = as_params(params)
    m = p.n_servers
    cpu = jnp.broadcast_to(jnp.asarray(p.server_cpu_hz, jnp.float32), (m,))
    bits, cycles = slots.task_bits, slots.task_cycles                       # [H, N]
    full_rate = terms.full_rate                                             # [H, N, M]
    unit = ((p.alpha + p.beta * obs.tx_power[None, :, None]) * bits[..., None] / full_rate
            + p.alpha * cycles[..., None] / cpu)
    edge_own = p.gamma * physics.payment(jnp.asarray(prices, jnp.float32), cycles[..., None])
    wan = _env.wan_delays(p)
    if wan is not None:
        edge_own = edge_own + p.alpha * wan
    local_cost = physics.weighted_cost(physics.local_latency(cycles, obs.cpu_freq),
                                       terms.local_energy, 0.0, p.alpha, p.beta, p.gamma)
    n = bits.shape[-1]
    return PlanTerms(unit=unit,
                     unit_energy=obs.tx_power[None, :, None] * bits[..., None] / full_rate,
                     edge_own=edge_own, local_cost=local_cost,
                     local_energy=terms.local_energy, cycles=cycles,
                     best_server=terms.best_server,
                     floor_risk=jnp.any(full_rate < 2.0 * n * physics.MIN_RATE_BPS, axis=1),
                     battery0=obs.battery, backlog0=obs.backlog)


@struct.dataclass
class PlanState:
    """A plan's server aggregates, energies and battery margins (:func:`plan_state`)."""

    run: jax.Array       # [H, N] int32 the server each device executes on (forcing applied)
    moved: jax.Array     # [H, N] unit energy at the device's server (0 if local)
    count: jax.Array     # [H, M] n_kj
    unit: jax.Array      # [H, M] U_kj
    edge: jax.Array      # [H, M] E_kj
    work: jax.Array      # [H, M] W_kj
    local: jax.Array     # [H] sum of l_ki over local devices
    energy: jax.Array    # [H, N] each device's energy in the slot
    battery: jax.Array   # [H, N] each device's battery at the start of the slot
    forced: jax.Array    # [H, N] bool: battery below local energy (option 0 offloads)
    slack: jax.Array     # [H, N] the largest battery change after slot k that moves no
                         # battery across its local energy where the plan computes locally


def _energy(t: PlanTerms, run, moved, count, k):
    """[N] each device's energy in slot ``k`` under equal shares."""
    return jnp.where(run > 0, moved * physics.per_device_of_server(run, count),
                     t.local_energy[k])


def _batteries(t: PlanTerms, energy, params):
    """[H, N] the batteries at the start of each slot given each slot's ``energy``
    [H, N] (mean harvest): the environment's battery update, slot after slot."""
    p = as_params(params)
    rows = [t.battery0]
    for k in range(energy.shape[0] - 1):
        rows.append(dynamics.battery_update(rows[-1], energy[k], 0.5, p.harvest_max_j,
                                            p.battery_capacity_j))
    return jnp.stack(rows)


def _slack(t: PlanTerms, plan, battery):
    """[H, N] for each slot k, the smallest margin |battery - local energy| (less a
    rounding allowance) over the later slots in which the plan computes locally: a
    battery change below it in every later slot forces no device and frees none."""
    margin = jnp.abs(battery - t.local_energy) - MARGIN_RTOL * (battery + t.local_energy)
    margin = jnp.where(plan == 0, margin, jnp.inf)          # only a local plan can be forced
    later = jax.lax.cummin(margin, axis=0, reverse=True)
    return jnp.concatenate([later[1:], jnp.full_like(later[:1], jnp.inf)], axis=0)


def plan_state(t: PlanTerms, plan, params) -> PlanState:
    """The :class:`PlanState` of ``plan`` [H, N], batteries and backlogs carried from the
    observation with the mean harvest (as :func:`mecjax.optim.lookahead.horizon_costs`)."""
    p = as_params(params)
    m = p.n_servers
    def slot(battery, k):
        forced = battery < t.local_energy[k]
        run = _env.force_to_best(plan[k], forced, t.best_server[k])
        count = physics.per_server_sum(run, jnp.ones(run.shape, jnp.float32), m)
        moved = physics.gain_of_server(run, t.unit_energy[k])
        energy = _energy(t, run, moved, count, k)
        out = (run, moved, count,
               physics.per_server_sum(run, physics.gain_of_server(run, t.unit[k]), m),
               physics.per_server_sum(run, physics.gain_of_server(run, t.edge_own[k]), m),
               physics.per_server_sum(run, t.cycles[k], m),
               jnp.sum(jnp.where(run == 0, t.local_cost[k], 0.0)), energy, battery, forced)
        return dynamics.battery_update(battery, energy, 0.5, p.harvest_max_j,
                                       p.battery_capacity_j), out

    _, (run, moved, count, unit, edge, work, local, energy, battery, forced) = jax.lax.scan(
        slot, t.battery0, jnp.arange(plan.shape[0]))
    return PlanState(run=run, moved=moved, count=count, unit=unit, edge=edge, work=work,
                     local=local, energy=energy, battery=battery, forced=forced,
                     slack=_slack(t, plan, battery))


def aggregate_value(t: PlanTerms, count, unit, edge, work, local, params):
    """Scalar eq. 22 (device-mean cost summed over the slots) from the aggregates
    ([H, M] and [H]); the backlog chain starts from the observation."""
    p = as_params(params)
    backlog, total = t.backlog0, 0.0
    for k in range(count.shape[0]):        # unrolled: H is small, and the sums are [M]
        wait = physics.queue_wait(backlog, p.server_cpu_hz)
        total = total + jnp.sum(count[k] * unit[k] + p.alpha * count[k] * wait + edge[k])
        total = total + local[k]
        backlog = dynamics.backlog_update(backlog, work[k], p.server_cpu_hz, p.slot_s)
    return total / t.local_cost.shape[-1]


def state_value(t: PlanTerms, s: PlanState, params):
    """Scalar eq. 22 of the plan whose state is ``s``."""
    return aggregate_value(t, s.count, s.unit, s.edge, s.work, s.local, params)


@struct.dataclass
class Moves:
    """Slot k's aggregates after moving one device to each of its options ([M+1, ...])."""

    run_on: jax.Array    # [M+1] int32 the server each option executes on
    count: jax.Array     # [M+1, M]
    unit: jax.Array      # [M+1, M]
    edge: jax.Array      # [M+1, M]
    work: jax.Array      # [M+1, M]
    local: jax.Array     # [M+1]


def option_values(t: PlanTerms, s: PlanState, k, i, value, params):
    """``(values [M+1], unsafe [M+1], moves)``: eq. 22 after moving device ``i`` in slot
    ``k`` to each option, from the aggregates (the current option's value is ``value``);
    ``unsafe``: that value may be wrong (a battery may cross its local energy, or a rate
    reach the floor); ``moves``: slot k's :class:`Moves`."""
    m = s.count.shape[-1]
    servers = jnp.arange(1, m + 1, dtype=jnp.int32)
    options = jnp.arange(m + 1, dtype=jnp.int32)
    here = s.run[k, i]
    run_on = jnp.where(options > 0, options, jnp.where(s.forced[k, i], t.best_server[k, i], 0))
    leave = (servers == here).astype(jnp.float32)                                   # [M]
    join = (servers[None, :] == run_on[:, None]).astype(jnp.float32)                # [M+1, M]
    delta = join - leave[None, :]

    def row(table, per_server):                 # [M+1, M] slot k's row after each move
        return table[k][None, :] + delta * per_server[None, :]

    moves = Moves(run_on=run_on, count=row(s.count, jnp.ones((m,), jnp.float32)),
                  unit=row(s.unit, t.unit[k, i]), edge=row(s.edge, t.edge_own[k, i]),
                  work=row(s.work, jnp.broadcast_to(t.cycles[k, i], (m,))),
                  local=(s.local[k] - jnp.where(here == 0, t.local_cost[k, i], 0.0)
                         + jnp.where(run_on == 0, t.local_cost[k, i], 0.0)))

    def value_after(c, u, e, w, loc):
        return aggregate_value(t, s.count.at[k].set(c), s.unit.at[k].set(u),
                               s.edge.at[k].set(e), s.work.at[k].set(w),
                               s.local.at[k].set(loc), params)

    values = jax.vmap(value_after)(moves.count, moves.unit, moves.edge, moves.work,
                                   moves.local)
    moving = run_on != here
    values = jnp.where(moving, values, value)
    # Battery changes after slot k: device i's own energy change, and the unit energy of
    # every other device on the server it leaves (+) or joins (-).
    own_energy = jnp.where(run_on > 0, physics.gain_of_server(
        run_on, jnp.broadcast_to(t.unit_energy[k, i], (m + 1, m)))
        * physics.per_device_of_server(run_on, moves.count), t.local_energy[k, i])
    own_unsafe = jnp.abs(own_energy - s.energy[k, i]) >= s.slack[k, i]
    crossing = (s.moved[k] >= s.slack[k]).astype(jnp.float32)                       # [N]
    risky = (physics.per_server_sum(s.run[k], crossing, m) > 0) | t.floor_risk[k]    # [M]
    touched = jnp.maximum(join, leave[None, :]) > 0                                 # [M+1, M]
    server_unsafe = jnp.any(touched & risky[None, :], axis=1)
    return values, moving & (own_unsafe | server_unsafe), moves


def apply_move(t: PlanTerms, s: PlanState, plan, k, i, moves: Moves, o, params) -> PlanState:
    """The state after device ``i`` in slot ``k`` moves to option ``o`` (``plan``: the plan
    after the move), when the move forces or frees no device in a later slot (option
    values not ``unsafe``): slot k's aggregates and energies, and every later battery."""
    b = moves.run_on[o]
    run = s.run.at[k, i].set(b)
    moved = s.moved.at[k, i].set(jnp.where(b > 0, t.unit_energy[k, i, jnp.maximum(b - 1, 0)],
                                           0.0))
    count = s.count.at[k].set(moves.count[o])
    energy = s.energy.at[k].set(_energy(t, run[k], moved[k], count[k], k))
    battery = _batteries(t, energy, params)
    return s.replace(run=run, moved=moved, count=count, unit=s.unit.at[k].set(moves.unit[o]),
                     edge=s.edge.at[k].set(moves.edge[o]),
                     work=s.work.at[k].set(moves.work[o]),
                     local=s.local.at[k].set(moves.local[o]), energy=energy, battery=battery,
                     # where the plan computes locally the move flips none of these (it is
                     # safe); elsewhere they change what option 0 would run on
                     forced=battery < t.local_energy, slack=_slack(t, plan, battery))


def descend(t: PlanTerms, start, params, simulate, max_sweeps: int = 10):
    """Coordinate descent over (slot, device) pairs from ``start`` [H, N] (the pairs in
    the order of :func:`mecjax.optim.coordinate.coordinate_descent`: slot-major), each
    moving to the option that lowers eq. 22 most by more than ``IMPROVE_TOL`` (relative).

    ``simulate``: plan [H, N] -> scalar eq. 22 by simulating the horizon, used for the
    options of a move the aggregates cannot price. Returns ``(plan, sweeps, converged)``.
    """
    horizon, n = start.shape
    options = jnp.arange(t.unit.shape[-1] + 1, dtype=jnp.int32)

    def once(need, fn, operand, default):
        """``fn(operand)`` where ``need``, else ``default``: under ``vmap`` a loop that runs
        only when some instance needs it (a ``cond`` becomes a select there: it would run
        for all, every time). The body rewrites the operand with the loop's flag (which
        leaves it as it is): a body that only read loop-invariant values would be hoisted
        out of the loop by XLA, and run every time after all."""
        def body(c):
            _, done, op = c
            return fn(op), jnp.bool_(True), jax.tree.map(
                lambda x: jnp.where(done, jnp.zeros_like(x), x), op)

        out, _, _ = jax.lax.while_loop(lambda c: need & ~c[1], body,
                                       (default, jnp.bool_(False), operand))
        return out

    def move(carry, flat):
        plan, state, value, stale, revalue, changed = carry
        # The state is rebuilt from the plan at a sweep's first move and after an accepted
        # simulated move (which may force or free devices later), and revalued then and
        # after an accepted safe move: one rebuild and one valuation in the program, each
        # run where it is needed (the rebuild in a loop that runs only then).
        state = once(stale, lambda pl: plan_state(t, pl, params), plan, state)
        value = jnp.where(stale | revalue, state_value(t, state, params), value)
        k, i = flat // n, flat % n
        fast, unsafe, moves = option_values(t, state, k, i, value, params)
        simulated = jnp.any(unsafe)
        values = once(simulated, lambda pl: jax.vmap(
            lambda o: simulate(pl.at[k, i].set(o)))(options), plan, fast)
        current = plan[k, i]
        best = jnp.argmin(values).astype(jnp.int32)
        better = values[best] < values[current] - IMPROVE_TOL * jnp.abs(values[current])
        plan = jnp.where(better, plan.at[k, i].set(best), plan)
        moved = apply_move(t, state, plan, k, i, moves, best, params)
        state = jax.tree.map(lambda new, old: jnp.where(better, new, old), moved, state)
        return (plan, state, value, better & simulated, better, changed | better), None

    def sweep(carry):
        plan, state, _, sweeps = carry
        (plan, state, _, _, _, changed), _ = jax.lax.scan(
            move, (plan, state, jnp.zeros((), jnp.float32), jnp.bool_(True),
                   jnp.bool_(False), jnp.bool_(False)),
            jnp.arange(horizon * n, dtype=jnp.int32))
        return plan, state, changed, sweeps + 1

    start = jnp.asarray(start, jnp.int32)
    # the first move of every sweep rebuilds the state: it starts as zeros of its shape
    empty = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                         jax.eval_shape(lambda pl: plan_state(t, pl, params), start))
    plan, _, changed, sweeps = jax.lax.while_loop(
        lambda c: c[2] & (c[3] < max_sweeps), sweep,
        (start, empty, jnp.bool_(True), jnp.int32(0)))
    return plan, sweeps, ~changed
