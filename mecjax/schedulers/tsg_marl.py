"""TSG-MARL (paper section 3.2, eqs. 15-17): the Stackelberg leader-follower
game learned by MADDPG, executed decentrally.

Each server (leader) posts the price of the shared leader actor applied to its
own ``server_view`` row; each device (follower) takes the argmax of the shared
follower actor's logits on its own ``device_view`` row (eq. 2); bandwidth and
CPU shares are the convex optimum of :func:`mecjax.optim.allocation.allocate`.
Training (centralised critics, replay, target networks, smoothing
regulariser) is :mod:`mecjax.learners.tsg_marl`::

    from mecjax.learners.base import get_learner
    from mecjax.train import train
    train(get_learner("tsg_marl"), scenario, "runs/tsg_marl_n50", total_updates=6000, chunk=500)
    sched = make("tsg_marl", checkpoint="runs/tsg_marl_n50")

With ``checkpoint=""`` the untrained (randomly initialised) actors run.
"""

from __future__ import annotations

import dataclasses

from mecjax.learners import tsg_marl as _learner  # noqa: F401  (registers the learner)
from mecjax.schedulers.base import register
from mecjax.schedulers.learned import LearnedScheduler


@register
@dataclasses.dataclass(frozen=True)
class TSGMARL(LearnedScheduler):
    """Decentralised execution of a TSG-MARL policy (see module docstring)."""

    name = "tsg_marl"

    def load_policy(self, key, params):
        """The checkpoint's actors, or the untrained ones of
        :meth:`TSGMARLLearner.init_policy` (same as the learner's
        ``policy(init(key))``, but without building a training state)."""
        if self.checkpoint:
            return super().load_policy(key, params)
        return _learner.TSGMARLLearner().init_policy(key, params)

    def act(self, key, sched_state, obs, params):
        return _learner.policy_decision(sched_state, obs, params), sched_state
