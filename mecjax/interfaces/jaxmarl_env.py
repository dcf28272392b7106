"""The MEC environment as a JaxMARL ``MultiAgentEnv``: device and server agents.

``make_jaxmarl(task)`` returns the environment, as ``jaxmarl.make`` does (JaxMARL
has no separate params object: a scenario is fixed when the environment is built).

Agents, in this order (``env.agents``):

* ``device_0 .. device_{N-1}`` (class ``"device"``): action ``Discrete(M + 1)``
  (0: compute locally, j: offload to server j); observation the device's row of
  :func:`mecjax.env.device_features` (``5 + 3M`` columns); reward minus its own
  weighted cost of the slot (``info["cost"]`` of :func:`mecjax.env.step`).
* ``server_0 .. server_{M-1}`` (class ``"server"``): action its price per Gcycle,
  a ``Box(price_min, price_max, (1,))`` by default or, with ``price_levels=K``,
  ``Discrete(K)`` over :func:`mecjax.optim.pricing.price_levels` (for learners
  with categorical heads only); observation the server's row of
  :func:`mecjax.env.server_features`; reward its leader utility (eq. 15: revenue
  minus weighted server energy and mean delay of its tasks).

``obs["world_state"]`` is the flat concatenation of every agent's observation
(devices first), the centralised critic's input as in JaxMARL's SMAX
(``env.state_size`` wide; :meth:`MECMultiAgentEnv.get_world_state`).

The episode ends after ``horizon`` slots. That is a time limit, not a terminal
state: JaxMARL reports every episode end in ``dones`` (and ``step`` auto-resets
on ``dones["__all__"]``), so ``dones`` is True there; ``infos["truncated"]`` says
it was the time limit and ``infos["terminated"]`` is always False (the MEC
process has no terminal state). A learner that bootstraps must use the value of
the last observation, which auto-reset replaces: build the environment with
``final_observation=True`` to get it as ``infos["final_observation"]``.
Every other info is an array of shape ``[num_agents]``, the layout JaxMARL's
baselines reshape infos into.
"""

from __future__ import annotations

import contextlib
import io
import sys
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mecjax.config import Scenario, as_params
from mecjax.env import env as mec_env
from mecjax.env import physics
from mecjax.env.features import (FEATURE_CLIP, SERVER_FEATURES, device_feature_dim,
                                 device_features, server_features)
from mecjax.env.types import Decision, EnvState, Observation
from mecjax.interfaces import require, scenario_of
from mecjax.optim.pricing import price_levels as pricing_levels


@contextlib.contextmanager
def _quiet_import():
    """Import jaxmarl without its side effects on the standard streams: it prints
    two lines on stdout when first imported (about optional submodules), and its
    mabrax module resets ``sys.stdout``/``sys.stderr`` to ``sys.__stdout__``/
    ``sys.__stderr__``, which would undo any redirection the importing program
    made (pytest's capture, say). All four are restored afterwards."""
    saved = sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__
    sink = io.StringIO()
    sys.stdout = sys.__stdout__ = sink
    try:
        yield
    finally:
        sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__ = saved


with _quiet_import():
    _base = require("jaxmarl.environments.multi_agent_env")
    _spaces = require("jaxmarl.environments.spaces")

MultiAgentEnv = _base.MultiAgentEnv


@struct.dataclass
class MECState(_base.State):
    """JaxMARL's state (``done``, ``step``) plus the MEC instance ``env``."""

    env: EnvState


def device_observation_bounds(scenario: Scenario) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) [5 + 3M] of a device observation, column by column as in
    :func:`mecjax.env.device_features`: the own five and the price columns are
    ratios to their maxima, in [0, 1]; the channels in scaled dB are clipped to
    +-FEATURE_CLIP; a backlog (in slots of server work) has no upper bound."""
    m = scenario.n_servers
    low = np.concatenate([np.zeros(5), np.full(m, -FEATURE_CLIP), np.zeros(2 * m)])
    high = np.concatenate([np.ones(5), np.full(m, FEATURE_CLIP), np.ones(m), np.full(m, np.inf)])
    return low.astype(np.float32), high.astype(np.float32)


def server_observation_bounds() -> tuple[np.ndarray, np.ndarray]:
    """(low, high) [4] of a server observation (:func:`mecjax.env.server_features`):
    backlog and offered load in slots of its work (unbounded), price ratio in
    [0, 1], mean channel in scaled dB within +-FEATURE_CLIP."""
    low = np.array([0.0, 0.0, -FEATURE_CLIP, 0.0], np.float32)
    high = np.array([np.inf, 1.0, FEATURE_CLIP, np.inf], np.float32)
    return low, high


def local_available(view: EnvState | Observation, params) -> jax.Array:
    """[N] bool: the devices whose battery can pay for computing their task locally
    (the others are forced to offload, see :func:`mecjax.env.env.forced_offload`)."""
    p = as_params(params)
    return view.battery >= physics.local_energy(view.task_cycles, view.cpu_freq, p.kappa)


class MECMultiAgentEnv(MultiAgentEnv):
    """A JaxMARL environment of one MEC scenario (see the module docstring).

    ``scenario``: the :class:`mecjax.Scenario` (static: sizes and constants are
    compiled in). ``price_levels``: None for continuous server prices (``Box``),
    or K >= 2 for ``Discrete(K)`` prices on an even grid over (price_min,
    price_max]. ``final_observation``: add ``infos["final_observation"]`` (the
    observations before auto-reset, a dict like ``obs``).
    """

    def __init__(self, scenario: Scenario, price_levels: int | None = None,
                 final_observation: bool = False):
        if not isinstance(scenario, Scenario):
            raise TypeError(f"scenario must be a mecjax.Scenario, got {type(scenario).__name__}")
        if price_levels is not None and (not isinstance(price_levels, int)
                                         or isinstance(price_levels, bool) or price_levels < 2):
            raise ValueError(f"price_levels={price_levels!r} must be None (continuous prices) "
                             f"or an int >= 2")
        n, m = scenario.n_devices, scenario.n_servers
        super().__init__(num_agents=n + m)
        self.scenario = scenario
        self.price_levels = price_levels
        self.final_observation = final_observation
        self.devices = [f"device_{i}" for i in range(n)]
        self.servers = [f"server_{j}" for j in range(m)]
        self.agents = self.devices + self.servers
        self.obs_dim = {"device": device_feature_dim(m), "server": SERVER_FEATURES}
        self.state_size = n * self.obs_dim["device"] + m * self.obs_dim["server"]

        d_low, d_high = device_observation_bounds(scenario)
        s_low, s_high = server_observation_bounds()
        device_obs = _spaces.Box(d_low, d_high, (self.obs_dim["device"],), jnp.float32)
        server_obs = _spaces.Box(s_low, s_high, (SERVER_FEATURES,), jnp.float32)
        if price_levels is None:
            price_space = _spaces.Box(np.float32(scenario.price_min),
                                      np.float32(scenario.price_max), (1,), jnp.float32)
        else:
            price_space = _spaces.Discrete(price_levels)
        self.observation_spaces = {**{a: device_obs for a in self.devices},
                                   **{a: server_obs for a in self.servers}}
        self.action_spaces = {**{a: _spaces.Discrete(m + 1) for a in self.devices},
                              **{a: price_space for a in self.servers}}

    @property
    def name(self) -> str:
        return "MEC"

    @property
    def agent_classes(self) -> dict:
        return {"device": list(self.devices), "server": list(self.servers)}

    # -- observations --------------------------------------------------------

    def get_world_state(self, state: MECState) -> jax.Array:
        """[state_size] float32: all device observations then all server
        observations, flattened (the input of a centralised critic)."""
        s = state.env
        return jnp.concatenate([device_features(s, self.scenario).reshape(-1),
                                server_features(s, self.scenario).reshape(-1)])

    def get_obs(self, state: MECState) -> dict[str, jax.Array]:
        """``{agent: its observation}`` plus ``"world_state"``."""
        dev = device_features(state.env, self.scenario)
        srv = server_features(state.env, self.scenario)
        obs = {a: dev[i] for i, a in enumerate(self.devices)}
        obs.update({a: srv[j] for j, a in enumerate(self.servers)})
        obs["world_state"] = jax.lax.stop_gradient(self.get_world_state(state))
        return obs

    @partial(jax.jit, static_argnums=(0,))
    def get_avail_actions(self, state: MECState) -> dict[str, jax.Array]:
        """Boolean masks: every server price is available; every device may
        offload anywhere, and compute locally only when its battery can pay for
        it (otherwise the environment forces it to offload to its best observed
        server, see :func:`mecjax.env.evaluate`)."""
        can_local = local_available(state.env, self.scenario)
        m = self.scenario.n_servers
        avail = {a: jnp.ones((m + 1,), bool).at[0].set(can_local[i])
                 for i, a in enumerate(self.devices)}
        n_price = (1,) if self.price_levels is None else (self.price_levels,)
        avail.update({a: jnp.ones(n_price, bool) for a in self.servers})
        return avail

    # -- reset / step --------------------------------------------------------

    @partial(jax.jit, static_argnums=(0,))
    def reset(self, key: jax.Array):
        _, s = mec_env.reset(key, self.scenario)
        state = MECState(done=jnp.zeros((), bool), step=s.t, env=s)
        return self.get_obs(state), state

    def prices_of(self, actions: dict) -> jax.Array:
        """[M] float32 prices from the server agents' actions."""
        a = jnp.stack([jnp.reshape(jnp.asarray(actions[s]), ()) for s in self.servers])
        if self.price_levels is None:
            return a.astype(jnp.float32)
        return pricing_levels(self.scenario, self.price_levels)[a.astype(jnp.int32)]

    def decision_of(self, actions: dict) -> Decision:
        """The :class:`mecjax.env.Decision` of a dict of every agent's action."""
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise KeyError(f"actions are missing for agents {missing[:8]}")
        offload = jnp.stack([jnp.reshape(jnp.asarray(actions[d]), ()) for d in self.devices])
        return Decision(offload=offload.astype(jnp.int32), prices=self.prices_of(actions))

    def step_env(self, key: jax.Array, state: MECState, actions: dict):
        """One slot without auto-reset: ``(obs, state, rewards, dones, infos)``.

        Out-of-range actions are clipped into their spaces inside ``jit`` and
        raise ValueError when called eagerly (as :func:`mecjax.env.step`)."""
        decision = self.decision_of(actions)
        _, s, _, done, info = mec_env.step(key, state.env, decision, self.scenario)
        next_state = MECState(done=done, step=s.t, env=s)
        obs = self.get_obs(next_state)
        rewards = {a: -info["cost"][i] for i, a in enumerate(self.devices)}
        rewards.update({a: info["leader_utility"][j] for j, a in enumerate(self.servers)})
        dones = {a: done for a in self.agents}
        dones["__all__"] = done
        k = self.num_agents
        infos = {
            "terminated": jnp.zeros((k,), bool),
            "truncated": jnp.full((k,), done),
            "mean_cost": jnp.full((k,), info["mean_cost"]),
            "revenue": jnp.full((k,), info["revenue"]),
        }
        if self.final_observation:
            infos["final_observation"] = obs
        return obs, next_state, rewards, dones, infos


def make_jaxmarl(task=None, *, price_levels: int | None = None,
                 final_observation: bool = False) -> MECMultiAgentEnv:
    """The JaxMARL environment of ``task`` (a task name or a :class:`mecjax.Scenario`;
    see :func:`mecjax.interfaces.scenario_of`). Options as :class:`MECMultiAgentEnv`."""
    return MECMultiAgentEnv(scenario_of(task), price_levels=price_levels,
                            final_observation=final_observation)


__all__ = ["MECMultiAgentEnv", "MECState", "device_observation_bounds", "local_available",
           "make_jaxmarl",
           "server_observation_bounds"]
