"""DT-MEC (paper section 3.4, eqs. 21-22): digital-twin predictive optimisation.

The closed loop of the paper, u^t = pi(s_hat^t), s^{t+1} = E(s^t, u^t):

1. the observation of slot t is fed to the twin (:mod:`mecjax.learners.twin`):
   its state estimator recomputes path gains from the observed positions and
   its LSTM, whose carry has absorbed every earlier observation, predicts the
   current slot's channel h^t (only h^{t-1} is observed: CSI delay) and the
   tasks and channels of the next ``horizon - 1`` slots (eq. 21);
2. the decision is the look-ahead best response on those predicted slots:
   devices revise in turn to the option with the lowest own cost *summed over
   the horizon* (eq. 22, :mod:`mecjax.optim.lookahead`), battery and server
   backlog carried from one predicted slot to the next, starting from the
   look-ahead greedy assignment;
3. it is executed with the convex optimal bandwidth and CPU shares on the
   predicted channel; the environment's next observation goes back to step 1.

Prices are fixed at the scenario's initial price (DT-MEC does not price).
``forecast="persistence"`` replaces the twin by the last-value forecast (the
twin's baseline); with it and ``horizon=1`` DT-MEC is the myopic best
response on the last observation.

``make("dt_mec", checkpoint=run_dir)`` runs a twin trained by
``mecjax train twin``, read when built (any N: the forecaster is per device;
refused at ``init`` for another M or workload/channel process);
``checkpoint=""`` an untrained twin.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from flax import struct

from mecjax.config import as_params
from mecjax.learners import twin
from mecjax.optim import game, lookahead
from mecjax.optim.allocation import allocate
from mecjax.schedulers.base import fixed_prices
from mecjax.schedulers.learned import LearnedScheduler

FORECASTS = ("twin", "persistence")


@struct.dataclass
class DTMECState:
    policy: Any    # twin.TwinPolicy
    carry: Any     # the twin's LSTM carry, leaves [N, H]


def twin_slots(policy, carry, obs, horizon: int, forecast: str, params):
    """``(carry, slots)``: the twin's (or persistence's) predicted slots t .. t+H-1."""
    if forecast == "twin":
        return twin.predict_slots(policy, carry, obs, horizon, params)
    if forecast == "persistence":
        return carry, twin.persistence_slots(obs, horizon)
    raise ValueError(f"forecast must be one of {FORECASTS}, got {forecast!r}")


@dataclasses.dataclass(frozen=True)
class DTMEC(LearnedScheduler):
    name = "dt_mec"
    horizon: int = 3          # H slots of look-ahead (eq. 22)
    max_rounds: int = 5       # best-response rounds per slot
    forecast: str = "twin"

    def __post_init__(self):
        if self.horizon < 1 or self.max_rounds < 1:
            raise ValueError(f"dt_mec: horizon={self.horizon} and max_rounds={self.max_rounds} "
                             f"must be >= 1")
        if self.forecast not in FORECASTS:
            raise ValueError(f"dt_mec: forecast must be one of {FORECASTS}, got {self.forecast!r}")
        super().__post_init__()

    def learner(self) -> str:
        return "twin"

    def check_trained(self, params) -> None:
        """Any N (the forecaster is per device); the same M and forecast-relevant
        fields (:func:`mecjax.learners.twin.check_twin_scenario`)."""
        twin.check_twin_scenario(self.trained.scenario, params, self.checkpoint)

    def untrained_policy(self, key, params):
        return twin.TwinLearner().init_policy(key, params)

    def init(self, key, params):
        p = as_params(params)
        policy = self.policy(jax.random.fold_in(key, 0), params)
        return DTMECState(policy=policy, carry=twin.init_carry(policy, p.n_devices))

    def plan(self, sched_state, obs, params):
        """``(offload [N], view, carry)``: the look-ahead best response on the
        twin's prediction, the predicted current slot and the twin's new carry."""
        p = as_params(params)
        prices = fixed_prices(p)
        carry, slots = twin_slots(sched_state.policy, sched_state.carry, obs, self.horizon,
                                  self.forecast, p)
        view = lookahead.predicted_view(obs, slots, 0)
        costs_fn = lookahead.horizon_costs_fn(obs, slots, prices, p)
        offload, _, _ = game.best_response(view, prices, p, max_rounds=self.max_rounds,
                                           costs_fn=costs_fn)
        return offload, view, carry

    def act(self, key, sched_state, obs, params):
        offload, view, carry = self.plan(sched_state, obs, params)
        decision = allocate(view, offload, fixed_prices(params), params)
        return decision, sched_state.replace(carry=carry)


__all__ = ["DTMEC", "DTMECState", "twin_slots"]
