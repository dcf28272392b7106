"""The MEC environment as a gymnax ``Environment``: one device per step.

A slot's joint action (one of M + 1 options for each of N devices) is taken as
a sequence of N sub-steps. Sub-step k (0-based) assigns device k: the action
is ``Discrete(M + 1)`` (0 local, j server j), the observation is device k's
row of :func:`mecjax.env.device_features` followed by the load already
assigned in this slot and the sub-step's position (:func:`sequential_obs`).
After the N-th sub-step the assembled :class:`~mecjax.env.Decision` (offloads
plus the fixed prices ``params.prices``) goes through :func:`mecjax.env.step`
and the next slot begins.

Reward of sub-step k (1-based), with C(a_1..a_k) the slot's system cost (the
mean weighted device cost of eq. 3, the cost whose negative is
:func:`mecjax.env.step`'s reward) of the first k choices with the other
devices local, evaluated on the true state of the slot::

    r_k = -(C(a_1..a_k) - C(a_1..a_{k-1})) - C(all local) / N

The differences telescope and the N shares of C(all local) add up to it, so
the N rewards of a slot sum to -C(a_1..a_N): exactly the slot's reward in
:func:`mecjax.env.step`. Each sub-step is charged the change in system cost
its device causes, given the choices before it.

Episodes last ``horizon`` slots (``horizon * N`` sub-steps) and end by
truncation, never termination: ``terminated`` is always False, ``truncated``
is True on the last sub-step of the last slot, and gymnax's auto-reset
replaces the state, keeping the observation that would have followed in
``info["final_observation"]`` (what a learner bootstraps from).

Prices are fixed for the episode at ``params.prices``; the default is the
scenario's initial price ``price_init`` on every server, the prices the
reference schedulers (local, random, nearest, greedy) post.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mecjax.config import EnvParams, Scenario, as_params
from mecjax.env import env as mec
from mecjax.env import physics
from mecjax.env.features import FEATURE_CLIP, device_feature_dim, device_features
from mecjax.env.types import Decision, EnvState, Observation
from mecjax.interfaces import require, scenario_of

require("gymnax")
from gymnax.environments import environment, spaces  # noqa: E402


def cond_any(pred, true_fun, false_fun, *operands):
    """``lax.cond(pred, true_fun, false_fun, *operands)`` that stays a branch under ``vmap``.

    A vmapped ``lax.cond`` with a batched predicate runs both branches for every
    instance and selects. Here the vmapped version runs ``true_fun`` only when
    some instance's ``pred`` is True (then both branches, selected per instance),
    else ``false_fun`` alone: slot boundaries (one sub-step in N) and episode ends
    (one in ``horizon * N``) cost nothing on the other sub-steps. The functions
    must be pure functions of ``operands`` (no traced value closed over); the
    results equal ``lax.cond``'s.
    """
    @jax.custom_batching.custom_vmap
    def cond(pred, *ops):
        return jax.lax.cond(pred, true_fun, false_fun, *ops)

    @cond.def_vmap
    def cond_vmap(axis_size, in_batched, pred, *ops):
        axes = jax.tree.map(lambda b: 0 if b else None, tuple(in_batched[1:]))
        on_true = jax.vmap(true_fun, axes, 0, axis_size=axis_size)
        on_false = jax.vmap(false_fun, axes, 0, axis_size=axis_size)
        if not in_batched[0]:
            out = jax.lax.cond(pred, on_true, on_false, *ops)
        else:
            def pick(a, b):
                return jnp.where(pred.reshape(pred.shape + (1,) * (a.ndim - 1)), a, b)

            def both(*ops):
                return jax.tree.map(pick, on_true(*ops), on_false(*ops))

            out = jax.lax.cond(jnp.any(pred), both, on_false, *ops)
        return out, jax.tree.map(lambda _: True, out)

    return cond(pred, *operands)


@struct.dataclass
class GymnaxParams:
    """Parameters of :class:`MECGymnax`: the scenario as an :class:`EnvParams`
    pytree (its continuous constants are leaves: ``vmap`` over them) and the
    [M] prices every slot is executed with."""

    env: EnvParams
    prices: jax.Array

    @property
    def max_steps_in_episode(self) -> int:
        """``horizon * N`` sub-steps (gymnax's name for the episode length)."""
        return self.env.horizon * self.env.n_devices


@struct.dataclass
class GymnaxState(environment.EnvState):
    """The state between two sub-steps.

    ``time`` counts sub-steps since reset (gymnax's field); ``mec`` is the MEC
    instance at the start of the current slot; ``offload`` [N] holds the
    actions chosen so far in this slot (0 for devices not yet assigned);
    ``device`` is the device the next sub-step assigns; ``base_cost`` is
    C(all local) and ``partial_cost`` C(a_1..a_device) of this slot.
    """

    mec: EnvState
    offload: jax.Array
    device: jax.Array
    base_cost: jax.Array
    partial_cost: jax.Array


def obs_dim(n_servers: int) -> int:
    """Width of an observation: the device features (5 + 3M), the per-server count
    and work assigned so far (2M) and the sub-step position (1)."""
    return device_feature_dim(n_servers) + 2 * n_servers + 1


def sequential_obs(view: Observation | EnvState, offload, device, prices,
                   params: Scenario | EnvParams) -> jax.Array:
    """[6 + 5M] float32: the observation of the sub-step that assigns ``device``.

    Columns: device ``device``'s row of :func:`mecjax.env.device_features`
    (responding to ``prices``, this slot's prices); for each server, the share
    of the N devices already assigned to it in this slot and their work in
    slots of its capacity (``offload`` [N] is read for devices before
    ``device`` only); and ``device / N``. ``view`` is an :class:`Observation`
    or an :class:`EnvState` (only observed fields are read), so a scheduler
    that sees observations builds the same inputs.
    """
    p = as_params(params)
    n = p.n_devices
    own = device_features(view, p, prices)[device]
    before = jnp.arange(n) < device
    assigned = jnp.where(before, offload, 0)
    count = physics.per_server_sum(assigned, jnp.ones((n,), jnp.float32), p.n_servers) / n
    work = (physics.per_server_sum(assigned, view.task_cycles, p.n_servers)
            / (p.server_cpu_hz * p.slot_s))
    pos = jnp.asarray(device, jnp.float32)[None] / n
    return jnp.concatenate([own, count, work, pos]).astype(jnp.float32)


def slot_prices(params: GymnaxParams) -> jax.Array:
    """[M] the prices a slot is executed with: ``params.prices`` repaired as
    :func:`mecjax.env.sanitize_decision` repairs them (NaN to ``price_min``, clipped
    to the scenario's range), so rewards and observations use the prices
    :func:`mecjax.env.step` executes."""
    p = params.env
    prices = jnp.nan_to_num(params.prices, nan=p.price_min)
    return jnp.clip(prices, p.price_min, p.price_max).astype(jnp.float32)


def slot_cost(state: EnvState, offload, prices, params: EnvParams) -> jax.Array:
    """[] the system cost of a slot: mean weighted device cost of ``offload`` [N]
    at ``prices`` on the true state (minus :func:`mecjax.env.step`'s reward)."""
    return jnp.mean(mec.evaluate_unchecked(state, Decision(offload, prices), params).cost)


class MECGymnax(environment.Environment):
    """gymnax ``Environment`` of a :class:`~mecjax.Scenario`: one sub-step per
    device (see the module docstring for observation, reward and truncation)."""

    def __init__(self, scenario: Scenario, name: str = "mecjax"):
        super().__init__()
        self.scenario = scenario
        self._name = name

    # -- gymnax API ----------------------------------------------------
    @property
    def default_params(self) -> GymnaxParams:
        p = self.scenario.params()
        return GymnaxParams(env=p, prices=jnp.full((p.n_servers,), p.price_init, jnp.float32))

    def reset_env(self, key: jax.Array, params: GymnaxParams):
        _, state = mec.reset(key, params.env)
        return self._start_slot(state, jnp.zeros((), jnp.int32), params)

    @partial(jax.jit, static_argnames=("self",))
    def step(self, key: jax.Array, state: GymnaxState, action, params: GymnaxParams | None = None):
        """gymnax's ``Environment.step``: ``(obs, state, reward, terminated, truncated,
        info)`` with auto-reset and ``info["terminated"]``, ``["truncated"]`` and
        ``["final_observation"]``; the same outputs, but the fresh instance is
        built only when some (vmapped) instance's episode ends (:func:`cond_any`),
        not on every sub-step."""
        if params is None:
            params = self.default_params
        key_step, key_reset = jax.random.split(key)
        obs_st, state_st, reward, terminated, info = self.step_env(key_step, state, action, params)
        truncated = self.is_truncated(state_st, params)
        done = jnp.logical_or(terminated, truncated)
        obs, state = cond_any(done, lambda k, o, s, p: self.reset_env(k, p),
                              lambda k, o, s, p: (o, s), key_reset, obs_st, state_st, params)
        info = {**info, "terminated": terminated, "truncated": truncated,
                "final_observation": obs_st}
        return obs, state, reward, terminated, truncated, info

    def step_env(self, key: jax.Array, state: GymnaxState, action, params: GymnaxParams):
        p = params.env
        n = p.n_devices
        # Out-of-range actions are clipped, as mecjax.env.step repairs them under jit.
        action = jnp.clip(jnp.asarray(action, jnp.int32), 0, p.n_servers)
        offload = state.offload.at[state.device].set(action)
        cost = slot_cost(state.mec, offload, slot_prices(params), p)
        reward = state.partial_cost - cost - state.base_cost / n
        nxt = state.replace(time=state.time + 1, offload=offload, device=state.device + 1,
                            partial_cost=cost)
        last = state.device == n - 1
        obs, new_state = cond_any(last, self._next_slot, self._same_slot, key, nxt, params)
        info = {"slot_end": last, "slot_cost": jnp.where(last, cost, 0.0)}
        return obs, new_state, reward, jnp.zeros((), bool), info

    def _next_slot(self, key, state: GymnaxState, params: GymnaxParams):
        """Execute the slot's assembled decision and start the next slot."""
        decision = Decision(state.offload, slot_prices(params))
        _, mec_state, _, _, _ = mec.step(key, state.mec, decision, params.env)
        return self._start_slot(mec_state, state.time, params)

    def _same_slot(self, key, state: GymnaxState, params: GymnaxParams):
        return self.observe(key, state, None, params), state

    def _start_slot(self, mec_state: EnvState, time, params: GymnaxParams):
        p = params.env
        offload = jnp.zeros((p.n_devices,), jnp.int32)
        base = slot_cost(mec_state, offload, slot_prices(params), p)
        state = GymnaxState(time=time, mec=mec_state, offload=offload,
                            device=jnp.zeros((), jnp.int32), base_cost=base, partial_cost=base)
        return self.observe(None, state, None, params), state

    def observe(self, key, state: GymnaxState, action, params: GymnaxParams) -> jax.Array:
        return sequential_obs(state.mec, state.offload, state.device, slot_prices(params), params.env)

    def get_obs(self, state: GymnaxState, params: GymnaxParams | None = None, key=None):
        return self.observe(key, state, None, params or self.default_params)

    def is_truncated(self, state: GymnaxState, params: GymnaxParams) -> jax.Array:
        """True once the episode's ``horizon`` slots have all run."""
        return state.mec.t >= params.env.horizon

    def is_terminated(self, state: GymnaxState, params: GymnaxParams) -> jax.Array:
        """Always False: an MEC episode has no terminal state, only a horizon."""
        return jnp.zeros((), bool)

    @property
    def name(self) -> str:
        return self._name

    @property
    def num_actions(self) -> int:
        return self.scenario.n_servers + 1

    def action_space(self, params: GymnaxParams | None = None) -> spaces.Discrete:
        """``Discrete(M + 1)``: 0 computes locally, j offloads to server j."""
        m = (params or self.default_params).env.n_servers
        return spaces.Discrete(m + 1)

    def observation_space(self, params: GymnaxParams | None = None) -> spaces.Box:
        """``Box`` of shape (6 + 5M,), float32. Lower bounds: 0, except the
        channels (scaled dB, clipped at -FEATURE_CLIP); upper bounds: 1 for the
        device's own state, prices and the assigned counts and position,
        FEATURE_CLIP for the channels, unbounded for backlog and assigned work."""
        low, high = observation_bounds((params or self.default_params).env.n_servers)
        return spaces.Box(low, high, low.shape, jnp.float32)

    def __repr__(self) -> str:
        s = self.scenario
        return f"MECGymnax({self._name!r}, N={s.n_devices}, M={s.n_servers}, horizon={s.horizon})"


def observation_bounds(n_servers: int) -> tuple[np.ndarray, np.ndarray]:
    """([D], [D]) float32 lower and upper bounds of :func:`sequential_obs`'s columns."""
    m = n_servers
    inf = np.inf
    low = np.concatenate([np.zeros(5), np.full(m, -FEATURE_CLIP), np.zeros(2 * m),
                          np.zeros(2 * m + 1)])
    high = np.concatenate([np.ones(5), np.full(m, FEATURE_CLIP), np.ones(m), np.full(m, inf),
                           np.ones(m), np.full(m, inf), np.ones(1)])
    return low.astype(np.float32), high.astype(np.float32)


def make_gymnax(task: Any = None, prices=None) -> tuple[MECGymnax, GymnaxParams]:
    """``(env, params)`` like ``gymnax.make``: the sequential environment of
    ``task`` (a task name or a :class:`~mecjax.Scenario`, see
    :func:`mecjax.interfaces.scenario_of`) and its default parameters.
    ``prices`` [M], if given, replaces the default fixed prices (``price_init``
    on every server)."""
    scenario = scenario_of(task)
    env = MECGymnax(scenario, name=f"mecjax/{task}" if isinstance(task, str) else "mecjax")
    params = env.default_params
    if prices is not None:
        prices = jnp.asarray(prices, jnp.float32)
        if prices.shape != (scenario.n_servers,):
            raise ValueError(f"prices has shape {prices.shape}; the scenario needs "
                             f"({scenario.n_servers},) (one price per server)")
        lo, hi = np.float32(scenario.price_min), np.float32(scenario.price_max)
        if not bool(jnp.all(jnp.isfinite(prices) & (prices >= lo) & (prices <= hi))):
            raise ValueError(f"prices={np.asarray(prices).tolist()} must be finite and in "
                             f"[price_min, price_max] = [{lo}, {hi}]")
        params = params.replace(prices=prices)
    return env, params


__all__ = ["GymnaxParams", "GymnaxState", "MECGymnax", "make_gymnax", "obs_dim",
           "observation_bounds", "sequential_obs", "slot_cost", "slot_prices"]
