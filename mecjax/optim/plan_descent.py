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
from mecjax.optim.indexing import at, set_at
from mecjax.optim.loops import batched_like

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


# The rows of PlanState.servers and Moves.servers: the aggregates each slot sums per server.
SERVER_SUMS = ("count", "unit", "edge", "work")


@struct.dataclass
class PlanState:
    """A plan's server aggregates, energies and battery margins (:func:`plan_state`).
    The four per-server sums are one array (``servers``): a move reads and writes slot
    k's row of all four at once (one slice and one update in the program, not four)."""

    run: jax.Array       # [H, N] int32 the server each device executes on (forcing applied)
    moved: jax.Array     # [H, N] unit energy at the device's server (0 if local)
    servers: jax.Array   # [H, 4, M] n_kj, U_kj, E_kj, W_kj (SERVER_SUMS)
    local: jax.Array     # [H] sum of l_ki over local devices
    energy: jax.Array    # [H, N] each device's energy in the slot
    battery: jax.Array   # [H, N] each device's battery at the start of the slot
    slack: jax.Array     # [H, N] the largest battery change after slot k that moves no
                         # battery across its local energy where the plan computes locally

    @property
    def count(self):
        """[H, M] n_kj: the devices executing on each server."""
        return self.servers[..., 0, :]

    @property
    def unit(self):
        """[H, M] U_kj."""
        return self.servers[..., 1, :]

    @property
    def edge(self):
        """[H, M] E_kj."""
        return self.servers[..., 2, :]

    @property
    def work(self):
        """[H, M] W_kj."""
        return self.servers[..., 3, :]


def forced(t: PlanTerms, s: PlanState):
    """[H, N] bool: the battery is below the local energy (option 0 offloads)."""
    return s.battery < t.local_energy


def _energy(run, moved, count, local_energy):
    """[N] each device's energy in a slot under equal shares (``local_energy`` [N]: the
    slot's)."""
    return jnp.where(run > 0, moved * physics.per_device_of_server(run, count), local_energy)


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
    # slack[k] = min(margin[k+1:]): unrolled over the few slots (a running minimum fuses
    # with the margins; a reversed cummin is a kernel of its own, in every move)
    rows = [jnp.full_like(margin[0], jnp.inf)]
    for k in range(margin.shape[0] - 1, 0, -1):
        rows.append(jnp.minimum(rows[-1], margin[k]))
    return jnp.stack(rows[::-1])


def plan_state(t: PlanTerms, plan, params) -> PlanState:
    """The :class:`PlanState` of ``plan`` [H, N], batteries and backlogs carried from the
    observation with the mean harvest (as :func:`mecjax.optim.lookahead.horizon_costs`)."""
    p = as_params(params)
    m = p.n_servers
    def slot(battery, xs):
        offload, local_energy, best_server, unit_energy, unit, edge_own, cycles, local_cost = xs
        run = _env.force_to_best(offload, battery < local_energy, best_server)
        count = physics.per_server_sum(run, jnp.ones(run.shape, jnp.float32), m)
        moved = physics.gain_of_server(run, unit_energy)
        energy = _energy(run, moved, count, local_energy)
        servers = jnp.stack([
            count, physics.per_server_sum(run, physics.gain_of_server(run, unit), m),
            physics.per_server_sum(run, physics.gain_of_server(run, edge_own), m),
            physics.per_server_sum(run, cycles, m)])
        out = (run, moved, servers, jnp.sum(jnp.where(run == 0, local_cost, 0.0)),
               energy, battery)
        return dynamics.battery_update(battery, energy, 0.5, p.harvest_max_j,
                                       p.battery_capacity_j), out

    # the scan slices each slot's rows
    _, (run, moved, servers, local, energy, battery) = jax.lax.scan(
        slot, t.battery0, (plan, t.local_energy, t.best_server, t.unit_energy, t.unit,
                           t.edge_own, t.cycles, t.local_cost))
    return PlanState(run=run, moved=moved, servers=servers, local=local, energy=energy,
                     battery=battery, slack=_slack(t, plan, battery))


def aggregate_value(t: PlanTerms, servers, local, params):
    """Eq. 22 (device-mean cost summed over the slots) from the aggregates ``servers``
    [..., H, 4, M] (:data:`SERVER_SUMS`) and ``local`` [..., H] (leading axes are batch
    axes: a value each); the backlog chain starts from the observation."""
    p = as_params(params)
    backlog, total = t.backlog0, 0.0
    for k in range(servers.shape[-3]):     # unrolled: H is small, and the sums are [M]
        count, unit, edge, work = (servers[..., k, j, :] for j in range(4))
        wait = physics.queue_wait(backlog, p.server_cpu_hz)
        total = total + jnp.sum(count * unit + p.alpha * count * wait + edge, -1)
        total = total + local[..., k]
        backlog = dynamics.backlog_update(backlog, work, p.server_cpu_hz, p.slot_s)
    return total / t.local_cost.shape[-1]


def state_value(t: PlanTerms, s: PlanState, params):
    """Scalar eq. 22 of the plan whose state is ``s``."""
    return aggregate_value(t, s.servers, s.local, params)


@struct.dataclass
class Moves:
    """Slot k's aggregates after moving one device to each of its options ([M+1, ...])."""

    run_on: jax.Array    # [M+1] int32 the server each option executes on
    servers: jax.Array   # [M+1, 4, M] slot k's row of PlanState.servers
    local: jax.Array     # [M+1]


def option_values(t: PlanTerms, s: PlanState, k, i, value, params):
    """``(values [M+1], unsafe [M+1], moves)``: eq. 22 after moving device ``i`` in slot
    ``k`` to each option, from the aggregates (the current option's value is ``value``);
    ``unsafe``: that value may be wrong (a battery may cross its local energy, or a rate
    reach the floor); ``moves``: slot k's :class:`Moves`."""
    m = s.servers.shape[-1]
    servers = jnp.arange(1, m + 1, dtype=jnp.int32)
    options = jnp.arange(m + 1, dtype=jnp.int32)
    here = at(s.run, k, i)
    local_energy = at(t.local_energy, k, i)
    local_cost = at(t.local_cost, k, i)
    forced_here = at(s.battery, k, i) < local_energy
    run_on = jnp.where(options > 0, options, jnp.where(forced_here, at(t.best_server, k, i), 0))
    leave = (servers == here).astype(jnp.float32)                                   # [M]
    join = (servers[None, :] == run_on[:, None]).astype(jnp.float32)                # [M+1, M]
    delta = join - leave[None, :]
    # what device i adds to each sum of a server it executes on: [4, M]
    mine = jnp.stack([jnp.ones((m,), jnp.float32), at(t.unit, k, i), at(t.edge_own, k, i),
                      jnp.broadcast_to(at(t.cycles, k, i), (m,))])
    local = at(s.local, k)
    moves = Moves(run_on=run_on, servers=at(s.servers, k)[None] + delta[:, None, :] * mine[None],
                  # unchanged where the device stays on its server: moving to it is a no-op
                  local=jnp.where(run_on == here, local,
                                  local - jnp.where(here == 0, local_cost, 0.0)
                                  + jnp.where(run_on == 0, local_cost, 0.0)))
    # [M+1, H, ...] the tables after each move: slot k's row replaced (a select, not a
    # batched update: the same values, a smaller program)
    at_k = jnp.arange(s.servers.shape[0]) == k                                      # [H]
    values = aggregate_value(
        t, jnp.where(at_k[:, None, None], moves.servers[:, None], s.servers[None]),
        jnp.where(at_k, moves.local[:, None], s.local[None]), params)
    moving = run_on != here
    values = jnp.where(moving, values, value)
    # Battery changes after slot k: device i's own energy change, and the unit energy of
    # every other device on the server it leaves (+) or joins (-).
    own_energy = jnp.where(run_on > 0, physics.gain_of_server(
        run_on, jnp.broadcast_to(at(t.unit_energy, k, i), (m + 1, m)))
        * physics.per_device_of_server(run_on, moves.servers[:, 0]), local_energy)
    slack = at(s.slack, k)                                                         # [N]
    own_unsafe = jnp.abs(own_energy - at(s.energy, k, i)) >= at(slack, i)
    crossing = (at(s.moved, k) >= slack).astype(jnp.float32)                       # [N]
    risky = (physics.per_server_sum(at(s.run, k), crossing, m) > 0) | at(t.floor_risk, k)
    touched = jnp.maximum(join, leave[None, :]) > 0                                 # [M+1, M]
    server_unsafe = jnp.any(touched & risky[None, :], axis=1)
    return values, moving & (own_unsafe | server_unsafe), moves


def apply_move(t: PlanTerms, s: PlanState, plan, k, i, moves: Moves, o, params) -> PlanState:
    """The state after device ``i`` in slot ``k`` moves to option ``o`` (``plan``: the plan
    after the move), when the move forces or frees no device in a later slot (option
    values not ``unsafe``): slot k's aggregates and energies, and every later battery.
    Moving to the current option leaves the state as it is, bit for bit."""
    b = at(moves.run_on, o)
    run = set_at(s.run, b, k, i)
    moved = set_at(s.moved, jnp.where(b > 0, at(t.unit_energy, k, i, jnp.maximum(b - 1, 0)),
                                    0.0), k, i)
    row = at(moves.servers, o)
    servers = set_at(s.servers, row, k)
    energy = set_at(s.energy, _energy(at(run, k), at(moved, k), row[0],
                                    at(t.local_energy, k)), k)
    battery = _batteries(t, energy, params)
    return s.replace(run=run, moved=moved, servers=servers,
                     local=set_at(s.local, at(moves.local, o), k), energy=energy,
                     battery=battery, slack=_slack(t, plan, battery))


def descend(t: PlanTerms, start, params, simulate, max_sweeps: int = 10):
    """Coordinate descent over (slot, device) pairs from ``start`` [H, N] (the pairs in
    the order of :func:`mecjax.optim.coordinate.coordinate_descent`: slot-major), each
    moving to the option that lowers eq. 22 most by more than ``IMPROVE_TOL`` (relative).

    ``simulate``: plans [B, H, N] -> [B] eq. 22 by simulating the horizon, used for the
    options of a move the aggregates cannot price. Returns ``(plan, sweeps, converged)``.
    """
    horizon, n = start.shape
    options = jnp.arange(t.unit.shape[-1] + 1, dtype=jnp.int32)
    ref = t.cycles      # the instance's data: the loops' carries start batched like it

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
                                       batched_like((default, jnp.bool_(False), operand), ref))
        return out

    def move(carry, pair):
        plan, state, value, stale, revalue, changed = carry
        k, i = pair
        # The state is rebuilt from the plan at a sweep's first move and after an accepted
        # simulated move (which may force or free devices later), and revalued then and
        # after an accepted safe move: one rebuild and one valuation in the program, each
        # run where it is needed (the rebuild in a loop that runs only then).
        state = once(stale, lambda pl: plan_state(t, pl, params), plan, state)
        value = jnp.where(stale | revalue, state_value(t, state, params), value)
        fast, unsafe, moves = option_values(t, state, k, i, value, params)
        simulated = jnp.any(unsafe)
        # [M+1, H, N] the plan with (k, i) set to each option
        at_ki = (jnp.arange(horizon)[:, None] == k) & (jnp.arange(n)[None, :] == i)
        values = once(simulated, lambda pl: simulate(
            jnp.where(at_ki, options[:, None, None], pl[None])), plan, fast)
        current = at(plan, k, i)
        best = jnp.argmin(values).astype(jnp.int32)
        now = at(values, current)
        better = at(values, best) < now - IMPROVE_TOL * jnp.abs(now)
        # moving to the current option leaves the state as it is, bit for bit (the same
        # rows, energies and batteries recomputed): no select between two states
        choice = jnp.where(better, best, current)
        plan = set_at(plan, choice, k, i)
        state = apply_move(t, state, plan, k, i, moves, choice, params)
        return (plan, state, value, better & simulated, better, changed | better), None

    def sweep(carry):
        plan, state, _, sweeps = carry
        (plan, state, _, _, _, changed), _ = jax.lax.scan(
            move, batched_like((plan, state, jnp.zeros((), jnp.float32), jnp.bool_(True),
                                jnp.bool_(False), jnp.bool_(False)), ref),
            (jnp.repeat(jnp.arange(horizon, dtype=jnp.int32), n),
             jnp.tile(jnp.arange(n, dtype=jnp.int32), horizon)))
        return plan, state, changed, sweeps + 1

    start = jnp.asarray(start, jnp.int32)
    # the first move of every sweep rebuilds the state: it starts as zeros of its shape
    empty = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                         jax.eval_shape(lambda pl: plan_state(t, pl, params), start))
    plan, _, changed, sweeps = jax.lax.while_loop(
        lambda c: c[2] & (c[3] < max_sweeps), sweep,
        batched_like((start, empty, jnp.bool_(True), jnp.int32(0)), ref))
    return plan, sweeps, ~changed
