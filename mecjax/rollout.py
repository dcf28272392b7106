"""Batched rollouts: any scheduler for T slots under ``lax.scan``, ``vmap``ped
over B instances, with per-slot metrics (their confidence intervals are
:mod:`mecjax.stats`).

Instances are common random numbers across schedulers: instance b's reset and
environment noise depend only on ``key`` and b, never on the scheduler, so
two schedulers run with the same key face the same devices, tasks and
channels (paired comparisons).

The scheduler is an ordinary argument of the jitted rollout (a pytree: its
hyper-parameters are static, its trained weights are data; see
:mod:`mecjax.schedulers.base`).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from mecjax.config import as_params
from mecjax.env import env
from mecjax.schedulers.base import Scheduler, Transition

METRICS = ("latency_ms", "energy_j", "throughput_mbps", "fairness", "utility", "mean_cost",
           "welfare_cost", "revenue", "offload_fraction", "invalid_decision", "deadline_miss",
           "failed")


def rollout_instance(scheduler: Scheduler, params, key: jax.Array, n_slots: int,
                     probe=None) -> dict[str, jax.Array]:
    """Per-slot metrics ``{name: [T]}`` of ``scheduler`` on the one instance of
    ``key`` (traceable; :func:`rollout` vmaps it over ``split(key, B)``).

    ``probe(obs, decision, params) -> {name: scalar}``, if given, adds per-slot
    quantities computed from each slot's observation and decision (e.g. a bound on
    the slot's optimum) to the metrics, on the very trajectory the metrics describe.
    """
    k_reset, k_sched, k_env, k_act = jax.random.split(key, 4)
    obs, state = env.reset(k_reset, params)
    sched_state = scheduler.init(k_sched, params)

    def slot(carry, t):
        obs, state, sched_state = carry
        decision, sched_state = scheduler.act(jax.random.fold_in(k_act, t), sched_state, obs, params)
        next_obs, state, reward, _, info = env.step(jax.random.fold_in(k_env, t), state, decision,
                                                    params)
        sched_state = scheduler.observe(sched_state, Transition(obs, decision, reward, next_obs, info),
                                        params)
        out = {k: info[k].astype(jnp.float32) for k in METRICS}
        if probe is not None:
            out.update(probe(obs, decision, params))
        return (next_obs, state, sched_state), out

    _, per_slot = jax.lax.scan(slot, (obs, state, sched_state), jnp.arange(n_slots))
    return per_slot


@partial(jax.jit, static_argnums=(3, 4))
def _rollout(scheduler, params, key, n_instances: int, n_slots: int):
    keys = jax.random.split(key, n_instances)
    return jax.vmap(lambda k: rollout_instance(scheduler, params, k, n_slots))(keys)


def rollout(scheduler: Scheduler, params, key: jax.Array, n_instances: int,
            n_slots: int | None = None) -> dict[str, jax.Array]:
    """Per-slot metrics ``{name: [B, T]}`` of ``scheduler`` on B fresh instances.

    ``n_slots`` defaults to the scenario's horizon.
    """
    if n_instances < 1:
        raise ValueError(f"n_instances={n_instances} must be >= 1")
    n_slots = as_params(params).horizon if n_slots is None else n_slots
    if n_slots < 1:
        raise ValueError(f"n_slots={n_slots} must be >= 1")
    return _rollout(scheduler, params, key, n_instances, n_slots)


def compile_rollout(scheduler: Scheduler, params, key: jax.Array, n_instances: int,
                    n_slots: int | None = None):
    """The compiled program :func:`rollout` runs for these arguments, without running it
    (for a memory preflight: ``mecjax.preflight.check_compiled``). It is the very program
    a later :func:`rollout` call executes, so a persistent compilation cache serves both."""
    n_slots = as_params(params).horizon if n_slots is None else n_slots
    return _rollout.trace(scheduler, params, key, n_instances, n_slots).lower().compile()


__all__ = ["METRICS", "compile_rollout", "rollout", "rollout_instance"]
