"""The digital twin's state estimator and LSTM forecaster (paper section 3.4, eq. 21).

Eq. 21 has the twin track each device's state and predict the next slots:
the task a device will generate and the channel it will see. In this model:

* Slot t's task (D^t, C^t) is observed; the next ones follow a workload that
  is periodic (period ``load_period_slots``, per-device random phase) plus an
  AR(1) burst plus i.i.d. jitter: forecastable from the device's history and
  the clock.
* The observed channel is the previous slot's, h^{t-1} (CSI delay); the true
  h^t is unknown. Fading is Gauss-Markov (``fading_rho``), so the MMSE
  forecast of h^t shrinks h^{t-1} towards the path gain. The path gain is
  deterministic from the observed positions: the twin's *state estimator*
  computes it with the physics model (:func:`estimated_path_gain`).

The forecaster (:class:`mecjax.nets.forecaster.Forecaster`) is an LSTM run per
device over the observations, with a head that predicts a residual over
persistence (so untrained it *is* the persistence forecast). Targets are
scaled: task bits and cycles to [0, 1] by their ranges, gains in scaled dB
(:func:`mecjax.env.features.scaled_db`, as in the learners' device state).

:func:`predict_slots` is what the DT-MEC and Unified schedulers call each
slot: it feeds the slot's observation into the LSTM (the returned carry is the
closed loop, a function of observations only) and rolls out autoregressively
on a copy for the further slots of the planning horizon.

:class:`TwinLearner` trains it on fresh simulated traces (tasks and channels
are exogenous: the scheduling decisions do not change them, so traces are
simulated with all-local decisions). :func:`forecast_skill` measures it
against persistence on held-out traces.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from mecjax.checkpoint import CheckpointMismatchError
from mecjax.config import as_params
from mecjax.env import dynamics
from mecjax.env import env as _env
from mecjax.env.features import from_scaled_db, scaled_db
from mecjax.env.types import Decision, Observation
from mecjax.learners.base import Learner, register_learner
from mecjax.learners.common import check_hyper
from mecjax.learners.store import load_trained
from mecjax.nets.forecaster import Forecaster, feature_vector

Array = jax.Array

# Scenario fields the forecast depends on: a twin trained on another value of
# any of them forecasts another process (checked by :func:`check_twin_scenario`).
FORECAST_FIELDS = ("load_mean", "load_amplitude", "load_period_slots", "burst_rho", "burst_std",
                   "task_noise", "task_bits_min", "task_bits_max", "task_cycles_min",
                   "task_cycles_max", "fading_rho", "pathloss_db_at_1km", "pathloss_slope_db",
                   "min_distance_m", "area_m", "server_radius_m", "slot_s")


@struct.dataclass
class TwinPolicy:
    """What the schedulers execute: the forecaster's flax parameters (a pytree of arrays)."""

    params: Any


@struct.dataclass
class Slots:
    """The twin's predicted slots t .. t+H-1 (H = the planning horizon).

    Slot 0's task is the observed current task; slots k >= 1 are predicted.
    Slot 0's gain is the predicted current channel h^t (the observed one is h^{t-1}).
    """

    task_bits: Array      # [H, N] bits
    task_cycles: Array    # [H, N] CPU cycles
    gain: Array           # [H, N, M] linear channel gain


# --------------------------------------------------------------------------- state estimation


def estimated_path_gain(obs: Observation, params) -> Array:
    """[N, M] path gain from the observed positions (the physics model of the twin)."""
    p = as_params(params)
    return dynamics.large_scale_gain(obs.positions, obs.server_positions, p)


def _span(lo, hi):
    return jnp.where(hi > lo, hi - lo, 1.0)


def scale_tasks(bits, cycles, params):
    """Task bits and cycles scaled to [0, 1] by their ranges, each [N]."""
    p = as_params(params)
    return ((bits - p.task_bits_min) / _span(p.task_bits_min, p.task_bits_max),
            (cycles - p.task_cycles_min) / _span(p.task_cycles_min, p.task_cycles_max))


def unscale_tasks(bits_s, cycles_s, params):
    """Inverse of :func:`scale_tasks`, clipped to the task ranges."""
    p = as_params(params)
    bits_s, cycles_s = jnp.clip(bits_s, 0.0, 1.0), jnp.clip(cycles_s, 0.0, 1.0)
    return (p.task_bits_min + bits_s * (p.task_bits_max - p.task_bits_min),
            p.task_cycles_min + cycles_s * (p.task_cycles_max - p.task_cycles_min))


def observation_features(obs: Observation, params) -> Array:
    """[N, F = 2M + 4] forecaster input of one observation (see :mod:`mecjax.nets.forecaster`)."""
    p = as_params(params)
    bits_s, cycles_s = scale_tasks(obs.task_bits, obs.task_cycles, p)
    return feature_vector(bits_s, cycles_s, scaled_db(obs.gain_observed),
                          scaled_db(estimated_path_gain(obs, p)), obs.t, p.load_period_slots)


def _net(policy: TwinPolicy) -> Forecaster:
    return Forecaster.from_params(policy.params)


def init_carry(policy: TwinPolicy, n_devices: int):
    """Zero LSTM carry ``(c, h)``, leaves [N, hidden]."""
    return _net(policy).zero_carry((n_devices,))


def _apply(policy: TwinPolicy, carry, x):
    return _net(policy).apply({"params": policy.params}, carry, x)


# --------------------------------------------------------------------------- forecasting


def predict_slots(policy: TwinPolicy, carry, obs: Observation, horizon: int, params):
    """``(carry, Slots)``: feed ``obs`` (slot t) to the twin and forecast slots t .. t+H-1.

    The returned carry has seen the observations up to slot t only (the closed
    loop: pass it back at slot t+1); it does not depend on ``horizon``. From a
    copy, the twin rolls out ``horizon - 1`` further steps autoregressively:
    the input at t+k is built from the tasks predicted for t+k and the gain
    predicted for t+k-1 (standing in for the delayed observation), the path
    gain of slot t and the clock of t+k. ``horizon`` is a static int >= 1.

    Shapes: carry leaves [N, hidden]; Slots fields [H, N] / [H, N, M].
    """
    if not (isinstance(horizon, int) and horizon >= 1):
        raise ValueError(f"horizon={horizon!r} must be a static int >= 1")
    p = as_params(params)
    m = p.n_servers
    path_db = scaled_db(estimated_path_gain(obs, p))
    bits_s, cycles_s = scale_tasks(obs.task_bits, obs.task_cycles, p)
    x = feature_vector(bits_s, cycles_s, scaled_db(obs.gain_observed), path_db, obs.t,
                       p.load_period_slots)
    carry, y = _apply(policy, carry, x)                                  # y [N, 2 + M]

    def step(state, k):
        c, y_prev = state
        xk = feature_vector(jnp.clip(y_prev[:, 0], 0.0, 1.0), jnp.clip(y_prev[:, 1], 0.0, 1.0),
                            y_prev[:, 2:], path_db, obs.t + k, p.load_period_slots)
        c, yk = _apply(policy, c, xk)
        return (c, yk), yk

    if horizon > 1:
        _, ys = jax.lax.scan(step, (carry, y), jnp.arange(1, horizon))
        ys = jnp.concatenate([y[None], ys], 0)                          # [H, N, 2 + M]
    else:
        ys = y[None]
    # step k gives the tasks of slot k+1 and the channel of slot k
    bits, cycles = unscale_tasks(ys[:-1, :, 0], ys[:-1, :, 1], p)
    slots = Slots(task_bits=jnp.concatenate([obs.task_bits[None], bits], 0),
                  task_cycles=jnp.concatenate([obs.task_cycles[None], cycles], 0),
                  gain=from_scaled_db(ys[:, :, 2:2 + m]))
    return carry, slots


def persistence_slots(obs: Observation, horizon: int) -> Slots:
    """The last-value forecast: current task and delayed channel h^{t-1} repeated [H, ...]."""
    rep = lambda a: jnp.broadcast_to(a, (horizon,) + a.shape)  # noqa: E731
    return Slots(task_bits=rep(obs.task_bits), task_cycles=rep(obs.task_cycles),
                 gain=rep(obs.gain_observed))


# --------------------------------------------------------------------------- traces and errors


def simulate_trace(key, params, n_slots: int):
    """``(obs, gain)`` of one fresh instance over ``n_slots`` slots: observations
    stacked [T, ...] and the true channels h^t [T, N, M]. Decisions are
    all-local (tasks and channels do not depend on them)."""
    p = as_params(params)
    k_reset, k_steps = jax.random.split(key)
    _, state = _env.reset(k_reset, p)
    decision = Decision(offload=jnp.zeros((p.n_devices,), jnp.int32),
                        prices=jnp.full((p.n_servers,), p.price_init, jnp.float32))

    def body(s, k):
        _, nxt, _, _, _ = _env.transition(s, decision, _env.step_noise(k, p), p)
        return nxt, (_env.observe(s), s.gain)

    _, (obs, gain) = jax.lax.scan(body, state, jax.random.split(k_steps, n_slots))
    return obs, gain


def _trace_errors(net_params, obs, gain, params):
    """Squared errors of the twin and of persistence on one trace of T slots.

    Returns ``(task_se, task_se_pers, chan_se, chan_se_pers)``: tasks [T-1, N, 2]
    (the forecast made at slot t of slot t+1's scaled bits and cycles, t < T-1)
    and channel [T, N, M] (slot t's scaled-dB gain)."""
    p = as_params(params)
    net = Forecaster.from_params(net_params)
    xs = jax.vmap(observation_features, (0, None))(obs, p)              # [T, N, F]

    def body(c, x):
        return net.apply({"params": net_params}, c, x)

    _, ys = jax.lax.scan(body, net.zero_carry((p.n_devices,)), xs)      # [T, N, 2 + M]
    tasks = xs[..., :2]
    chan = scaled_db(gain)
    task_se = (ys[:-1, :, :2] - tasks[1:]) ** 2
    task_se_pers = (tasks[:-1] - tasks[1:]) ** 2
    chan_se = (ys[..., 2:] - chan) ** 2
    chan_se_pers = (xs[..., 2:2 + p.n_servers] - chan) ** 2
    return task_se, task_se_pers, chan_se, chan_se_pers


# --------------------------------------------------------------------------- evaluation


@partial(jax.jit, static_argnums=(1, 3, 4, 5))
def _skill(net_params, scenario, key, n_instances, n_slots, warmup):
    obs, gain = jax.vmap(simulate_trace, (0, None, None))(
        jax.random.split(key, n_instances), scenario, n_slots + 1)
    t_se, t_sp, c_se, c_sp = jax.vmap(_trace_errors, (None, 0, 0, None))(
        net_params, obs, gain, scenario)
    # tasks: forecasts made at slots warmup .. n_slots-1; channel: slots warmup .. n_slots-1
    sl = lambda a: a[:, warmup:n_slots]  # noqa: E731
    return {"task_mse": jnp.mean(sl(t_se)), "task_mse_persistence": jnp.mean(sl(t_sp)),
            "channel_mse": jnp.mean(sl(c_se)), "channel_mse_persistence": jnp.mean(sl(c_sp))}


def forecast_skill(policy: TwinPolicy, scenario, key, n_instances: int = 32, n_slots: int = 48,
                   warmup: int = 8) -> dict:
    """Held-out forecast error of the twin against persistence (eq. 21's forecast).

    On ``n_instances`` fresh simulated instances of ``scenario`` (a
    :class:`~mecjax.Scenario`), the twin runs from a zero carry over
    ``n_slots`` slots; errors count over slots ``warmup .. n_slots-1``:

    * ``task_mse``: MSE of the forecast of the next slot's task, bits and
      cycles together, both scaled to [0, 1] by their ranges;
      ``task_mse_persistence``: the same for "next task = current task".
    * ``channel_mse``: MSE of the forecast of the current slot's channel h^t
      in *scaled dB* ((10 log10 h + 110) / 30; multiply by 900 for dB^2);
      ``channel_mse_persistence``: the same for "h^t = h^{t-1}".
    * ``task_margin``, ``channel_margin``: 1 - mse / mse_persistence
      (> 0: the twin beats persistence).

    All values are Python floats; ``n_instances`` and ``n_slots`` are echoed.
    """
    if not 0 <= warmup < n_slots:
        raise ValueError(f"warmup={warmup} must be in [0, n_slots={n_slots})")
    out = {k: float(v) for k, v in jax.device_get(
        _skill(policy.params, scenario, key, n_instances, n_slots, warmup)).items()}
    out["task_margin"] = 1.0 - out["task_mse"] / out["task_mse_persistence"]
    out["channel_margin"] = 1.0 - out["channel_mse"] / out["channel_mse_persistence"]
    out["n_instances"], out["n_slots"] = float(n_instances), float(n_slots)
    return out


# --------------------------------------------------------------------------- learner


@struct.dataclass
class TwinTrainState:
    """Everything a twin run needs to continue bit-identically (arrays only)."""

    params: Any            # Forecaster parameters
    opt_state: Any         # optax state of (clip_by_global_norm, adam)
    key: jax.Array         # typed PRNG key (jax.random.key)
    step: jax.Array        # [] int32 updates done


@register_learner
@dataclasses.dataclass(frozen=True)
class TwinLearner(Learner):
    """Trains the twin's forecaster (see the module docstring).

    Hyper-parameters: ``lstm_hidden`` LSTM units; ``n_envs`` fresh instances and
    ``window`` slots per update; Adam ``learning_rate`` with global-norm
    clipping at ``max_grad_norm``. One update = fresh traces of ``window`` slots
    on ``n_envs`` fresh instances, the LSTM from a zero carry over the window,
    one Adam step on the MSE of the scaled targets (next-slot task bits and
    cycles, current-slot channel in scaled dB; the two groups' MSEs summed).
    """

    name = "twin"
    scheduler_name = "dt_mec"
    progress_metric = "loss"

    lstm_hidden: int = 32
    n_envs: int = 8
    window: int = 32
    learning_rate: float = 3e-3
    max_grad_norm: float = 1.0

    def __post_init__(self):
        check_hyper(self, counts=("lstm_hidden", "n_envs", "window"),
                    positive=("learning_rate", "max_grad_norm"))
        if self.window < 2:
            raise ValueError(f"twin: window={self.window} must be >= 2 (a task target needs a "
                             f"next slot)")

    def network(self, params) -> Forecaster:
        return Forecaster(n_servers=as_params(params).n_servers, hidden=self.lstm_hidden)

    def optimizer(self) -> optax.GradientTransformation:
        return optax.chain(optax.clip_by_global_norm(self.max_grad_norm),
                           optax.adam(self.learning_rate))

    def init_policy(self, key, params) -> TwinPolicy:
        """Fresh forecaster parameters (the untrained twin = persistence)."""
        p = as_params(params)
        net = self.network(p)
        x = jnp.zeros((p.n_devices, 2 * p.n_servers + 4), jnp.float32)
        return TwinPolicy(params=net.init(key, net.zero_carry((p.n_devices,)), x)["params"])

    def init(self, key, params) -> TwinTrainState:
        k_net, k_state = jax.random.split(key)
        net_params = self.init_policy(k_net, params).params
        return TwinTrainState(params=net_params, opt_state=self.optimizer().init(net_params),
                              key=k_state, step=jnp.zeros((), jnp.int32))

    def policy(self, train_state: TwinTrainState) -> TwinPolicy:
        return TwinPolicy(params=train_state.params)

    def update(self, ts: TwinTrainState, params):
        p = as_params(params)
        key, k_traces = jax.random.split(ts.key)
        obs, gain = jax.vmap(simulate_trace, (0, None, None))(
            jax.random.split(k_traces, self.n_envs), p, self.window)

        def loss_fn(net_params):
            t_se, t_sp, c_se, c_sp = jax.vmap(_trace_errors, (None, 0, 0, None))(
                net_params, obs, gain, p)
            task, chan = jnp.mean(t_se), jnp.mean(c_se)
            return task + chan, (task, chan, jnp.mean(t_sp), jnp.mean(c_sp))

        (loss, (task, chan, task_p, chan_p)), grads = jax.value_and_grad(
            loss_fn, has_aux=True)(ts.params)
        updates, opt_state = self.optimizer().update(grads, ts.opt_state, ts.params)
        new = TwinTrainState(params=optax.apply_updates(ts.params, updates), opt_state=opt_state,
                             key=key, step=ts.step + 1)
        metrics = {"loss": loss, "task_mse": task, "channel_mse": chan,
                   "loss_persistence": task_p + chan_p, "task_mse_persistence": task_p,
                   "channel_mse_persistence": chan_p}
        return new, metrics


# --------------------------------------------------------------------------- loading


def _concrete_float32(v):
    """``v`` as a float32 NumPy scalar, or None when it is traced (not checkable)."""
    if isinstance(v, jax.core.Tracer):
        return None
    return np.float32(np.asarray(v))


def check_twin_scenario(trained, params, checkpoint: str = "") -> None:
    """Refuse a twin trained for scenario ``trained`` (a Scenario) on the
    scenario ``params`` (Scenario or EnvParams) if it would forecast another
    process.

    Raises :class:`mecjax.checkpoint.CheckpointMismatchError` for another
    ``n_servers`` or another value of a forecast-relevant field
    (:data:`FORECAST_FIELDS`; compared in float32, the environment's
    precision). Traced fields (under ``jit`` with EnvParams, or a ``vmap``
    sweep) cannot be compared and are not checked; a Scenario's always can.
    ``n_devices`` may differ: the forecaster is per device.
    """
    where = f"twin checkpoint {checkpoint}" if checkpoint else "the twin"
    if trained.n_servers != params.n_servers:
        raise CheckpointMismatchError(
            f"{where} was trained for n_servers={trained.n_servers} but the scenario has "
            f"n_servers={params.n_servers}")
    for name in FORECAST_FIELDS:
        have, want = getattr(trained, name), _concrete_float32(getattr(params, name))
        if want is not None and np.float32(have) != want:
            raise CheckpointMismatchError(
                f"{where} was trained for {name}={have!r} but the scenario has "
                f"{name}={float(want)!r}: it would forecast another process")


def load_twin(run_dir, params) -> TwinPolicy:
    """The trained twin of ``run_dir`` (a run or an exported policy directory),
    read now, on the host (not inside a traced function), and checked against
    the scenario ``params`` by :func:`check_twin_scenario`. A non-``twin``
    checkpoint raises :class:`mecjax.checkpoint.CheckpointMismatchError`."""
    trained = load_trained(run_dir, TwinLearner.name)
    check_twin_scenario(trained.scenario, params, str(run_dir))
    return trained.policy


__all__ = ["FORECAST_FIELDS", "Slots", "TwinLearner", "TwinPolicy", "TwinTrainState",
           "check_twin_scenario", "estimated_path_gain", "forecast_skill", "init_carry",
           "load_twin",
           "observation_features", "persistence_slots", "predict_slots", "scale_tasks",
           "simulate_trace", "unscale_tasks"]
