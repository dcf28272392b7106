"""The MEC environment as a PettingZoo ``ParallelEnv``: NumPy in and out, on the CPU.

``make_pettingzoo(task)`` wraps the jitted JaxMARL environment of
:mod:`mecjax.interfaces.jaxmarl_env` (same agents, spaces, rewards and
dynamics) for libraries that step one environment from Python (RLlib,
Stable-Baselines3 through SuperSuit, ...):

* ``reset(seed=None, options=None) -> (observations, infos)``: a fresh instance;
  the same seed gives the same instance and, with the same actions, the same
  episode. Without a seed the first reset draws one from the OS.
* ``step(actions) -> (observations, rewards, terminations, truncations, infos)``:
  one slot; every live agent must act. After ``horizon`` slots every agent is
  truncated (never terminated: the MEC process has no terminal state) and
  ``agents`` empties until the next ``reset`` (no auto-reset, as PettingZoo
  expects).
* ``state()``: the world state (every observation, flattened), ``state_space``.
* ``render()``: with ``render_mode="rgb_array"`` an [H, W, 3] uint8 picture of
  the last slot (:func:`mecjax.viewer.render_rgb`).
"""

from __future__ import annotations

import jax
import numpy as np

from mecjax.interfaces import require, scenario_of
from mecjax.interfaces.jaxmarl_env import MECMultiAgentEnv

gymnasium = require("gymnasium")
pettingzoo = require("pettingzoo")


def _to_gymnasium(space):
    """The gymnasium space of a JaxMARL ``Discrete`` or ``Box`` space."""
    if hasattr(space, "n"):
        return gymnasium.spaces.Discrete(int(space.n))
    low = np.broadcast_to(np.asarray(space.low, np.float32), space.shape)
    high = np.broadcast_to(np.asarray(space.high, np.float32), space.shape)
    return gymnasium.spaces.Box(low.copy(), high.copy(), space.shape, np.float32)


class MECParallelEnv(pettingzoo.ParallelEnv):
    """PettingZoo parallel environment of one MEC scenario (see the module docstring).

    ``scenario``: a :class:`mecjax.Scenario`; ``render_mode``: None or
    ``"rgb_array"``; ``price_levels``: as :class:`MECMultiAgentEnv` (None: a
    server's action is a price in a ``Box``; K: one of K price levels).
    """

    metadata = {"name": "mecjax_parallel_v0", "render_modes": ["rgb_array"],
                "is_parallelizable": True, "render_fps": 2}

    def __init__(self, scenario, render_mode: str | None = None,
                 price_levels: int | None = None):
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode={render_mode!r}; supported: None, "
                             + ", ".join(repr(m) for m in self.metadata["render_modes"]))
        self.marl = MECMultiAgentEnv(scenario, price_levels=price_levels)
        self.scenario = scenario
        self.render_mode = render_mode
        self.possible_agents = list(self.marl.agents)
        self.agents: list[str] = []
        # One space object per agent, returned as is: seeding an agent's space
        # must seed the space the caller samples from.
        self.observation_spaces = {a: _to_gymnasium(self.marl.observation_space(a))
                                   for a in self.possible_agents}
        self.action_spaces = {a: _to_gymnasium(self.marl.action_space(a))
                              for a in self.possible_agents}
        self.state_space = gymnasium.spaces.Box(-np.inf, np.inf, (self.marl.state_size,),
                                                np.float32)
        self._reset = self.marl.reset          # jitted by JaxMARL's base class
        self._step = jax.jit(self.marl.step_env)
        self._key = None
        self._state = None
        self._obs = None
        self._last_slot = None     # (env state before the slot, decision, info) for render

    def observation_space(self, agent):
        return self.observation_spaces[agent]

    def action_space(self, agent):
        return self.action_spaces[agent]

    def _observations(self, obs) -> dict:
        host = jax.device_get(obs)
        return {a: np.asarray(host[a], np.float32) for a in self.possible_agents}

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._key = jax.random.key(int(seed))
        elif self._key is None:
            self._key = jax.random.key(int(np.random.SeedSequence().generate_state(1)[0]))
        self._key, key = jax.random.split(self._key)
        obs, self._state = self._reset(key)
        self._obs = obs
        self._last_slot = None
        self.agents = list(self.possible_agents)
        return self._observations(obs), {a: {} for a in self.agents}

    def _action(self, agent, value):
        """The action of ``agent`` as the JAX environment takes it; ValueError
        when it is not in the agent's space."""
        space = self.action_spaces[agent]
        if isinstance(space, gymnasium.spaces.Discrete):
            a = np.asarray(value)
            if a.size != 1 or not np.issubdtype(a.dtype, np.integer) \
                    or not 0 <= int(a.reshape(())) < space.n:
                raise ValueError(f"action of {agent} is {value!r}; it must be an int in "
                                 f"0..{space.n - 1}")
            return np.int32(a.reshape(()))
        a = np.asarray(value, np.float32).reshape(-1)
        if a.shape != space.shape or not np.all(np.isfinite(a)) \
                or np.any(a < space.low) or np.any(a > space.high):
            raise ValueError(f"action of {agent} is {value!r}; it must be {space.shape[0]} "
                             f"finite value(s) in [{space.low[0]}, {space.high[0]}]")
        return a

    def step(self, actions: dict):
        if not self.agents:
            raise RuntimeError("step() called with no live agents: call reset() first")
        missing = [a for a in self.agents if a not in actions]
        if missing:
            raise ValueError(f"actions are missing for live agents {missing[:8]}")
        jax_actions = {a: self._action(a, actions[a]) for a in self.agents}
        self._key, key = jax.random.split(self._key)
        before = self._state
        obs, self._state, rewards, dones, infos = self._step(key, before, jax_actions)
        self._obs = obs
        if self.render_mode is not None:
            self._last_slot = (before, self.marl.decision_of(jax_actions))
        rewards, dones, trunc = jax.device_get((rewards, dones, infos["truncated"]))
        agents = self.agents
        observations = self._observations(obs)
        out_rewards = {a: float(rewards[a]) for a in agents}
        terminations = {a: False for a in agents}
        truncations = {a: bool(trunc[k]) for k, a in enumerate(self.possible_agents)
                       if a in agents}
        out_infos = {a: {} for a in agents}
        if dones["__all__"]:
            self.agents = []
        return observations, out_rewards, terminations, truncations, out_infos

    def state(self) -> np.ndarray:
        if self._obs is None:
            raise RuntimeError("state() called before reset()")
        return np.asarray(jax.device_get(self._obs["world_state"]), np.float32)

    def render(self):
        """With ``render_mode="rgb_array"``: [H, W, 3] uint8, the last slot's state
        and decision (the state alone right after ``reset``); None otherwise."""
        if self.render_mode is None:
            return None
        if self._state is None:
            raise RuntimeError("render() called before reset()")
        from mecjax.viewer import render_rgb

        if self._last_slot is None:
            return render_rgb(self._state.env, None, self.scenario)
        before, decision = self._last_slot
        return render_rgb(before.env, decision, self.scenario)

    def close(self):
        self._state = self._obs = self._last_slot = None


def make_pettingzoo(task=None, render_mode: str | None = None, *,
                    price_levels: int | None = None) -> MECParallelEnv:
    """The PettingZoo ``ParallelEnv`` of ``task`` (a task name or a
    :class:`mecjax.Scenario`); options as :class:`MECParallelEnv`."""
    return MECParallelEnv(scenario_of(task), render_mode=render_mode, price_levels=price_levels)


__all__ = ["MECParallelEnv", "make_pettingzoo"]
