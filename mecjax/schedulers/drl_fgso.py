"""DRL-FGSO scheduler (paper section 3, eqs. 1-9): executes a policy trained by
:mod:`mecjax.learners.drl_fgso`.

Every device acts greedily (argmax of Q, no exploration) with the global,
federated-averaged Q-network (eqs. 2, 5, 7) on its state s_i (eq. 1,
:func:`~mecjax.env.features.device_features`), which includes the prices
the servers post for this slot. Bandwidth and CPU shares are the convex
optimum for the chosen assignment (:func:`mecjax.optim.allocation.allocate`).

The servers (leaders, eqs. 8-9 / 15) keep adapting their prices online: the
scheduler state carries each server's :class:`~mecjax.learners.drl_fgso.LeaderState`
and ``observe`` applies the same perturb-and-observe utility ascent as in
training (:func:`~mecjax.learners.drl_fgso.leader_update`, with the trained
run's ``price_step``), starting from ``price_init`` on a fresh instance.

``make("drl_fgso", checkpoint=run_dir)`` reads a trained run when built
(refusing one trained for another method, and at ``init`` one for another
N, M, with :class:`mecjax.checkpoint.CheckpointMismatchError`);
``make("drl_fgso")`` runs the untrained, randomly initialised policy.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from mecjax.env.features import device_features
from mecjax.learners import drl_fgso as _learner
from mecjax.nets import qnet
from mecjax.optim.allocation import allocate
from mecjax.schedulers.learned import LearnedScheduler


@struct.dataclass
class DRLFGSOState:
    policy: _learner.DRLPolicy       # global Q-network and price step
    leader: _learner.LeaderState     # [M] current prices and their ascent state


@dataclasses.dataclass(frozen=True)
class DRLFGSO(LearnedScheduler):
    name = "drl_fgso"

    def init(self, key, params):
        return DRLFGSOState(policy=self.policy(jax.random.fold_in(key, 0), params),
                            leader=_learner.leader_init(params))

    def act(self, key, sched_state, obs, params):
        prices = sched_state.leader.prices                                     # [M]
        states = device_features(obs, params, prices)                          # [N, F]
        q = qnet.apply_q(sched_state.policy.q, states)                         # [N, M+1]
        offload = jnp.argmax(q, axis=-1).astype(jnp.int32)                      # [N]
        return allocate(obs, offload, prices, params), sched_state

    def observe(self, sched_state, transition, params):
        leader = _learner.leader_update(sched_state.leader, transition.info["leader_utility"],
                                        sched_state.policy.price_step, params)
        return sched_state.replace(leader=leader)


__all__ = ["DRLFGSO", "DRLFGSOState"]
