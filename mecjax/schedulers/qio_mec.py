"""QIO-MEC (paper section 3.3): quantum-inspired search of the offloading
vector each slot, followed by convex allocation of bandwidth and CPU.

Three registered variants (:mod:`mecjax.optim.qio` has the encodings):

- ``qio_mec``, the paper method: one qubit per device, |0> local, |1> offload
  (eqs. 18-19), amplitudes 1/sqrt 2 at the start. |1> offloads to the server
  with the device's strongest observed channel: the paper's qubit says only
  "an MEC server", and the strongest channel is the usual association of a
  device to its serving base station (the ``nearest`` reference's rule).
- ``qio_mec_multi``: ceil(log2(M+1)) qubits per device encoding the option,
  so the search also picks the server (this project's earlier reading).
- ``qio_mec_warm`` (an extension, not in the paper): the paper's encoding with
  the population seeded at all-local and at the previous slot's best vector,
  so a slot's search starts from what worked last slot and never returns a
  vector worse than all-local on its objective.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from mecjax.config import as_params
from mecjax.optim import objective, qio
from mecjax.schedulers.base import Scheduler, fixed_prices

WARM_STARTS = ("none", "previous")


def strongest_servers(obs):
    """[N] 1-based index of each device's server with the strongest observed channel."""
    return jnp.argmax(obs.gain_observed, axis=-1).astype(jnp.int32) + 1


@dataclasses.dataclass(frozen=True)
class QIOMEC(Scheduler):
    """Population 30, 100 iterations (Table 1); prices fixed at the scenario's
    initial price (the paper's QIO section optimises offloading only)."""

    name = "qio_mec"
    population: int = 30
    iterations: int = 100
    delta_theta: float = 0.02 * math.pi
    encoding: str = "binary"      # qio.ENCODINGS
    warm_start: str = "none"      # WARM_STARTS

    def __post_init__(self):
        if self.encoding not in qio.ENCODINGS:
            raise ValueError(f"{self.name}: encoding must be one of {qio.ENCODINGS}, got "
                             f"{self.encoding!r}")
        if self.warm_start not in WARM_STARTS:
            raise ValueError(f"{self.name}: warm_start must be one of {WARM_STARTS}, got "
                             f"{self.warm_start!r}")
        if self.population < 1 or self.iterations < 1:
            raise ValueError(f"{self.name}: population={self.population} and iterations="
                             f"{self.iterations} must be >= 1")

    def config(self) -> qio.QIOConfig:
        return qio.QIOConfig(population=self.population, iterations=self.iterations,
                             delta_theta=self.delta_theta, encoding=self.encoding)

    def init(self, key, params):
        """The previous slot's best offloading vector [N] (all-local before the first slot)."""
        return jnp.zeros((as_params(params).n_devices,), jnp.int32)

    def act(self, key, sched_state, obs, params):
        p = as_params(params)
        prices = fixed_prices(p)
        servers = strongest_servers(obs) if self.encoding == "binary" else None
        seeds = (None if self.warm_start == "none" else
                 jnp.stack([jnp.zeros((p.n_devices,), jnp.int32), sched_state]))
        x, _ = qio.search(key, objective.population_cost_fn(obs, prices, p),
                          p.n_devices, p.n_options, self.config(), seed_x=seeds,
                          servers=servers)
        return objective.make_decision(obs, x, prices, p), x


@dataclasses.dataclass(frozen=True)
class QIOMECMulti(QIOMEC):
    """QIO-MEC with ceil(log2(M+1)) qubits per device (chooses the server too)."""

    name = "qio_mec_multi"
    encoding: str = "multi"


@dataclasses.dataclass(frozen=True)
class QIOMECWarm(QIOMEC):
    """The paper's encoding, population seeded at all-local and the previous slot's best."""

    name = "qio_mec_warm"
    warm_start: str = "previous"
