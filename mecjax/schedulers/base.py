"""The scheduler protocol and registry.

A scheduler is a frozen dataclass with three pure methods:

* ``init(key, params) -> sched_state``
* ``act(key, sched_state, obs, params) -> (Decision, sched_state)``
* ``observe(sched_state, transition, params) -> sched_state`` for schedulers
  that learn online (default: unchanged).

``sched_state`` is any pytree; batch instances with ``vmap``.

Every scheduler is a JAX pytree (registered when its class is defined):
fields declared with :func:`leaf_field` hold arrays, such as the weights a
learned scheduler read from its checkpoint when it was built, and are the
leaves; every other field is a hyper-parameter, static (part of the treedef,
so it must be hashable). A scheduler is therefore an ordinary argument of a
jitted function: its hyper-parameters select the compiled program, its
weights are data, and a retrained checkpoint runs in the same program with
its new weights. A scheduler without leaf fields is hashable, as before.

The built-in schedulers are listed in :data:`BUILTIN_SCHEDULERS` and
imported when first asked for, so ``make(name)`` works whatever was
imported before; others are added with :func:`register`.
"""

from __future__ import annotations

import dataclasses
import importlib
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


def leaf_field(default: Any = None) -> Any:
    """A scheduler field that holds arrays (a pytree, e.g. loaded weights): its
    value is traced under ``jit``. Fields not declared with it are static."""
    return dataclasses.field(default=default, metadata={"leaf": True})


def _fields(cls) -> tuple[list[str], list[str]]:
    """(leaf field names, static field names) of a scheduler class."""
    fields = dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else ()
    return ([f.name for f in fields if f.metadata.get("leaf")],
            [f.name for f in fields if not f.metadata.get("leaf")])


def _flatten_with_keys(x):
    leaves, static = _fields(type(x))
    return ([(jax.tree_util.GetAttrKey(n), getattr(x, n)) for n in leaves],
            tuple(getattr(x, n) for n in static))


def _flatten(x):
    leaves, static = _fields(type(x))
    return [getattr(x, n) for n in leaves], tuple(getattr(x, n) for n in static)


def _unflatten(cls, static, children):
    # Rebuilt field by field, not through __init__: __post_init__ (validation,
    # reading checkpoints) runs once when the user builds a scheduler, never
    # on the traced copies jit and vmap make.
    obj = object.__new__(cls)
    leaves, names = _fields(cls)
    for name, value in zip(names, static):
        object.__setattr__(obj, name, value)
    for name, value in zip(leaves, children):
        object.__setattr__(obj, name, value)
    return obj


def _register_pytree(cls) -> None:
    jax.tree_util.register_pytree_with_keys(
        cls, _flatten_with_keys, lambda static, children: _unflatten(cls, static, children),
        _flatten)


@dataclasses.dataclass(frozen=True)
class Scheduler:
    """Base class: subclasses set ``name`` and implement ``act``."""

    name: ClassVar[str] = "scheduler"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Fields are read when a scheduler is flattened, so the dataclass
        # decorator, applied after this hook, is taken into account.
        _register_pytree(cls)

    def init(self, key: jax.Array, params) -> Any:
        return jnp.zeros((), jnp.float32)

    def act(self, key: jax.Array, sched_state: Any, obs: Observation, params):
        raise NotImplementedError

    def observe(self, sched_state: Any, transition: Transition, params) -> Any:
        return sched_state


_register_pytree(Scheduler)

#: name -> "module:Class" of the built-in schedulers (imported on first use).
BUILTIN_SCHEDULERS: dict[str, str] = {
    "local": "mecjax.schedulers.references:Local",
    "random": "mecjax.schedulers.references:Random",
    "nearest": "mecjax.schedulers.references:Nearest",
    "greedy": "mecjax.schedulers.greedy:Greedy",
    "best_response": "mecjax.schedulers.best_response:BestResponse",
    "exact": "mecjax.schedulers.exact:Exact",
    "cooperative": "mecjax.schedulers.cooperative:Cooperative",
    "qio_mec": "mecjax.schedulers.qio_mec:QIOMEC",
    "qio_mec_multi": "mecjax.schedulers.qio_mec:QIOMECMulti",
    "qio_mec_warm": "mecjax.schedulers.qio_mec:QIOMECWarm",
    "pso": "mecjax.schedulers.ts_hybrid_sb:PSOScheduler",
    "ts_hybrid_sb": "mecjax.schedulers.ts_hybrid_sb:TSHybridSB",
    "drl_fgso": "mecjax.schedulers.drl_fgso:DRLFGSO",
    "gat_mec": "mecjax.schedulers.gat_mec:GATMEC",
    "tsg_marl": "mecjax.schedulers.tsg_marl:TSGMARL",
    "dt_mec": "mecjax.schedulers.dt_mec:DTMEC",
    "unified": "mecjax.schedulers.unified:Unified",
}

#: name -> class of every scheduler imported so far (built-in or registered).
SCHEDULERS: dict[str, type[Scheduler]] = {}


def register(cls: type[Scheduler]) -> type[Scheduler]:
    """Class decorator: make a scheduler available by its ``name`` (the
    built-in names are taken)."""
    if cls.name in BUILTIN_SCHEDULERS or SCHEDULERS.get(cls.name, cls) is not cls:
        raise ValueError(f"scheduler name {cls.name!r} is already registered")
    SCHEDULERS[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of every scheduler: the built-in ones and those registered."""
    return sorted(set(BUILTIN_SCHEDULERS) | set(SCHEDULERS))


def scheduler_class(name: str) -> type[Scheduler]:
    """The class of scheduler ``name`` (importing a built-in one's module)."""
    if name not in SCHEDULERS and name in BUILTIN_SCHEDULERS:
        module, _, qualname = BUILTIN_SCHEDULERS[name].partition(":")
        cls = getattr(importlib.import_module(module), qualname)
        if cls.name != name:
            raise RuntimeError(f"{BUILTIN_SCHEDULERS[name]} is named {cls.name!r}, not {name!r}")
        SCHEDULERS[name] = cls
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; available: {', '.join(available())}")
    return SCHEDULERS[name]


def make(name: str, **options) -> Scheduler:
    """Build a scheduler by name, e.g. ``make("qio_mec", iterations=50)`` or
    ``make("drl_fgso", checkpoint=run_dir)`` (reads the checkpoint now)."""
    return build({name: scheduler_class(name)}, "scheduler", name, options)


__all__ = ["BUILTIN_SCHEDULERS", "SCHEDULERS", "Scheduler", "Transition", "available",
           "fixed_prices", "leaf_field", "make", "register", "scheduler_class"]
