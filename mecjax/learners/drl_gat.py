"""The unified scheduler's DRL agents: DRL-FGSO on GAT embeddings (Algorithm 2, steps 4-7).

Algorithm 2 feeds the GAT's node embeddings to the DRL agents. This learner
is DRL-FGSO (per-device DQN, FedAvg of eq. 7, perturb-and-observe leader
pricing; :mod:`mecjax.learners.drl_fgso`) whose device state is eq. 1's
``device_features`` concatenated with the device's embedding from a trained
GAT-MEC network's encoder (:func:`mecjax.learners.gat_mec.device_embeddings`).
The GAT is frozen: it was trained by GAT-MEC's own objective and is loaded
from ``gat_checkpoint`` (a GAT-MEC run or exported policy for the same N and
M; "" = an untrained GAT, for tests). The exported policy carries the GAT
parameters, so executing it needs nothing else.

The unified scheduler runs this policy when GAT is on and plain DRL-FGSO
(raw features) when it is ablated (``use_gat=False``).
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from mecjax.config import Scenario, as_params
from mecjax.learners import gat_mec
from mecjax.learners.base import get_learner, register_learner
from mecjax.learners.drl_fgso import DRLFGSO, DRLTrainState, device_features
from mecjax.nets import qnet
from mecjax.nets.gat import GATMECNet


@struct.dataclass
class DRLGATPolicy:
    q: Any                # the federated (global) Q-network
    price_step: jax.Array
    gat: Any              # the frozen GAT-MEC network parameters


@lru_cache(maxsize=8)
def _untrained_gat(n_devices: int, n_servers: int):
    learner = get_learner("gat_mec")
    s = Scenario(n_devices=n_devices, n_servers=n_servers)
    return learner.policy(learner.init(jax.random.key(0), s))


def policy_features(gat_params, obs, prices, params) -> jax.Array:
    """[N, 5 + 3M + E]: eq. 1's device state and the device's GAT embedding."""
    return jnp.concatenate([device_features(obs, prices, params),
                            gat_mec.device_embeddings(gat_params, obs, params)], -1)


def greedy_offload(policy: DRLGATPolicy, obs, prices, params) -> jax.Array:
    """[N] int32: each device's argmax of Q on its state and embedding."""
    q = qnet.apply_q(policy.q, policy_features(policy.gat, obs, prices, params))
    return jnp.argmax(q, -1).astype(jnp.int32)


@register_learner
@dataclasses.dataclass(frozen=True)
class DRLGAT(DRLFGSO):
    """DRL-FGSO's hyper-parameters plus ``gat_checkpoint``."""

    name = "drl_gat"
    scheduler_name = "unified"
    gat_checkpoint: str = ""

    def gat_params(self, n_devices: int, n_servers: int):
        """The frozen GAT (concrete arrays: constants of the compiled training step)."""
        with jax.ensure_compile_time_eval():
            if self.gat_checkpoint:
                from mecjax.train import load_policy

                return load_policy(self.gat_checkpoint, "gat_mec", n_devices, n_servers)
            return _untrained_gat(n_devices, n_servers)

    def _gat_for(self, params):
        p = as_params(params)
        return self.gat_params(p.n_devices, p.n_servers)

    def feature_dim(self, params) -> int:
        p = as_params(params)
        return super().feature_dim(p) + GATMECNet.from_params(self._gat_for(p)).embed

    def features(self, obs, prices, params) -> jax.Array:
        return policy_features(self._gat_for(params), obs, prices, params)

    def policy(self, train_state: DRLTrainState) -> DRLGATPolicy:
        base = super().policy(train_state)
        n, m = train_state.obs.task_bits.shape[-1], train_state.obs.backlog.shape[-1]
        return DRLGATPolicy(q=base.q, price_step=base.price_step, gat=self.gat_params(n, m))


__all__ = ["DRLGAT", "DRLGATPolicy", "greedy_offload", "policy_features"]
