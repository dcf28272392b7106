"""Scenario: every constant of the MEC model, validated, with the paper's Table 1 defaults.

Two objects describe a scenario:

* :class:`Scenario` is the user-facing, frozen and validated description. It is
  hashable and is registered as a pytree *without leaves*, so it can be passed
  straight into ``jax.jit``-ed functions, where it acts as a static argument.
* :class:`EnvParams` is the same scenario as a ``flax.struct`` pytree whose
  continuous constants are leaves. Sweeps ``vmap`` over it (e.g. over
  bandwidth or cost weights) without recompiling. Sizes stay static.

Every environment function accepts either; :func:`as_params` converts. The
field list is written once, in :class:`Scenario`; :class:`EnvParams` takes its
fields from there (those in :data:`STATIC_FIELDS` as static metadata).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

# Static (shape- or structure-determining) fields: Python values, never traced.
STATIC_FIELDS = ("n_devices", "n_servers", "horizon", "mobility", "knn", "noise_rng",
                 "battery_hard", "device_queue", "wan_delay_s", "server_xy", "device_xy")

# Fields that take one float for every server or a tuple of M floats (one per
# server). A tuple becomes an [M] float32 leaf of EnvParams, a float a scalar one.
PER_SERVER_FIELDS = ("bandwidth_hz", "server_cpu_hz", "wan_delay_s")

# Generators of the simulator's noise (Scenario.noise_rng): "hash" expands the
# key with the counter hash of mecjax.env.rng, "jax" draws every word from the
# key's own generator (threefry, rbg or unsafe_rbg, whatever the key was made with).
NOISE_RNGS = ("hash", "jax")


@dataclasses.dataclass(frozen=True)
class Scenario:
    """Every constant of the MEC model (``docs/model.md``).

    Units are SI unless the name says otherwise. Defaults are the paper's
    Table 1 where it gives a value; the others come from the MEC papers cited
    in ``docs/model.md`` (path loss: 3GPP TR 36.814 as used by Chen et al. 2015
    and Sardellitti et al. 2015; kappa: Mao et al. 2017 survey; fading
    correlation: Jakes' model at pedestrian speed). The extensions (deadlines,
    hard battery, device queues, per-server CPU and bandwidth, remote servers,
    fixed positions; ``docs/model.md``, "Extensions") default to that model.
    Sequences (lists, arrays) are stored as tuples, so a Scenario stays hashable.
    """

    # -- sizes (static) ---------------------------------------------------
    n_devices: int = 50            # N (Table 1: 50, 100, 150)
    n_servers: int = 3             # M (Table 1)
    horizon: int = 100             # T slots per episode
    slot_s: float = 1.0            # tau, slot length
    # -- geometry ---------------------------------------------------------
    area_m: float = 500.0          # side of the square cell cluster
    server_radius_m: float = 150.0  # servers sit evenly on this circle around the centre
    min_distance_m: float = 10.0   # path loss is not defined at d -> 0
    mobility: bool = False         # random-walk mobility of devices
    mobility_step_m: float = 2.0   # max random-walk step per slot (uniform length, uniform angle)
    knn: int = 4                   # device-device edges per device in the graph view
    # -- tasks (Table 1) --------------------------------------------------
    task_bits_min: float = 1e4
    task_bits_max: float = 1e6
    task_cycles_min: float = 1e6
    task_cycles_max: float = 1e8
    # -- workload process (periodic + bursty, forecastable) ----------------
    load_mean: float = 0.5         # mean task intensity in [0, 1]
    load_amplitude: float = 0.2    # amplitude of the periodic (daily-like) load
    load_period_slots: float = 24.0
    burst_rho: float = 0.8         # AR(1) correlation of the bursty component
    burst_std: float = 0.1         # stationary std of the bursty component
    task_noise: float = 0.2        # half-width of the per-task uniform jitter
    # -- radio (Table 1 + 3GPP) -------------------------------------------
    bandwidth_hz: float | tuple = 10e6  # B per server, OFDMA-shared (Table 1); or one per server
    noise_w: float = 1e-13         # sigma^2 (Table 1)
    pathloss_db_at_1km: float = 128.1
    pathloss_slope_db: float = 37.6
    fading_rho: float = 0.9        # Gauss-Markov correlation of Rayleigh fading
    tx_power_min_w: float = 0.1
    tx_power_max_w: float = 0.5
    # -- computing (Table 1) ----------------------------------------------
    server_cpu_hz: float | tuple = 10e9  # F_j (Table 1); or one per server
    device_cpu_min_hz: float = 1e9  # f_i range (Table 1)
    device_cpu_max_hz: float = 2e9
    kappa: float = 1e-27           # device switched capacitance, J / (cycle Hz^2)
    server_kappa: float = 5e-30    # server switched capacitance (efficient silicon)
    # -- battery ----------------------------------------------------------
    battery_capacity_j: float = 10.0
    battery_init_min: float = 0.5  # initial level as a fraction of capacity
    harvest_max_j: float = 0.1     # per-slot harvest ~ U(0, harvest_max_j)
    # -- economics --------------------------------------------------------
    price_min: float = 0.0         # price per Gcycle
    price_max: float = 2.0
    price_init: float = 0.5
    alpha: float = 1.0             # device cost weight on latency (1/s)
    beta: float = 0.5              # ... on energy (1/J)
    gamma: float = 0.2             # ... on payment (1/price unit)
    leader_lambda: float = 1.0     # leader utility weight on server energy (eq. 15)
    leader_mu: float = 1.0         # leader utility weight on mean delay (eq. 15)
    # -- simulation (static) ----------------------------------------------
    noise_rng: str = "hash"        # generator of the noise: one of NOISE_RNGS
    # -- extensions (docs/model.md, "Extensions"; the defaults are the paper's model) --
    deadline_min_s: float = 0.02   # per-task deadline ~ U(min, max): PureEdgeSim's hard
    deadline_max_s: float = 0.5    # real-time (20 ms) to soft real-time (0.5 s) profiles
    battery_hard: bool = False     # static: a device that cannot pay its executed option fails
    failure_cost: float = 1.0      # cost units added to a failed task's cost (battery_hard)
    device_queue: bool = False     # static: local work queues FIFO at the device across slots
    wan_delay_s: float | tuple = 0.0  # static: WAN round trip added per server (> 0: remote)
    server_xy: tuple | None = None   # static: M (x, y) server sites (m); None: the ring
    device_xy: tuple | None = None   # static: N (x, y) device positions (m); None: uniform

    def __post_init__(self) -> None:
        # Accept NumPy scalars (np.float32(0.5), np.int64(50)) as plain Python numbers.
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.generic) and not isinstance(v, np.bool_):
                object.__setattr__(self, f.name, v.item())
            elif isinstance(v, (list, tuple, np.ndarray)):
                # Lists (from JSON or TOML) and arrays become nested tuples: hashable, static.
                object.__setattr__(self, f.name, _as_tuple(v))
        validate_scenario(self)

    @classmethod
    def default(cls) -> "Scenario":
        """Table 1 with N=50, M=3."""
        return cls()

    def replace(self, **changes: Any) -> "Scenario":
        return dataclasses.replace(self, **changes)

    def params(self) -> "EnvParams":
        return EnvParams.from_scenario(self)

    # Decision validation and reporting use these.
    @property
    def n_options(self) -> int:
        """Number of offloading options per device: local plus M servers."""
        return self.n_servers + 1


def _as_tuple(v: Any) -> Any:
    """Nested lists, tuples and arrays as nested tuples of Python scalars."""
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        return tuple(_as_tuple(x) for x in v)
    return v.item() if isinstance(v, np.generic) else v


def per_server(value: Any, n_servers: int) -> tuple:
    """A per-server field's M values as a tuple of floats (a float repeated M times)."""
    if isinstance(value, tuple):
        return tuple(float(x) for x in value)
    return (float(value),) * n_servers


def remote_servers(params: "Scenario | EnvParams") -> tuple:
    """Static tuple of M bools: server j is remote (a cloud behind a WAN: wan_delay_s > 0),
    reached through each device's strongest edge site (docs/model.md)."""
    return tuple(d > 0 for d in per_server(params.wan_delay_s, params.n_servers))


def _check(cond: bool, field: str, value: Any, allowed: str) -> None:
    if not cond:
        text = repr(value)
        if len(text) > 80:  # a long tuple of positions: one line, not a wall of numbers
            text = text[:60] + (f"... ({len(value)} entries)" if hasattr(value, "__len__")
                                else "...")
        raise ValueError(f"Scenario.{field}={text} is invalid: must be {allowed}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_scenario(s: Scenario) -> None:
    """Raise ValueError naming the first invalid field and its allowed range."""
    for name in ("n_devices", "n_servers", "horizon", "knn"):
        _check(_is_int(getattr(s, name)), name, getattr(s, name), "an int")
    _check(s.n_devices >= 1, "n_devices", s.n_devices, ">= 1")
    _check(s.n_servers >= 1, "n_servers", s.n_servers, ">= 1")
    _check(s.horizon >= 1, "horizon", s.horizon, ">= 1")
    _check(s.knn >= 0, "knn", s.knn, ">= 0")
    _check(isinstance(s.mobility, bool), "mobility", s.mobility, "a bool")
    _check(isinstance(s.noise_rng, str) and s.noise_rng in NOISE_RNGS, "noise_rng",
           s.noise_rng, "one of " + ", ".join(repr(g) for g in NOISE_RNGS))
    for name in ("battery_hard", "device_queue"):
        _check(isinstance(getattr(s, name), bool), name, getattr(s, name), "a bool")
    for f in dataclasses.fields(s):
        v = getattr(s, f.name)
        if f.name in PER_SERVER_FIELDS:
            _check_per_server(f.name, v, s.n_servers)
            continue
        if f.name in STATIC_FIELDS:
            continue
        _check(_is_finite_number(v), f.name, v, "a finite number")
    positive = ("slot_s", "area_m", "min_distance_m", "task_bits_min", "task_cycles_min",
                "load_period_slots", "bandwidth_hz", "noise_w", "tx_power_min_w",
                "server_cpu_hz", "device_cpu_min_hz", "kappa", "battery_capacity_j",
                "deadline_min_s")
    for name in positive:
        v = getattr(s, name)
        _check(all(x > 0 for x in v) if isinstance(v, tuple) else v > 0, name, v,
               "> 0" + (" (every server)" if isinstance(v, tuple) else ""))
    wan = per_server(s.wan_delay_s, s.n_servers)
    _check(all(x >= 0 for x in wan), "wan_delay_s", s.wan_delay_s,
           ">= 0" + (" (every server)" if isinstance(s.wan_delay_s, tuple) else ""))
    _check(min(wan) == 0, "wan_delay_s", s.wan_delay_s,
           "0 for at least one server (remote servers are reached through an edge site)")
    _check_positions("server_xy", s.server_xy, s.n_servers, "n_servers", s.area_m)
    _check_positions("device_xy", s.device_xy, s.n_devices, "n_devices", s.area_m)
    non_negative = ("server_radius_m", "mobility_step_m", "load_amplitude", "burst_std",
                    "task_noise", "server_kappa", "harvest_max_j", "price_min",
                    "alpha", "beta", "gamma", "leader_lambda", "leader_mu", "failure_cost")
    for name in non_negative:
        _check(getattr(s, name) >= 0, name, getattr(s, name), ">= 0")
    for lo, hi in (("task_bits_min", "task_bits_max"), ("task_cycles_min", "task_cycles_max"),
                   ("tx_power_min_w", "tx_power_max_w"),
                   ("device_cpu_min_hz", "device_cpu_max_hz"), ("price_min", "price_max"),
                   ("deadline_min_s", "deadline_max_s")):
        _check(getattr(s, lo) <= getattr(s, hi), lo, getattr(s, lo),
               f"<= {hi} ({getattr(s, hi)!r})")
    _check(s.price_min <= s.price_init <= s.price_max, "price_init", s.price_init,
           f"in [price_min, price_max] = [{s.price_min}, {s.price_max}]")
    for name in ("load_mean", "battery_init_min"):
        _check(0 <= getattr(s, name) <= 1, name, getattr(s, name), "in [0, 1]")
    for name in ("burst_rho", "fading_rho"):
        _check(0 <= getattr(s, name) < 1, name, getattr(s, name), "in [0, 1)")
    _check(s.server_radius_m <= s.area_m / 2, "server_radius_m", s.server_radius_m,
           f"<= area_m / 2 = {s.area_m / 2} (servers inside the area)")
    _check(s.alpha + s.beta + s.gamma > 0, "alpha", s.alpha,
           "such that alpha + beta + gamma > 0 (some cost must count)")


def _is_finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_per_server(name: str, v: Any, n_servers: int) -> None:
    """A float, or a tuple of n_servers finite floats."""
    if isinstance(v, tuple):
        _check(len(v) == n_servers, name, v,
               f"a float or a tuple of n_servers = {n_servers} floats (got {len(v)})")
        _check(all(_is_finite_number(x) for x in v), name, v,
               "a tuple of finite numbers (one per server)")
    else:
        _check(_is_finite_number(v), name, v, "a finite number")


def _check_positions(name: str, v: Any, count: int, count_name: str, area_m: float) -> None:
    """None, or a tuple of ``count`` finite (x, y) pairs inside [0, area_m]^2."""
    if v is None:
        return
    _check(isinstance(v, tuple) and len(v) == count, name, v,
           f"None or a tuple of {count_name} = {count} (x, y) pairs")
    for xy in v:
        _check(isinstance(xy, tuple) and len(xy) == 2 and all(_is_finite_number(c) for c in xy),
               name, v, "a tuple of (x, y) pairs of finite numbers (m)")
        _check(all(0 <= c <= area_m for c in xy), name, v,
               f"(x, y) pairs inside the area [0, area_m = {area_m}]^2 (got {xy})")


# A Scenario is hashable and immutable: as a pytree with no leaves it is static
# under jit, so reset(key, Scenario(...)) can be jitted directly.
jax.tree_util.register_pytree_node(
    Scenario,
    lambda s: ((), s),
    lambda s, _: s,
)


def _fields_of_scenario(cls: type) -> type:
    """Give ``cls`` one field per :class:`Scenario` field, in the same order:
    those in :data:`STATIC_FIELDS` static (pytree metadata), the others leaves.
    Applied before ``struct.dataclass``, so a field added to Scenario is a
    field of EnvParams with no second list to keep in step."""
    names = [f.name for f in dataclasses.fields(Scenario)]
    cls.__annotations__ = {name: Any for name in names}
    for name in names:
        setattr(cls, name, struct.field(pytree_node=name not in STATIC_FIELDS))
    return cls


@struct.dataclass
@_fields_of_scenario
class EnvParams:
    """A scenario as a pytree: float32 leaves (vmappable), static sizes.

    Build it with :meth:`Scenario.params` (validated). Its fields are exactly
    :class:`Scenario`'s (see there for meaning and units): the ones in
    :data:`STATIC_FIELDS` are Python values in the treedef, the others
    float32 leaves: scalars, or [M] for a per-server field given as a tuple.
    """

    @classmethod
    def from_scenario(cls, s: Scenario) -> "EnvParams":
        kw = {f.name: getattr(s, f.name) for f in dataclasses.fields(s)}
        static = {k: kw.pop(k) for k in STATIC_FIELDS}
        # float32 leaves: a 64-bit leaf would silently promote the whole model.
        leaves = {k: jnp.asarray(v, jnp.float32) for k, v in kw.items()}
        return cls(**static, **leaves)

    @property
    def n_options(self) -> int:
        return self.n_servers + 1


def as_params(params: Scenario | EnvParams) -> EnvParams:
    """Accept a Scenario or EnvParams; return EnvParams."""
    if isinstance(params, EnvParams):
        return params
    if isinstance(params, Scenario):
        return EnvParams.from_scenario(params)
    raise TypeError(f"params must be a Scenario or EnvParams, got {type(params).__name__}")
