"""Best response: Chen et al. (2015) finite-improvement dynamics to a Nash equilibrium."""

from __future__ import annotations

import dataclasses

from mecjax.env.types import Decision
from mecjax.optim import game
from mecjax.schedulers.base import Scheduler, fixed_prices


@dataclasses.dataclass(frozen=True)
class BestResponse(Scheduler):
    """Starts from the greedy assignment; at most ``max_rounds`` rounds of revisions."""

    name = "best_response"
    max_rounds: int = 20

    def act(self, key, sched_state, obs, params):
        prices = fixed_prices(params)
        offload, _, _ = game.best_response(obs, prices, params, max_rounds=self.max_rounds)
        return Decision(offload, prices), sched_state
