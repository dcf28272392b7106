"""Quantum-inspired evolutionary optimisation (QIO) of offloading vectors.

Section 3.3 of the paper, in the style of Han and Kim's quantum-inspired
evolutionary algorithm (IEEE TEC 2002). A qubit is stored as the amplitude of
|1>, beta = sin theta (alpha = cos theta = sqrt(1 - beta^2), theta in (0, pi/2)),
so P(1) = beta^2 (eq. 18), starting at theta = pi/4 (amplitudes 1/sqrt 2). The
rotation gate (eq. 20) is applied as the 2 x 2 rotation matrix it is, so no
generation evaluates a sine: measuring by sin^2 theta from stored angles took
more than half of a search's time at N = 150, and storing both amplitudes doubled
the update's cost (``QIOState.theta`` gives the angles). Two encodings of a
device's action in {0..M} (``QIOConfig.encoding``):

- ``"binary"``, the paper's: one qubit per device, |0> local and |1> offload
  (eqs. 18-19). The server a 1 offloads to is given per device by ``servers``
  [N] (QIO-MEC passes each device's strongest observed channel).
- ``"multi"``: q = ceil(log2(M+1)) qubits per device holding the option's
  binary code; codes >= M+1 are invalid and repaired by wrapping them modulo
  M+1. It can choose among servers, but its uniform start offloads M/(M+1) of
  the tasks (3/4 at M = 3) and more often than not to a poor server.

Each of the P individuals is measured every generation (eq. 19: bit = 1 if
r < |beta|^2). The rotation gate (eq. 20) turns every qubit whose measured bit
differs from its attractor's bit by delta_theta towards that bit (Han-Kim's
lookup table reduces to this once the best is updated first). Angles are kept
within [theta_min, pi/2 - theta_min] (Han-Kim's H-epsilon gate: a rotation past a
bound stops at it), so no probability collapses to 0 or 1 and the search keeps
exploring.

evosax-style and pure: ``init``, ``ask``, ``tell`` over a ``QIOState``; batch
instances with ``vmap``. Measurement draws one uniform per qubit from the
counter-hash stream of :mod:`mecjax.env.rng` (RNG dominated a first version).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from flax import struct

from mecjax.env import rng
from mecjax.optim.population import update_bests


ENCODINGS = ("multi", "binary")


def n_qubits(n_options: int, encoding: str = "multi") -> int:
    """Qubits per device: 1 (binary) or ceil(log2(M+1)) (multi, at least 1)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"QIOConfig.encoding must be one of {ENCODINGS}, got {encoding!r}")
    return 1 if encoding == "binary" else max(1, math.ceil(math.log2(n_options)))


@struct.dataclass
class QIOConfig:
    population: int = struct.field(pytree_node=False, default=30)   # Table 1
    iterations: int = struct.field(pytree_node=False, default=100)  # Table 1
    delta_theta: float = struct.field(pytree_node=False, default=0.02 * math.pi)
    theta_min: float = struct.field(pytree_node=False, default=0.02 * math.pi)
    seed_bias: float = struct.field(pytree_node=False, default=0.8)  # P(seed's bit) when seeded
    # "global": every individual rotates towards the global best (the paper's eq. 20 text).
    # "personal": Han and Kim's original QEA: towards its own best, with the global best
    # migrating into every individual's attractor every ``migration_period`` generations.
    attractor: str = struct.field(pytree_node=False, default="global")
    migration_period: int = struct.field(pytree_node=False, default=10)
    # "multi" (ceil(log2(M+1)) qubits per device) or "binary" (the paper's: one qubit,
    # |1> = offload to the device's server in ``servers``); see the module docstring.
    encoding: str = struct.field(pytree_node=False, default="multi")


@struct.dataclass
class QIOState:
    beta: jax.Array        # [P, N, q] amplitude of |1>, sin theta: P(1) = beta^2
    personal_x: jax.Array  # [P, N] each individual's best (attractor when attractor="personal")
    personal_f: jax.Array  # [P]
    best_x: jax.Array      # [N] best offloading vector found
    best_fitness: jax.Array  # [] its objective (lower is better)
    generation: jax.Array  # [] int

    @property
    def theta(self) -> jax.Array:
        """[P, N, q] the qubits' angles."""
        return jnp.arcsin(self.beta)


def rotate(beta, direction, delta_theta: float, theta_min: float):
    """The rotation gate of eq. 20 on the |1> amplitude: theta += delta_theta * direction
    (``direction`` in {-1, 0, 1}, float), stopped at [theta_min, pi/2 - theta_min]:
    beta' = sin(delta) d alpha + cos(delta) beta, alpha = sqrt(1 - beta^2)."""
    alpha = jnp.sqrt(jnp.maximum(1.0 - beta * beta, 0.0))
    turned = (jnp.float32(math.cos(delta_theta)) * beta
              + direction * jnp.float32(math.sin(delta_theta)) * alpha)
    return jnp.clip(jnp.where(direction == 0, beta, turned), jnp.float32(math.sin(theta_min)),
                    jnp.float32(math.cos(theta_min)))


def _bits(x, q: int, encoding: str = "multi"):
    """[..., q] the qubits' values for actions x: offload or not (binary), or the
    binary digits of the code, least significant first (multi)."""
    if encoding == "binary":
        return (x > 0).astype(jnp.int32)[..., None]
    return (x[..., None] >> jnp.arange(q)) & 1


def decode(bits, n_options: int, encoding: str = "multi", servers=None):
    """[..., N] actions from measured qubits [..., N, q] (eq. 19's classical solution)."""
    if encoding == "binary":
        if servers is None:
            raise ValueError("qio: the binary encoding needs servers [N], the server each "
                             "device's |1> offloads to")
        return jnp.where(bits[..., 0] == 1, jnp.asarray(servers, jnp.int32), 0)
    codes = jnp.sum(bits << jnp.arange(bits.shape[-1]), axis=-1)
    return codes % n_options


def init(n_devices: int, n_options: int, config: QIOConfig = QIOConfig(), seed_x=None,
         seed_fitness=None) -> QIOState:
    """Uniform superposition (theta = pi/4), or biased towards seeds.

    ``seed_x`` is one offloading vector [N] or K of them [K, N] (the unified
    scheduler seeds QIO with its candidate decisions). Individual p is biased
    towards seed p mod K: each qubit gives the seed's bit probability
    ``seed_bias``. The best seed becomes the initial best, with its fitness
    from ``seed_fitness`` ([] or [K]; required with seeds: ``tell`` only sees
    the measured population, never the seeds).
    """
    if seed_x is not None and seed_fitness is None:
        raise ValueError("qio.init: seed_fitness is required with seed_x (the objective of the "
                         "seed); tell never evaluates the seed itself")
    q = n_qubits(n_options, config.encoding)
    shape = (config.population, n_devices, q)
    if seed_x is None:
        beta = jnp.full(shape, math.sqrt(0.5), jnp.float32)
        best = jnp.zeros((n_devices,), jnp.int32)
        best_fitness = jnp.float32(jnp.inf)
        personal_x = jnp.broadcast_to(best, (config.population, n_devices))
        personal_f = jnp.full((config.population,), best_fitness)
    else:
        seeds = jnp.atleast_2d(jnp.asarray(seed_x)).astype(jnp.int32)           # [K, N]
        fits = jnp.atleast_1d(jnp.asarray(seed_fitness, jnp.float32))            # [K]
        if seeds.shape[-1] != n_devices or fits.shape != seeds.shape[:1]:
            raise ValueError(f"qio.init: seed_x {tuple(seeds.shape)} and seed_fitness "
                             f"{tuple(fits.shape)} must be [K, {n_devices}] and [K]")
        owner = jnp.arange(config.population) % seeds.shape[0]                  # [P]
        toward = math.asin(math.sqrt(config.seed_bias))
        bits = _bits(seeds[owner], q, config.encoding)                           # [P, N, q]
        beta = jnp.where(bits == 1, math.sin(toward), math.cos(toward)).astype(jnp.float32)
        k = jnp.argmin(fits)
        best, best_fitness = seeds[k], fits[k]
        personal_x, personal_f = seeds[owner], fits[owner]
    return QIOState(beta=beta, personal_x=personal_x, personal_f=personal_f,
                    best_x=best, best_fitness=best_fitness, generation=jnp.int32(0))


def ask(key, state: QIOState, n_options: int, encoding: str = "multi", servers=None):
    """Measure every individual (eq. 19): [P, N] offloading vectors (:func:`decode`)."""
    u = rng.uniform(rng.seed_words(key), 7, state.beta.shape)
    bits = (u < state.beta ** 2).astype(jnp.int32)
    return decode(bits, n_options, encoding, servers)


def tell(state: QIOState, x, fitness, n_options: int, config: QIOConfig = QIOConfig()) -> QIOState:
    """Update the bests, then rotate every qubit towards its attractor's bits (eq. 20)."""
    personal_x, personal_f, best_x, best_fitness = update_bests(
        state.personal_x, state.personal_f, state.best_x, state.best_fitness, x, fitness)
    q = state.beta.shape[-1]
    if config.attractor == "global":
        target = _bits(best_x, q, config.encoding)[None]  # [1, N, q]
    elif config.attractor == "personal":
        migrate = (state.generation + 1) % config.migration_period == 0
        personal_x = jnp.where(migrate, best_x[None], personal_x)
        personal_f = jnp.where(migrate, best_fitness, personal_f)
        target = _bits(personal_x, q, config.encoding)    # [P, N, q]
    else:
        raise ValueError(f"QIOConfig.attractor must be 'global' or 'personal', got "
                         f"{config.attractor!r}")
    measured = _bits(x, q, config.encoding)               # [P, N, q]
    direction = jnp.where(measured == target, 0.0, jnp.where(target == 1, 1.0, -1.0))
    beta = rotate(state.beta, direction, config.delta_theta, config.theta_min)
    return QIOState(beta=beta, personal_x=personal_x, personal_f=personal_f,
                    best_x=best_x, best_fitness=best_fitness, generation=state.generation + 1)


def search(key, fitness_fn: Callable, n_devices: int, n_options: int,
           config: QIOConfig = QIOConfig(), seed_x=None, servers=None):
    """Run QIO for ``config.iterations`` generations; returns ``(best_x [N], best_fitness)``.

    ``fitness_fn``: [P, N] int -> [P] objective (lower is better). ``seed_x``:
    None, one seed [N] or K seeds [K, N] (see :func:`init`); the result is
    never worse than the best seed. ``servers`` [N]: the binary encoding's
    offload targets; a seed's offloaded devices are moved to them first, so
    that every seed is a vector the encoding can produce.
    """
    if seed_x is None:
        seed_fitness = None
    else:
        seed_x = jnp.asarray(seed_x, jnp.int32)
        if config.encoding == "binary":
            seed_x = decode(_bits(seed_x, 1, "binary"), n_options, "binary", servers)
        seed_fitness = (fitness_fn(seed_x[None])[0] if seed_x.ndim == 1 else fitness_fn(seed_x))
    state = init(n_devices, n_options, config, seed_x, seed_fitness)

    def generation(state, k):
        x = ask(k, state, n_options, config.encoding, servers)
        return tell(state, x, fitness_fn(x), n_options, config), None

    state, _ = jax.lax.scan(generation, state, jax.random.split(key, config.iterations))
    return state.best_x, state.best_fitness
