"""The learner protocol shared by every trained scheduler.

A learner is a frozen, hashable dataclass of hyper-parameters (static under
``jit``) with pure methods:

* ``init(key, params) -> train_state``: everything a run needs to continue
  bit-identically: network parameters, target networks, optimizer states,
  replay buffers, the B training instances' environment states, the PRNG key
  and the update counter. A pytree of arrays only.
* ``update(train_state, params) -> (train_state, metrics)``: one training
  iteration (typically one environment slot on every training instance plus
  gradient steps). ``metrics`` is a dict of scalars; the one named by the
  class attribute ``progress_metric`` (default ``mean_cost``, the mean
  weighted device cost of the slot, eq. 3) is required, for progress and
  learning curves. ``mecjax.train`` scans it under ``jit`` in chunks.
* ``policy(train_state) -> policy_params``: the arrays the scheduler needs at
  execution time (a pytree).
* ``scheduler_name``: the registered scheduler that executes the policy; it
  is built with ``make(scheduler_name, checkpoint=...)`` or, for an untrained
  policy, from ``init_policy(key, params)``.

Registered with :func:`register_learner`, looked up by ``get_learner``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from mecjax.registry import build

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

    def hyper(self) -> dict:
        """JSON-serialisable hyper-parameters (saved in checkpoints)."""
        return dataclasses.asdict(self)


def register_learner(cls):
    if cls.name in LEARNERS and LEARNERS[cls.name] is not cls:
        raise ValueError(f"learner {cls.name!r} is already registered")
    LEARNERS[cls.name] = cls
    return cls


def get_learner(name: str, **hyper) -> Learner:
    """Build a registered learner, e.g. ``get_learner("drl_fgso", n_envs=32)``."""
    return build(LEARNERS, "learner", name, hyper, what="hyper-parameter")
