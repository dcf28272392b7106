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
  learning curves. :func:`train_chunk` scans it under ``jit``.
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


@partial(jax.jit, static_argnums=(0, 3))
def train_chunk(learner: Learner, state, scenario, n: int):
    """``n`` updates of ``learner`` from ``state`` as one ``lax.scan`` under ``jit``.

    ``scenario``: a Scenario or EnvParams. Returns the new train
    state and the metrics of every update, ``{name: [n]}``. Compiled once per
    learner, scenario sizes and ``n``.
    """
    def body(s, _):
        return learner.update(s, scenario)

    return jax.lax.scan(body, state, None, length=n)


__all__ = ["BUILTIN_LEARNERS", "LEARNERS", "Learner", "available_learners", "get_learner",
           "learner_class", "register_learner", "train_chunk"]
