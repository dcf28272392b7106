"""The learner protocol shared by every trained scheduler, its registry and
the jitted chunk of updates.

A learner is a frozen, hashable dataclass of hyper-parameters (static under
``jit``) with pure methods:

* ``init(key, params) -> train_state``: everything a run needs to continue
  bit-identically: network parameters, target networks, optimizer states,
  replay buffers, the B training instances' environment states, the PRNG key
  and the update counter (and any frozen input it trains on, such as the GAT
  of ``drl_gat``). A pytree of arrays only. ``state_shapes(params)`` gives its
  structure without computing it (the target for restoring a checkpoint).
* ``update(train_state, params) -> (train_state, metrics)``: one training
  iteration (typically one environment slot on every training instance plus
  gradient steps). ``metrics`` is a dict of scalars; the one named by the
  class attribute ``progress_metric`` (default ``mean_cost``, the mean
  weighted device cost of the slot, eq. 3) is required, for progress and
  learning curves. :func:`train_chunk` scans it under ``jit``;
  :func:`train_chunk_seeds` does the same for K independent seeds at once
  (one ``jit`` of ``vmap`` over the seeds, PureJaxRL style).
* ``policy(train_state) -> policy_params``: the arrays the scheduler needs at
  execution time (a pytree).
* ``scheduler_name``: the registered scheduler that executes the policy; it
  is built with ``make(scheduler_name, checkpoint=...)``, or without a
  checkpoint for the untrained policy.

The built-in learners are listed in :data:`BUILTIN_LEARNERS` and imported
when first asked for, so ``get_learner(name)`` works whatever was imported
before; other learners are added with :func:`register_learner`.
"""

from __future__ import annotations

import dataclasses
import importlib
from functools import partial
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from mecjax.registry import build

#: name -> "module:Class" of the built-in learners (imported on first use).
BUILTIN_LEARNERS: dict[str, str] = {
    "drl_fgso": "mecjax.learners.drl_fgso:DRLFGSO",
    "drl_gat": "mecjax.learners.drl_gat:DRLGAT",
    "gat_mec": "mecjax.learners.gat_mec:GATMECLearner",
    "tsg_marl": "mecjax.learners.tsg_marl:TSGMARLLearner",
    "twin": "mecjax.learners.twin:TwinLearner",
}

#: name -> class of every learner imported so far (built-in or registered).
LEARNERS: dict[str, type] = {}


@dataclasses.dataclass(frozen=True)
class Learner:
    name: ClassVar[str] = "learner"
    scheduler_name: ClassVar[str] = ""
    #: metric of ``update`` shown in progress lines and the learning curve
    progress_metric: ClassVar[str] = "mean_cost"

    def init(self, key, params) -> Any:
        raise NotImplementedError

    def update(self, train_state, params):
        raise NotImplementedError

    def policy(self, train_state) -> Any:
        raise NotImplementedError

    def state_shapes(self, params) -> Any:
        """The train state's structure with ``jax.ShapeDtypeStruct`` leaves
        (nothing computed or read): what a checkpoint restores into."""
        return jax.eval_shape(lambda: self.init(jax.random.key(0), params))

    def hyper(self) -> dict:
        """JSON-serialisable hyper-parameters (saved in checkpoints)."""
        return dataclasses.asdict(self)

    def for_seed(self, seed: int) -> "Learner":
        """The learner that training seed ``seed`` initialises with. A learner
        whose hyper-parameters name a per-seed input (``drl_gat``'s
        ``gat_checkpoint`` with ``{seed}`` in it) resolves it here; the others
        are the same learner for every seed. ``update`` and ``policy`` must not
        depend on what this resolves, so every seed of a multi-seed run shares
        one compiled chunk."""
        return self


def _builtin_matches(name: str, cls: type) -> bool:
    module, _, qualname = BUILTIN_LEARNERS[name].partition(":")
    return cls.__module__ == module and cls.__qualname__ == qualname


def register_learner(cls):
    """Class decorator: make a learner available by its ``name``. A built-in
    name may only be registered by the class :data:`BUILTIN_LEARNERS` names."""
    known = LEARNERS.get(cls.name)
    if (known is not None and known is not cls) or (
            cls.name in BUILTIN_LEARNERS and not _builtin_matches(cls.name, cls)):
        raise ValueError(f"learner {cls.name!r} is already registered")
    LEARNERS[cls.name] = cls
    return cls


def available_learners() -> list[str]:
    """Names of every learner: the built-in ones and those registered."""
    return sorted(set(BUILTIN_LEARNERS) | set(LEARNERS))


def learner_class(name: str) -> type:
    """The class of learner ``name`` (importing a built-in one's module)."""
    if name not in LEARNERS and name in BUILTIN_LEARNERS:
        module, _, qualname = BUILTIN_LEARNERS[name].partition(":")
        cls = getattr(importlib.import_module(module), qualname)
        if cls.name != name:
            raise RuntimeError(f"{BUILTIN_LEARNERS[name]} is named {cls.name!r}, not {name!r}")
        LEARNERS.setdefault(name, cls)
    if name not in LEARNERS:
        raise ValueError(f"unknown learner {name!r}; available: {', '.join(available_learners())}")
    return LEARNERS[name]


def get_learner(name: str, **hyper) -> Learner:
    """Build a learner by name, e.g. ``get_learner("drl_fgso", n_envs=32)``."""
    return build({name: learner_class(name)}, "learner", name, hyper, what="hyper-parameter")


def _scan_updates(learner: Learner, state, scenario, n: int):
    """``n`` updates of ``learner`` from ``state`` as one ``lax.scan``: the one
    body that :func:`train_chunk` jits and :func:`train_chunk_seeds` vmaps."""
    def body(s, _):
        return learner.update(s, scenario)

    return jax.lax.scan(body, state, None, length=n)


@partial(jax.jit, static_argnums=(0, 3))
def train_chunk(learner: Learner, state, scenario, n: int):
    """``n`` updates of ``learner`` from ``state`` as one ``lax.scan`` under ``jit``.

    ``scenario``: a Scenario or EnvParams. Returns the new train
    state and the metrics of every update, ``{name: [n]}``. Compiled once per
    learner, scenario sizes and ``n``.
    """
    return _scan_updates(learner, state, scenario, n)


@partial(jax.jit, static_argnums=(0, 3))
def train_chunk_seeds(learner: Learner, states, scenario, n: int):
    """:func:`train_chunk` for K independent seeds at once: ``states`` is K train
    states stacked on a leading axis (:func:`init_seeds`), every seed runs the
    same ``n`` updates, and the whole chunk is one ``jit`` of ``vmap`` over the
    seeds (PureJaxRL's ``jax.jit(jax.vmap(train))``). Returns the new stacked
    states and the metrics ``{name: [K, n]}``."""
    return jax.vmap(lambda s: _scan_updates(learner, s, scenario, n))(states)


def stack_states(states: list) -> Any:
    """K train states of the same structure as one, each leaf stacked [K, ...]."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def seed_state(states, k: int) -> Any:
    """Seed ``k``'s train state out of stacked ``states`` (:func:`stack_states`)."""
    return jax.tree.map(lambda x: x[k], states)


def init_seeds(learner: Learner, params, seed: int, seeds: int) -> Any:
    """The K = ``seeds`` train states of seeds ``seed, ..., seed + K - 1``, stacked:
    seed k's is ``learner.for_seed(seed + k).init(jax.random.key(seed + k), params)``,
    the very state a single run with ``seed + k`` starts from."""
    return stack_states([learner.for_seed(s).init(jax.random.key(s), params)
                         for s in range(seed, seed + seeds)])


def seeds_state_shapes(learner: Learner, params, seed: int, seeds: int) -> Any:
    """:func:`init_seeds`'s structure with ``jax.ShapeDtypeStruct`` leaves [K, ...]
    (nothing computed). ValueError if the seeds' train states differ in shape
    (e.g. ``drl_gat`` seeds on GAT checkpoints of other sizes): they cannot be stacked."""
    shapes = [learner.for_seed(s).state_shapes(params) for s in range(seed, seed + seeds)]
    first = jax.tree.structure(shapes[0]), [(x.shape, x.dtype) for x in jax.tree.leaves(shapes[0])]
    for s, other in zip(range(seed, seed + seeds), shapes):
        if (jax.tree.structure(other), [(x.shape, x.dtype) for x in jax.tree.leaves(other)]) \
                != first:
            raise ValueError(f"{learner.name}: the train state of seed {s} differs in shape from "
                             f"seed {seed}'s, so the {seeds} seeds cannot be trained together")
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct((seeds,) + x.shape, x.dtype), shapes[0])


__all__ = ["BUILTIN_LEARNERS", "LEARNERS", "Learner", "available_learners", "get_learner",
           "init_seeds", "learner_class", "register_learner", "seed_state", "seeds_state_shapes",
           "stack_states", "train_chunk", "train_chunk_seeds"]
