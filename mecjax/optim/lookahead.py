"""Look-ahead cost over a horizon on the digital twin's predicted slots (paper eq. 22).

DT-MEC minimises sum_{k<H} sum_i (alpha L_i + beta E_i + gamma payment_i) over
the twin's predicted slots t .. t+H-1 instead of the current slot alone. The
slots are coupled by the state variables a decision changes: each
device's battery (energy spent now is missing later; an empty battery forces
offloading, or fails the task with ``Scenario.battery_hard``), each server's
backlog (work above F_j tau carries over and delays every later task there)
and, with ``Scenario.device_queue``, each device's own queue. They are
propagated here with the environment's own update rules
(:func:`mecjax.env.env.queues_after`, :mod:`mecjax.env.dynamics`), with the
mean harvest in place of the random one.

A *plan* is an offloading decision per predicted slot, ``[H, N]`` (slot k
uses ``plan[k]``), so a device may offload now and compute locally later. A
*hold plan* ``[N]`` is the same decision in every slot (what the selfish
look-ahead game plays). Only the first slot's decision is executed; the next
slot plans again on a fresh prediction (receding horizon).

:func:`cooperative_plan` minimises eq. 22 as written, the system's cost
summed over devices and slots, by coordinate descent over (slot, device)
pairs: under equal shares on its server-level form, where a move costs O(H M)
(:mod:`mecjax.optim.plan_descent`), else by simulating the horizon for every
option (:mod:`mecjax.optim.coordinate`).

``slots`` is any pytree with ``task_bits`` [H, N], ``task_cycles`` [H, N] and
``gain`` [H, N, M] (the twin's :class:`~mecjax.learners.twin.Slots`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mecjax.config import as_params
from mecjax.env import dynamics
from mecjax.env import env as _env
from mecjax.env.types import Observation
from mecjax.optim import coordinate, objective, plan_descent


def predicted_view(obs: Observation, slots, k, battery=None, backlog=None,
                   device_backlog=None) -> Observation:
    """The twin's view of slot t+k: predicted tasks and channel (as ``gain_observed``,
    the field every optimizer plans on), and the given battery [N], backlog [M] and
    device backlog [N] (default: the observed ones)."""
    return obs.replace(
        t=obs.t + k,
        task_bits=slots.task_bits[k],
        task_cycles=slots.task_cycles[k],
        gain_observed=slots.gain[k],
        battery=obs.battery if battery is None else battery,
        backlog=obs.backlog if backlog is None else backlog,
        device_backlog=obs.device_backlog if device_backlog is None else device_backlog,
    )


def as_plan(offload, horizon: int):
    """[H, N] the plan ``offload`` stands for: itself if [H, N], a hold plan
    (the same decision in every slot) if [N]."""
    offload = jnp.asarray(offload, jnp.int32)
    return jnp.broadcast_to(offload, (horizon, offload.shape[-1]))


def horizon_terms(obs: Observation, slots, params, allocation_rule: str = "equal"):
    """:class:`~mecjax.optim.objective.CandidateTerms` of every predicted slot (leaves
    [H, ...]): what no plan changes, computed once per decision rather than in every
    evaluation of a plan (the coordinate descent evaluates thousands)."""
    def terms(bits, cycles, gain):
        view = obs.replace(task_bits=bits, task_cycles=cycles, gain_observed=gain)
        return objective.candidate_terms(view, params, allocation_rule)

    return jax.vmap(terms)(slots.task_bits, slots.task_cycles, slots.gain)


def _slot_step(obs: Observation, prices, p, allocation_rule: str):
    """The horizon loop's step: ``((battery, backlog, device_backlog), (bits, cycles, gain,
    offload, slot_terms)) -> (carry of the next slot, [N] each device's cost)``."""
    def slot(carry, xs):
        battery, backlog, device_backlog = carry
        bits, cycles, gain, offload, slot_terms = xs
        view = obs.replace(task_bits=bits, task_cycles=cycles, gain_observed=gain,
                           battery=battery, backlog=backlog, device_backlog=device_backlog)
        out = objective.outcome_from_terms(slot_terms, view, offload, prices, p,
                                           allocation_rule)
        battery = dynamics.battery_update(battery, out.energy, 0.5, p.harvest_max_j,
                                          p.battery_capacity_j)
        backlog, device_backlog = _env.queues_after(backlog, device_backlog, cycles,
                                                    obs.cpu_freq, out, p)
        return (battery, backlog, device_backlog), out.cost

    return slot


def horizon_costs(obs: Observation, slots, offload, prices, params,
                  allocation_rule: str = "equal", terms=None):
    """[H, N] each device's weighted cost in every predicted slot under the plan
    ``offload`` ([H, N], slot k uses ``offload[k]``; or a hold plan [N]), battery,
    server backlog and device backlog carried from slot to slot (eq. 22's terms).
    ``terms``: :func:`horizon_terms` of ``slots``, computed here when None."""
    p = as_params(params)
    plan = as_plan(offload, slots.task_bits.shape[0])
    if terms is None:
        terms = horizon_terms(obs, slots, p, allocation_rule)
    _, costs = jax.lax.scan(_slot_step(obs, prices, p, allocation_rule),
                            (obs.battery, obs.backlog, obs.device_backlog),
                            (slots.task_bits, slots.task_cycles, slots.gain, plan, terms))
    return costs


def plans_mean_cost(obs: Observation, slots, plans, prices, params,
                    allocation_rule: str = "equal", terms=None):
    """[B] :func:`plan_mean_cost` of each plan in ``plans`` [B, H, N]. The batch is inside
    the horizon loop (its step is vmapped, not the loop): the values a ``vmap`` of
    :func:`plan_mean_cost` gives, in a program that is traced and batched once (the
    batching rule of a loop traces its body again)."""
    p = as_params(params)
    if terms is None:
        terms = horizon_terms(obs, slots, p, allocation_rule)
    step = _slot_step(obs, prices, p, allocation_rule)

    def slot(carry, xs):
        bits, cycles, gain, rows, slot_terms = xs
        return jax.vmap(lambda c, row: step(c, (bits, cycles, gain, row, slot_terms)))(
            carry, rows)

    n_plans = plans.shape[0]
    carry = jax.tree.map(lambda x: jnp.broadcast_to(x, (n_plans,) + x.shape),
                         (obs.battery, obs.backlog, obs.device_backlog))
    _, costs = jax.lax.scan(slot, carry, (slots.task_bits, slots.task_cycles, slots.gain,
                                          jnp.swapaxes(jnp.asarray(plans, jnp.int32), 0, 1),
                                          terms))                              # [H, B, N]
    return jnp.sum(jnp.mean(costs, -1), 0)


def horizon_costs_fn(obs: Observation, slots, prices, params, allocation_rule: str = "equal"):
    """offload [N] -> [N] each device's cost summed over the horizon: the
    ``costs_fn`` of :func:`mecjax.optim.game.best_response` for look-ahead play (the
    slots' terms computed once, here)."""
    terms = horizon_terms(obs, slots, params, allocation_rule)
    return lambda a: jnp.sum(horizon_costs(obs, slots, a, prices, params, allocation_rule,
                                           terms), 0)


def plan_mean_cost(obs: Observation, slots, plan, prices, params,
                   allocation_rule: str = "equal", terms=None):
    """Scalar eq. 22 objective of ``plan`` [H, N] (or a hold plan [N]): the
    device-mean cost summed over the predicted slots (``terms``: as in
    :func:`horizon_costs`)."""
    return jnp.sum(jnp.mean(horizon_costs(obs, slots, plan, prices, params,
                                          allocation_rule, terms), -1))


def horizon_mean_cost(obs: Observation, slots, offload, prices, params,
                      allocation_rule: str = "equal"):
    """Scalar eq. 22 objective of the hold plan ``offload`` [N] (:func:`plan_mean_cost`)."""
    return plan_mean_cost(obs, slots, offload, prices, params, allocation_rule)


def cooperative_plan(obs: Observation, slots, myopic, prices, params, max_sweeps: int = 10,
                     allocation_rule: str = "equal"):
    """``(plan [H, N], converged)``: eq. 22 as written, minimised by coordinate descent
    over (slot, device) pairs (:func:`mecjax.optim.coordinate.coordinate_descent`).

    The descent starts from the better on eq. 22 of the hold plan of ``myopic`` [N]
    (the one-slot decision) and all-local, and only accepts improving moves, so
    the plan is never worse than either on the predicted cost (its value:
    :func:`plan_mean_cost`). ``converged``: the last sweep changed nothing (a local
    optimum for single changes).
    """
    p = as_params(params)
    horizon = slots.task_bits.shape[0]
    terms = horizon_terms(obs, slots, p, allocation_rule)
    value_of = lambda plan: plan_mean_cost(obs, slots, plan, prices, p,  # noqa: E731
                                           allocation_rule, terms)
    values_of = lambda plans: plans_mean_cost(obs, slots, plans, prices, p,  # noqa: E731
                                              allocation_rule, terms)
    held = as_plan(myopic, horizon)
    local = jnp.zeros_like(held)
    start_values = values_of(jnp.stack([local, held]))
    start = jnp.where(start_values[0] < start_values[1], local, held)
    if plan_descent.supported(p, allocation_rule):
        t = plan_descent.plan_terms(obs, slots, terms, prices, p)
        plan, _, converged = plan_descent.descend(t, start, p, values_of, max_sweeps)
        return plan, converged
    plan, _, _, converged = coordinate.coordinate_descent(value_of, start, p.n_servers + 1,
                                                          max_sweeps)
    return plan, converged
