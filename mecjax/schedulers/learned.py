"""Base of the schedulers that execute a trained policy.

``checkpoint`` names a run directory written by ``mecjax train``; the policy
is loaded (and checked against the method and the scenario's sizes) when the
scheduler is initialised, so under ``jit`` it becomes a constant of the
compiled program. With ``checkpoint=""`` the scheduler runs its learner's
untrained, randomly initialised policy (the baseline that training must
beat).
"""

from __future__ import annotations

import dataclasses
import jax

from mecjax.config import as_params
from mecjax.learners.base import get_learner
from mecjax.schedulers.base import Scheduler


@dataclasses.dataclass(frozen=True)
class LearnedScheduler(Scheduler):
    checkpoint: str = ""
    # Set from the checkpoint's latest step and time when built: schedulers are static
    # jit arguments, so a retrained checkpoint must not reuse a stale compiled policy.
    checkpoint_id: str = ""

    def __post_init__(self):
        if self.checkpoint and not self.checkpoint_id:
            from mecjax.train import checkpoint_stamp

            object.__setattr__(self, "checkpoint_id", checkpoint_stamp(self.checkpoint))

    def load_policy(self, key, params):
        """The policy pytree: from the checkpoint, or freshly initialised."""
        p = as_params(params)
        if self.checkpoint:
            from mecjax.train import load_policy

            return load_policy(self.checkpoint, self.learner(), p.n_devices, p.n_servers)
        learner = get_learner(self.learner())
        return learner.policy(learner.init(key, params))

    def learner(self) -> str:
        """Name of the learner that trains this scheduler's policy (default: same name)."""
        return self.name

    def init(self, key, params):
        return self.load_policy(jax.random.fold_in(key, 0), params)
