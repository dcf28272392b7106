"""Greedy: devices in turn pick their cheapest option given earlier choices."""

from __future__ import annotations

import dataclasses

from mecjax.env.types import Decision
from mecjax.optim import game
from mecjax.schedulers.base import Scheduler, fixed_prices


@dataclasses.dataclass(frozen=True)
class Greedy(Scheduler):
    name = "greedy"

    def act(self, key, sched_state, obs, params):
        prices = fixed_prices(params)
        return Decision(game.greedy(obs, prices, params), prices), sched_state
