"""The MEC environment as a Gymnasium ``Env`` (numpy in and out, on the CPU), for
Stable-Baselines3, RLlib and other object-oriented learners.

It wraps :class:`mecjax.interfaces.gymnax_env.MECGymnax` (same sequential
decision, observation, reward and truncation: see there) and calls its jitted
``reset`` and ``step``. Gymnasium's rules apply: ``reset(seed=...)`` seeds the
episode (the same seed gives the same instance and noise), ``terminated``
(always False) and ``truncated`` (True on the episode's last sub-step) are
separate, and there is no auto-reset: after ``truncated`` the observation
returned is the one that followed the episode's last step (gymnax's
``final_observation``), ``render()`` still draws the episode's last slot, and
the next episode needs ``reset()``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mecjax.env.types import Decision
from mecjax.interfaces import require
from mecjax.interfaces.gymnax_env import MECGymnax, slot_prices, make_gymnax, observation_bounds

gymnasium = require("gymnasium")
from gymnasium import spaces  # noqa: E402
from gymnasium.error import ResetNeeded  # noqa: E402


class MECGymnasium(gymnasium.Env):
    """Gymnasium ``Env`` of the sequential MEC decision (one device per step).

    ``observation_space``: ``Box`` (6 + 5M,) float32; ``action_space``:
    ``Discrete(M + 1)``; ``info`` holds ``slot_end`` (this step executed the
    slot) and ``slot_cost`` (the slot's mean weighted cost when it did, else 0).
    ``render()`` with ``render_mode="rgb_array"`` returns an [H, W, 3] uint8
    image of the current slot (:func:`mecjax.viewer.render_rgb`); devices not
    yet assigned in this slot are drawn as local, their default until their turn.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, task: Any = None, render_mode: str | None = None, prices=None):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r} is not supported; use one of "
                             f"{self.metadata['render_modes']} or None")
        self.render_mode = render_mode
        self.gymnax_env: MECGymnax
        self.gymnax_env, self.params = make_gymnax(task, prices=prices)
        m = self.params.env.n_servers
        low, high = observation_bounds(m)
        self.observation_space = spaces.Box(low, high, low.shape, np.float32)
        self.action_space = spaces.Discrete(m + 1)
        # gymnax's own jitted reset and step (auto-reset included): the programs are the
        # gymnax environment's, so a persistent compilation cache serves both interfaces.
        self._reset = self.gymnax_env.reset
        self._step = self.gymnax_env.step
        self._key = None
        self._state = None
        self._done = False

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """A fresh instance: ``(observation, info)``. ``seed`` seeds this adapter's
        generator (the same seed, the same instance and noise); ``None`` draws the
        next episode from it."""
        super().reset(seed=seed)
        seed_word = int(self.np_random.integers(0, 2**31 - 1))
        self._key, key = jax.random.split(jax.random.key(seed_word))
        obs, self._state = self._reset(key, self.params)
        self._done = False
        return np.asarray(obs, np.float32), {}

    def step(self, action):
        """Assign the current device: ``(obs, reward, terminated, truncated, info)``."""
        if self._state is None or self._done:
            raise ResetNeeded("call reset() before step() (and after an episode ends)")
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space} (0 computes "
                             f"locally, j offloads to server j)")
        self._key, key = jax.random.split(self._key)
        before = self._state
        a = jnp.asarray(int(action), jnp.int32)
        _, self._state, reward, terminated, truncated, info = self._step(
            key, before, a, self.params)
        terminated, truncated = bool(terminated), bool(truncated)
        self._done = terminated or truncated
        if self._done:
            # No auto-reset here: the episode's last state, its slot's decision complete,
            # stays for render() until reset().
            self._state = before.replace(offload=before.offload.at[before.device].set(a))
        # final_observation: the observation that followed, before gymnax's auto-reset.
        obs = np.asarray(info["final_observation"], np.float32)
        out = {"slot_end": bool(info["slot_end"]), "slot_cost": float(info["slot_cost"])}
        return obs, float(reward), terminated, truncated, out

    def render(self):
        """[H, W, 3] uint8 image of the current slot for ``render_mode="rgb_array"``;
        None without a render mode."""
        if self.render_mode is None:
            return None
        if self._state is None:
            raise ResetNeeded("call reset() before render()")
        from mecjax.viewer import render_rgb

        state = self._state
        decision = Decision(state.offload, slot_prices(self.params))
        return render_rgb(state.mec, decision, self.params.env)


def make_gymnasium(task: Any = None, render_mode: str | None = None,
                   prices=None) -> MECGymnasium:
    """A Gymnasium ``Env`` of ``task`` (a task name or a :class:`~mecjax.Scenario`)
    with one sub-step per device (see :mod:`mecjax.interfaces.gymnax_env`);
    ``render_mode`` None or ``"rgb_array"``; ``prices`` [M] as in ``make_gymnax``."""
    return MECGymnasium(task, render_mode=render_mode, prices=prices)


__all__ = ["MECGymnasium", "make_gymnasium"]
