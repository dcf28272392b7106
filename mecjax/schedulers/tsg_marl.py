"""TSG-MARL (paper section 3.2, eqs. 15-17): the Stackelberg leader-follower
game learned by MADDPG, executed decentrally.

Each server (leader) posts the price of the shared leader actor applied to its
own ``server_features`` row; each device (follower) takes the argmax of the shared
follower actor's logits on its own ``device_features`` row (eq. 2); bandwidth and
CPU shares are the convex optimum of :func:`mecjax.optim.allocation.allocate`.
Training (centralised critics, replay, target networks, smoothing
regulariser) is :mod:`mecjax.learners.tsg_marl`::

    mecjax train tsg_marl --n-devices 50 --updates 6000 --chunk 500 --run-dir runs/tsg_marl_n50

    sched = make("tsg_marl", checkpoint="runs/tsg_marl_n50")

With ``checkpoint=""`` the untrained (randomly initialised) actors run.
"""

from __future__ import annotations

import dataclasses

from mecjax.learners import tsg_marl as _learner
from mecjax.schedulers.learned import LearnedScheduler


@dataclasses.dataclass(frozen=True)
class TSGMARL(LearnedScheduler):
    """Decentralised execution of a TSG-MARL policy (see module docstring)."""

    name = "tsg_marl"

    def untrained_policy(self, key, params):
        """The untrained actors of :meth:`TSGMARLLearner.init_policy` (same as
        the learner's ``policy(init(key))``, without building a training state)."""
        return _learner.TSGMARLLearner().init_policy(key, params)

    def act(self, key, sched_state, obs, params):
        return _learner.policy_decision(sched_state, obs, params), sched_state
