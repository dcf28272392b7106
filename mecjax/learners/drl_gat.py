"""The unified scheduler's DRL agents: DRL-FGSO on GAT embeddings (Algorithm 2, steps 4-7).

Algorithm 2 feeds the GAT's node embeddings to the DRL agents. This learner
is DRL-FGSO (per-device DQN, FedAvg of eq. 7, perturb-and-observe leader
pricing; :mod:`mecjax.learners.drl_fgso`) whose device state is eq. 1's
:func:`~mecjax.env.features.device_features` concatenated with the device's
embedding from a trained GAT-MEC network's encoder
(:func:`mecjax.learners.gat_mec.device_embeddings`).

The GAT is frozen: it was trained by GAT-MEC's own objective and is read
from ``gat_checkpoint`` (a GAT-MEC run or exported policy for the same N and
M; "" = an untrained GAT, for tests) by :meth:`DRLGAT.init`, on the host,
once. ``{seed}`` in ``gat_checkpoint`` stands for the training seed
(:meth:`DRLGAT.for_seed`): seed k of a multi-seed run (``mecjax train drl_gat
--seeds K``) reads the GAT-MEC policy of seed k, so each seed is one seed's
whole pipeline. From there it is data: a field of the train state
(:class:`DRLGATTrainState`), so the jitted updates take it as an argument,
a resumed run continues with the very GAT it started with, and the exported
policy (:class:`DRLGATPolicy`) carries it, so executing the policy needs
nothing else.

The unified scheduler runs this policy when GAT is on and plain DRL-FGSO
(raw features) when it is ablated (``use_gat=False``).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from mecjax.env.features import device_features
from mecjax.learners import gat_mec
from mecjax.learners.base import register_learner
from mecjax.learners.drl_fgso import DRLFGSO, DRLTrainState
from mecjax.learners.store import load_policy, trained_shapes
from mecjax.nets import qnet
from mecjax.nets.gat import GATMECNet

#: In ``gat_checkpoint``, stands for the training seed (:meth:`DRLGAT.for_seed`).
SEED_PLACEHOLDER = "{seed}"


@struct.dataclass
class DRLGATPolicy:
    q: Any                # the federated (global) Q-network
    price_step: jax.Array
    gat: Any              # the frozen GAT-MEC network parameters


@struct.dataclass
class DRLGATTrainState:
    drl: DRLTrainState    # DRL-FGSO's state: Q-networks, buffers, instances, key, step
    gat: Any              # the frozen GAT-MEC network parameters (never updated)


def untrained_gat(params) -> Any:
    """GAT-MEC's untrained network for the scenario's N and M (the fixed key 0,
    so every untrained ``drl_gat`` shares it)."""
    k_net, _, _ = jax.random.split(jax.random.key(0), 3)     # GATMECLearner.init's network key
    return gat_mec.GATMECLearner().init_policy(k_net, params)


def policy_features(gat_params, obs, prices, params) -> jax.Array:
    """[N, 5 + 3M + E]: eq. 1's device state and the device's GAT embedding."""
    return jnp.concatenate([device_features(obs, params, prices),
                            gat_mec.device_embeddings(gat_params, obs, params)], -1)


def greedy_offload(policy: DRLGATPolicy, obs, prices, params) -> jax.Array:
    """[N] int32: each device's argmax of Q on its state and embedding."""
    q = qnet.apply_q(policy.q, policy_features(policy.gat, obs, prices, params))
    return jnp.argmax(q, -1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class _WithGAT(DRLFGSO):
    """DRL-FGSO whose device state carries the embeddings of ``gat`` (arrays,
    traced inside ``update``). Built for one call inside a trace; holding
    arrays, it is unhashable, so it can never be a static ``jit`` argument."""

    gat: Any = None

    def feature_dim(self, params) -> int:
        return super().feature_dim(params) + GATMECNet.from_params(self.gat).embed

    def features(self, obs, prices, params) -> jax.Array:
        return policy_features(self.gat, obs, prices, params)


@register_learner
@dataclasses.dataclass(frozen=True)
class DRLGAT(DRLFGSO):
    """DRL-FGSO's hyper-parameters plus ``gat_checkpoint``; the train state is
    :class:`DRLGATTrainState`."""

    name = "drl_gat"
    scheduler_name = "unified"
    gat_checkpoint: str = ""

    # -- the frozen GAT ------------------------------------------------------
    def for_seed(self, seed: int) -> "DRLGAT":
        """With ``{seed}`` in ``gat_checkpoint``: this learner on the GAT of
        training seed ``seed`` (the placeholder replaced by the number); else
        this learner. Only :meth:`init` and the shapes read the checkpoint, so
        every seed shares ``update`` and ``policy``."""
        if SEED_PLACEHOLDER in self.gat_checkpoint:
            return dataclasses.replace(
                self, gat_checkpoint=self.gat_checkpoint.replace(SEED_PLACEHOLDER, str(seed)))
        return self

    def _check_resolved(self) -> None:
        if SEED_PLACEHOLDER in self.gat_checkpoint:
            raise ValueError(f"gat_checkpoint={self.gat_checkpoint!r} names a GAT per seed; "
                             f"read it through learner.for_seed(seed)")

    def load_gat(self, params) -> Any:
        """The frozen GAT, read now on the host from ``gat_checkpoint`` (checked:
        a ``gat_mec`` checkpoint for the same N and M, else
        :class:`~mecjax.checkpoint.CheckpointMismatchError`), or
        :func:`untrained_gat`."""
        self._check_resolved()
        if self.gat_checkpoint:
            return load_policy(self.gat_checkpoint, "gat_mec", params.n_devices, params.n_servers)
        return untrained_gat(params)

    def gat_shapes(self, params) -> Any:
        """:meth:`load_gat`'s structure, ``jax.ShapeDtypeStruct`` leaves (reads
        the checkpoint's config only)."""
        self._check_resolved()
        if self.gat_checkpoint:
            trained = trained_shapes(self.gat_checkpoint, "gat_mec")
            trained.check_sizes(params)
            return trained.policy
        return jax.eval_shape(untrained_gat, params)

    def bind(self, gat) -> DRLFGSO:
        """This learner as DRL-FGSO whose device state includes ``gat``'s
        embeddings: its ``features``, ``feature_dim``, ``update`` and ``policy``."""
        hyper = {f.name: getattr(self, f.name) for f in dataclasses.fields(DRLFGSO)}
        return _WithGAT(**hyper, gat=gat)

    # -- pieces --------------------------------------------------------------
    def feature_dim(self, params) -> int:
        """Width 5 + 3M + E of a device state (eq. 1 and the GAT embedding)."""
        return self.bind(self.gat_shapes(params)).feature_dim(params)

    def features(self, obs, prices, params) -> jax.Array:
        raise TypeError("drl_gat's device state needs the frozen GAT: use "
                        "learner.bind(train_state.gat).features(...) or policy_features")

    # -- protocol ------------------------------------------------------------
    def init(self, key, params) -> DRLGATTrainState:
        """Reads the GAT (:meth:`load_gat`, on the host: call outside ``jit``),
        then a fresh DRL-FGSO run on its embeddings (one jitted call)."""
        return _init_with_gat(self, key, params, self.load_gat(params))

    def state_shapes(self, params) -> DRLGATTrainState:
        return jax.eval_shape(lambda gat: _init_with_gat(self, jax.random.key(0), params, gat),
                              self.gat_shapes(params))

    def update(self, state: DRLGATTrainState, params):
        drl, metrics = self.bind(state.gat).update(state.drl, params)
        return state.replace(drl=drl), metrics

    def policy(self, train_state: DRLGATTrainState) -> DRLGATPolicy:
        base = self.bind(train_state.gat).policy(train_state.drl)
        return DRLGATPolicy(q=base.q, price_step=base.price_step, gat=train_state.gat)


@partial(jax.jit, static_argnums=0)
def _init_with_gat(learner: DRLGAT, key, params, gat) -> DRLGATTrainState:
    # DRL-FGSO's own initialisation, its input width including the GAT embedding.
    return DRLGATTrainState(drl=learner.bind(gat)._init(key, params), gat=gat)


__all__ = ["DRLGAT", "DRLGATPolicy", "DRLGATTrainState", "SEED_PLACEHOLDER", "greedy_offload",
           "policy_features", "untrained_gat"]
