"""Unified DRL-GAT-MARL-QIO-DT scheduler (paper section 3.5, Algorithm 2, eq. 23).

One jitted decision step runs the steps of Algorithm 2 on every slot:

1. *Digital twin* (steps 2-3): the observation goes into the twin
   (:mod:`mecjax.learners.twin`), which predicts the current slot's channel
   (only last slot's is observed). Its prediction replaces the stale channel
   in the *view* every later step works on.
2. *GAT* (steps 4-5): the GAT-MEC network embeds the device/server graph of
   the view and its head gives a candidate assignment.
3. *MARL pricing* (step 8): the TSG-MARL leader actors post this slot's
   prices from the servers' view; its follower actors give a candidate.
4. *DRL* (steps 6-7): the GAT's device embeddings are fed to the DRL
   agents with each device's state (eq. 1): a federated DQN trained this way
   (:mod:`mecjax.learners.drl_gat`) picks every device's option for the
   posted prices: a candidate.
5. *Candidates* (step 9): the learned candidates above, plus all-local (the
   safe fallback every scheduler can reach).
6. *QIO* (step 10): quantum-inspired search (population 30, 100 iterations,
   Table 1) seeded with the candidates (individual p starts biased towards
   candidate p mod K) on the fusion objective.
7. *Fusion* (steps 11-12): the decision with the lowest eq. 23 score
   (:mod:`mecjax.optim.fusion`) on the twin's predicted state among the
   candidates and QIO's result. QIO keeps the best seed, so the fused
   decision is never worse, under the twin's prediction, than the best
   candidate.
8. *Deploy* (steps 13-14): executed with the convex optimal bandwidth and
   CPU shares and the MARL prices; the next observation updates the twin.

Ablations (Table 5) are flags, each removing exactly its piece:

* ``use_dt=False``: no twin; every step works on the last observation.
* ``use_gat=False``: no GAT: the DRL agents are DRL-FGSO's, on the raw
  device state, and there is no GAT candidate.
* ``use_marl=False``: fixed prices (the scenario's initial price) and no
  MARL candidate; the DRL agents see the fixed prices.
* ``use_drl=False``: the DRL candidate is replaced by a heuristic, each
  device offloading to its best (predicted) channel (the ``nearest`` rule).
* ``use_qio=False``: no refinement; fusion picks among the candidates.

Each module runs the policy shipped for its own method and N (the
``*_checkpoint`` options; "" = untrained): ``drl_gat_checkpoint`` the DRL
agents on GAT embeddings, ``drl_checkpoint`` DRL-FGSO (used without GAT),
``gat_checkpoint`` GAT-MEC, ``marl_checkpoint`` TSG-MARL and
``twin_checkpoint`` the twin. The checkpoints the flags need are read once,
when the scheduler is built, into its ``modules`` (pytree leaves: the jitted
rollout takes the weights as arguments); each is checked to be of its
method when read and, in ``init``, to fit the scenario's N and M (the twin:
M and its forecast fields).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from mecjax.config import as_params
from mecjax.env.features import device_features
from mecjax.env.types import Observation
from mecjax.learners import drl_gat
from mecjax.learners import gat_mec as _gat
from mecjax.learners import tsg_marl as _marl
from mecjax.learners import twin
from mecjax.nets import qnet
from mecjax.optim import fusion, lookahead, qio
from mecjax.optim.allocation import allocate
from mecjax.schedulers.base import Scheduler, fixed_prices, leaf_field
from mecjax.schedulers.drl_fgso import DRLFGSO
from mecjax.schedulers.dt_mec import DTMEC
from mecjax.schedulers.gat_mec import GATMEC
from mecjax.schedulers.learned import LearnedScheduler
from mecjax.schedulers.tsg_marl import TSGMARL


@struct.dataclass
class UnifiedState:
    drl: Any      # DRLGATPolicy (with GAT), DRLPolicy (without) or None (without DRL)
    gat: Any      # GAT-MEC network parameters or None
    marl: Any     # TSG-MARL actors or None
    twin: Any     # TwinPolicy or None
    carry: Any    # the twin's LSTM carry or None


@struct.dataclass
class Pipeline:
    """Every intermediate of one decision (for tests and diagnostics)."""

    view: Observation            # the state the modules work on (twin's prediction or obs)
    prices: jax.Array            # [M]
    candidates: jax.Array        # [K, N], named by Unified.candidate_names()
    candidate_scores: jax.Array  # [K] eq. 23 on the view
    refined: jax.Array           # [N] QIO's best (the best candidate without QIO)
    refined_score: jax.Array     # []
    fused: jax.Array             # [N] the decision of eq. 23
    fused_score: jax.Array       # []
    carry: Any                   # the twin's next carry


@dataclasses.dataclass(frozen=True)
class _DRLGATModule(LearnedScheduler):
    """The DRL agents on GAT embeddings (learner ``drl_gat``): a module of
    :class:`Unified` that only provides its policy, not a scheduler of its own."""

    name = "drl_gat"


@dataclasses.dataclass(frozen=True)
class Unified(Scheduler):
    name = "unified"
    drl_gat_checkpoint: str = ""
    drl_checkpoint: str = ""
    gat_checkpoint: str = ""
    marl_checkpoint: str = ""
    twin_checkpoint: str = ""
    use_dt: bool = True
    use_gat: bool = True
    use_marl: bool = True
    use_drl: bool = True
    use_qio: bool = True
    population: int = 30     # Table 1
    iterations: int = 100    # Table 1
    weights: tuple = fusion.FUSION_WEIGHTS
    #: the learned modules the flags switch on, by role ("drl", "gat", "marl",
    #: "twin"), each a LearnedScheduler holding the weights read from its
    #: checkpoint when this scheduler was built (see module_specs)
    modules: dict | None = leaf_field()

    def __post_init__(self):
        for name in ("drl_gat_checkpoint", "drl_checkpoint", "gat_checkpoint", "marl_checkpoint",
                     "twin_checkpoint"):
            object.__setattr__(self, name, os.fspath(getattr(self, name)))   # a Path: its str
        object.__setattr__(self, "weights", tuple(float(w) for w in self.weights))
        if len(self.weights) != 4:
            raise ValueError(f"unified: weights must be (w1, w2, w3, w4) of eq. 23, got "
                             f"{self.weights}")
        # Read each needed checkpoint once, here; modules carried over by
        # dataclasses.replace are kept if their role and checkpoint are unchanged.
        old = self.modules or {}
        modules = {}
        for role, (cls, checkpoint) in self.module_specs().items():
            kept = old.get(role)
            ok = type(kept) is cls and kept.checkpoint == checkpoint
            modules[role] = kept if ok else cls(checkpoint=checkpoint)
        object.__setattr__(self, "modules", modules)

    def module_specs(self) -> dict[str, tuple[type, str]]:
        """Role -> (scheduler class whose policy it runs, checkpoint) of every
        learned module the flags switch on."""
        specs = {}
        if self.use_drl:
            specs["drl"] = ((_DRLGATModule, self.drl_gat_checkpoint) if self.use_gat
                            else (DRLFGSO, self.drl_checkpoint))
        if self.use_gat:
            specs["gat"] = (GATMEC, self.gat_checkpoint)
        if self.use_marl:
            specs["marl"] = (TSGMARL, self.marl_checkpoint)
        if self.use_dt:
            specs["twin"] = (DTMEC, self.twin_checkpoint)
        return specs

    def in_memory(self) -> "Unified":
        """This scheduler with its modules' weights kept and every checkpoint path
        cleared (:func:`mecjax.schedulers.learned.in_memory`): schedulers built from
        other seeds' checkpoints then share one compiled program."""
        return dataclasses.replace(
            self, drl_gat_checkpoint="", drl_checkpoint="", gat_checkpoint="",
            marl_checkpoint="", twin_checkpoint="",
            modules={role: m.in_memory() for role, m in self.modules.items()})

    # -- what runs --------------------------------------------------------
    def candidate_names(self) -> tuple[str, ...]:
        """Names of the rows of ``Pipeline.candidates``."""
        names = ["drl" if self.use_drl else "nearest"]
        if self.use_gat:
            names.append("gat")
        if self.use_marl:
            names.append("marl")
        return tuple(names) + ("local",)

    def qio_config(self) -> qio.QIOConfig:
        return qio.QIOConfig(population=self.population, iterations=self.iterations)

    def init(self, key, params):
        """The modules' policies (trained weights, checked against the scenario's
        sizes, or untrained from the key) and the twin's zero carry."""
        p = as_params(params)
        k = jax.random.split(key, 4)

        def policy(role, kk):
            return self.modules[role].policy(kk, params) if role in self.modules else None

        twin_policy = policy("twin", k[3])
        return UnifiedState(
            drl=policy("drl", k[0]),
            gat=policy("gat", k[1]),
            marl=policy("marl", k[2]),
            twin=twin_policy,
            carry=twin.init_carry(twin_policy, p.n_devices) if self.use_dt else None,
        )

    def pipeline(self, key, sched_state: UnifiedState, obs: Observation, params) -> Pipeline:
        """Steps 1-7 of the module docstring for one slot."""
        p = as_params(params)
        # 1. digital twin
        carry = sched_state.carry
        if self.use_dt:
            carry, slots = twin.predict_slots(sched_state.twin, carry, obs, 1, p)
            view = lookahead.predicted_view(obs, slots, 0)
        else:
            view = obs
        # 3. MARL pricing (the leaders move first) and its follower candidate
        if self.use_marl:
            marl_offload, prices = _marl.greedy_actions(sched_state.marl, view, p)
        else:
            prices = fixed_prices(p)
        # 2 + 4. DRL on GAT embeddings (or raw features, or the heuristic), GAT, 5. candidates
        if self.use_drl and self.use_gat:     # GAT embeddings fed to the DRL agents
            first = drl_gat.greedy_offload(sched_state.drl, view, prices, p)
        elif self.use_drl:
            q = qnet.apply_q(sched_state.drl.q, device_features(view, p, prices))
            first = jnp.argmax(q, -1)
        else:
            first = jnp.argmax(view.gain_observed, -1) + 1
        cands = [first.astype(jnp.int32)]
        if self.use_gat:
            cands.append(_gat.greedy_actions(sched_state.gat, view, p))
        if self.use_marl:
            cands.append(marl_offload)
        cands.append(jnp.zeros((p.n_devices,), jnp.int32))
        candidates = jnp.stack(cands)                                       # [K, N]
        score_fn = fusion.population_score_fn(view, prices, p, self.weights)
        scores = score_fn(candidates)
        # 6. QIO refinement seeded by the candidates, on the fusion objective
        if self.use_qio:
            refined, refined_score = qio.search(key, score_fn, p.n_devices, p.n_options,
                                                self.qio_config(), seed_x=candidates)
        else:
            best = jnp.argmin(scores)
            refined, refined_score = candidates[best], scores[best]
        # 7. fusion (eq. 23) over the candidates and the refinement
        pool = jnp.concatenate([candidates, refined[None]])
        pool_scores = jnp.concatenate([scores, refined_score[None]])
        best = jnp.argmin(pool_scores)
        return Pipeline(view=view, prices=prices, candidates=candidates, candidate_scores=scores,
                        refined=refined, refined_score=refined_score, fused=pool[best],
                        fused_score=pool_scores[best], carry=carry)

    def act(self, key, sched_state, obs, params):
        pl = self.pipeline(key, sched_state, obs, params)
        decision = allocate(pl.view, pl.fused, pl.prices, params)
        return decision, sched_state.replace(carry=pl.carry)


__all__ = ["Pipeline", "Unified", "UnifiedState"]
