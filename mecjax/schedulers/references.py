"""The simplest references: all-local, uniformly random, nearest (best observed channel)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mecjax.config import as_params
from mecjax.env.types import Decision
from mecjax.schedulers.base import Scheduler, fixed_prices


@dataclasses.dataclass(frozen=True)
class Local(Scheduler):
    """Every device computes its own task."""

    name = "local"

    def act(self, key, sched_state, obs, params):
        p = as_params(params)
        return Decision(jnp.zeros((p.n_devices,), jnp.int32), fixed_prices(p)), sched_state


@dataclasses.dataclass(frozen=True)
class Random(Scheduler):
    """Each device picks local or a server uniformly at random."""

    name = "random"

    def act(self, key, sched_state, obs, params):
        p = as_params(params)
        off = jax.random.randint(key, (p.n_devices,), 0, p.n_servers + 1, jnp.int32)
        return Decision(off, fixed_prices(p)), sched_state


@dataclasses.dataclass(frozen=True)
class Nearest(Scheduler):
    """All-offload: each device to the server with its best observed channel."""

    name = "nearest"

    def act(self, key, sched_state, obs, params):
        best = jnp.argmax(obs.gain_observed, axis=-1).astype(jnp.int32) + 1
        return Decision(best, fixed_prices(params)), sched_state
