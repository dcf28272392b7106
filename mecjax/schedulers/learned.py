"""Base of the schedulers that execute a trained policy.

``checkpoint`` names a run directory written by ``mecjax train`` or an
exported policy directory. It is read once, on the host, when the scheduler
is built (``make(name, checkpoint=...)``), and checked to be a checkpoint of
this scheduler's learner; the weights are then the scheduler's ``trained``
field (:class:`~mecjax.learners.store.TrainedPolicy`), a pytree leaf, so the
jitted rollout takes them as an argument. The scenario's sizes are checked
in ``init`` (where they are static): a policy trained for another N or M is
refused with :class:`mecjax.checkpoint.CheckpointMismatchError`.

With ``checkpoint=""`` the scheduler runs its learner's untrained, randomly
initialised policy (the baseline that training must beat), made in ``init``
from its key.

Built once, a scheduler keeps its weights: ``dataclasses.replace`` with the
same ``checkpoint`` reuses them, with another one reads that one. Build it
again to pick up a checkpoint retrained since.

The checkpoint's path is static (it names where the weights came from), so two
schedulers that differ only by the checkpoint they were read from (e.g. the
policies of three training seeds) are different jit programs. :func:`in_memory`
drops the path and keeps the weights: such schedulers then share one compiled
program, each with its own weights as data.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax

from mecjax.learners.base import get_learner
from mecjax.learners.store import TrainedPolicy, load_trained
from mecjax.schedulers.base import Scheduler, leaf_field


def trained_for(checkpoint: str, trained: TrainedPolicy | None,
                method: str) -> TrainedPolicy | None:
    """The weights for ``checkpoint``: ``trained`` if it was read from there,
    else read now (None for ``checkpoint=""``, unless ``trained`` was built in
    memory, with no checkpoint)."""
    if not checkpoint:
        return trained if trained is not None and not trained.checkpoint else None
    if trained is not None and trained.checkpoint == checkpoint and trained.method == method:
        return trained
    return load_trained(checkpoint, method)


@dataclasses.dataclass(frozen=True)
class LearnedScheduler(Scheduler):
    checkpoint: str = ""
    #: the weights read from ``checkpoint`` when built (None: untrained)
    trained: TrainedPolicy | None = leaf_field()

    def __post_init__(self):
        object.__setattr__(self, "checkpoint", os.fspath(self.checkpoint))   # a Path: its str
        object.__setattr__(self, "trained",
                           trained_for(self.checkpoint, self.trained, self.learner()))

    def learner(self) -> str:
        """Name of the learner that trains this scheduler's policy (default: same name)."""
        return self.name

    def check_trained(self, params) -> None:
        """Refuse weights trained for another scenario (default: another N or M)."""
        self.trained.check_sizes(params)

    def untrained_policy(self, key, params) -> Any:
        """A freshly initialised policy (the learner's ``policy(init(key))``)."""
        learner = get_learner(self.learner())
        return learner.policy(learner.init(key, params))

    def policy(self, key, params) -> Any:
        """The policy pytree: the trained weights (checked against the scenario
        ``params``), or an untrained policy from ``key``."""
        if self.trained is None:
            return self.untrained_policy(key, params)
        self.check_trained(params)
        return self.trained.policy

    def init(self, key, params):
        return self.policy(jax.random.fold_in(key, 0), params)

    def in_memory(self) -> "LearnedScheduler":
        """This scheduler with its weights kept and the path they were read from
        cleared (see :func:`in_memory`)."""
        trained = self.trained
        if trained is not None and trained.checkpoint:
            trained = dataclasses.replace(trained, checkpoint="")
        return dataclasses.replace(self, checkpoint="", trained=trained)


def in_memory(scheduler: Scheduler) -> Scheduler:
    """``scheduler`` with every checkpoint path cleared and the weights read from them
    kept: it acts exactly as before, but its static part (the jit cache key) no longer
    names where its weights came from, so schedulers that differ only by that (the same
    method trained with other seeds) run in one compiled program. A scheduler with
    learned parts defines ``in_memory()`` (:class:`LearnedScheduler`, the unified
    scheduler); any other is returned unchanged.

    Check the weights against the scenario before (``check_trained``): a mismatch found
    afterwards cannot name the checkpoint any more."""
    method = getattr(scheduler, "in_memory", None)
    return method() if callable(method) else scheduler


__all__ = ["LearnedScheduler", "in_memory", "trained_for"]
