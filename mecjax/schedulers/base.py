"""The scheduler protocol and registry (DESIGN.md section 2).

A scheduler is a frozen, hashable dataclass of its hyper-parameters (so it is
a static argument under ``jit``) with three pure methods:

* ``init(key, params) -> sched_state``
* ``act(key, sched_state, obs, params) -> (Decision, sched_state)``
* ``observe(sched_state, transition, params) -> sched_state`` for schedulers
  that learn online (default: unchanged).

``sched_state`` is any pytree; batch instances with ``vmap``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import struct

from mecjax.env.types import Decision, Observation
from mecjax.optim.pricing import initial_prices as fixed_prices  # noqa: F401  (re-exported)
from mecjax.registry import build

@struct.dataclass
class Transition:
    """What a scheduler may learn from after a slot."""

    obs: Observation
    decision: Decision
    reward: jax.Array
    next_obs: Observation
    info: dict

@dataclasses.dataclass(frozen=True)
class Scheduler:
    """Base class: subclasses set ``name`` and implement ``act``."""

    name: ClassVar[str] = "scheduler"

    def init(self, key: jax.Array, params) -> Any:
        return jnp.zeros((), jnp.float32)

    def act(self, key: jax.Array, sched_state: Any, obs: Observation, params):
        raise NotImplementedError

    def observe(self, sched_state: Any, transition: Transition, params) -> Any:
        return sched_state

_REGISTRY: dict[str, type[Scheduler]] = {}

def register(cls: type[Scheduler]) -> type[Scheduler]:
    """Class decorator: make a scheduler available by its ``name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"scheduler name {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls

def available() -> list[str]:
    """Names of all registered schedulers."""
    return sorted(_REGISTRY)

def make(name: str, **options) -> Scheduler:
    """Build a registered scheduler by name, e.g. ``make("qio_mec", iterations=50)``."""
    return build(_REGISTRY, "scheduler", name, options)
