"""QIO-MEC (paper section 3.3): quantum-inspired search of the offloading
vector each slot, followed by convex allocation of bandwidth and CPU."""

from __future__ import annotations

import dataclasses
import math

from mecjax.config import as_params
from mecjax.optim import objective, qio
from mecjax.schedulers.base import Scheduler, fixed_prices


@dataclasses.dataclass(frozen=True)
class QIOMEC(Scheduler):
    """Population 30, 100 iterations (Table 1); prices fixed at the scenario's
    initial price (the paper's QIO section optimises offloading only)."""

    name = "qio_mec"
    population: int = 30
    iterations: int = 100
    delta_theta: float = 0.02 * math.pi

    def config(self) -> qio.QIOConfig:
        return qio.QIOConfig(population=self.population, iterations=self.iterations,
                             delta_theta=self.delta_theta)

    def act(self, key, sched_state, obs, params):
        p = as_params(params)
        prices = fixed_prices(p)
        x, _ = qio.search(key, lambda X: objective.batch_mean_cost(obs, X, prices, p),
                          p.n_devices, p.n_options, self.config())
        return objective.make_decision(obs, x, prices, p), sched_state
