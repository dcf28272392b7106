"""Exact: the exhaustive optimum of the slot on the observed state (small N only)."""

from __future__ import annotations

import dataclasses

from mecjax.config import as_params
from mecjax.optim import exact, objective
from mecjax.schedulers.base import Scheduler, fixed_prices


@dataclasses.dataclass(frozen=True)
class Exact(Scheduler):
    """All (M+1)^N offloading vectors with optimal allocation; refuses N above
    :func:`mecjax.optim.exact.max_devices` with a clear error."""

    name = "exact"
    chunk: int = 4096

    def init(self, key, params):
        p = as_params(params)
        exact.check_size(p.n_devices, p.n_servers)
        return super().init(key, params)

    def act(self, key, sched_state, obs, params):
        prices = fixed_prices(params)
        offload, _ = exact.exact_offload(obs, prices, params, chunk=self.chunk)
        return objective.make_decision(obs, offload, prices, params), sched_state
