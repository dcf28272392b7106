"""Batched rollouts: any scheduler for T slots under ``lax.scan``, each slot
``vmap``ped over B instances, with per-slot metrics (their confidence intervals are
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


def _slot_fn(scheduler: Scheduler, params, probe):
    """One slot of one instance: ``(carry, (t, k_env, k_act)) -> (carry, {name: scalar})``
    with ``carry = (obs, state, sched_state)``."""
    def slot(carry, xs):
        t, k_env, k_act = xs
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

    return slot


def rollout_instance(scheduler: Scheduler, params, key: jax.Array, n_slots: int,
                     probe=None) -> dict[str, jax.Array]:
    """Per-slot metrics ``{name: [T]}`` of ``scheduler`` on the one instance of
    ``key`` (traceable; for many instances use :func:`rollout_instances`).

    ``probe(obs, decision, params) -> {name: scalar}``, if given, adds per-slot
    quantities computed from each slot's observation and decision (e.g. a bound on
    the slot's optimum) to the metrics, on the very trajectory the metrics describe.
    """
    k_reset, k_sched, k_env, k_act = jax.random.split(key, 4)
    obs, state = env.reset(k_reset, params)
    sched_state = scheduler.init(k_sched, params)
    slot = _slot_fn(scheduler, params, probe)
    _, per_slot = jax.lax.scan(lambda c, t: slot(c, (t, k_env, k_act)),
                               (obs, state, sched_state), jnp.arange(n_slots))
    return per_slot


def rollout_instances(scheduler: Scheduler, params, keys: jax.Array, n_slots: int,
                      probe=None) -> dict[str, jax.Array]:
    """Per-slot metrics ``{name: [B, T]}`` of ``scheduler`` on the instances of ``keys``
    [B] (traceable): row b is :func:`rollout_instance` on ``keys[b]``, value for value.

    The batch is inside the slot loop (each slot vmapped over the instances), not a
    ``vmap`` of the loop: under ``vmap`` a loop's body is batched again until its carry's
    batching settles (twice for a rollout, whose reset leaves constants that a step makes
    per-instance), and every loop in the scheduler with it: twice the tracing.
    """
    split = jax.vmap(lambda k: jax.random.split(k, 4))(keys)                    # [B, 4]
    k_reset, k_sched, k_env, k_act = (split[:, j] for j in range(4))
    obs, state = jax.vmap(lambda k: env.reset(k, params))(k_reset)
    sched_state = jax.vmap(lambda k: scheduler.init(k, params))(k_sched)
    slot = jax.vmap(_slot_fn(scheduler, params, probe), in_axes=(0, (None, 0, 0)))
    _, per_slot = jax.lax.scan(lambda c, t: slot(c, (t, k_env, k_act)),
                               (obs, state, sched_state), jnp.arange(n_slots))
    return {k: jnp.swapaxes(v, 0, 1) for k, v in per_slot.items()}


@partial(jax.jit, static_argnums=(3, 4))
def _rollout(scheduler, params, key, n_instances: int, n_slots: int):
    return rollout_instances(scheduler, params, jax.random.split(key, n_instances), n_slots)


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


__all__ = ["METRICS", "compile_rollout", "rollout", "rollout_instance", "rollout_instances"]
