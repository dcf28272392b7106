"""mecjax.make_gymnasium: Gymnasium's environment checker, seeding, truncation without
auto-reset, rewards that sum to the slot's cost, action checks and rgb_array rendering."""

import importlib.util

import numpy as np
import pytest

import mecjax

gymnasium = pytest.importorskip("gymnasium")
pytest.importorskip("gymnax")
from gymnasium.error import ResetNeeded  # noqa: E402
from gymnasium.utils.env_checker import check_env  # noqa: E402

from mecjax.interfaces.gymnasium_env import make_gymnasium  # noqa: E402

# The scenario of tests/test_gymnax_env.py: the same compiled programs serve both files.
N, M, T = 4, 2, 2
SCENARIO = mecjax.Scenario(n_devices=N, n_servers=M, horizon=T)
HAS_VIEWER = importlib.util.find_spec("mecjax.viewer") is not None


@pytest.fixture(scope="module")
def env():
    return make_gymnasium(SCENARIO, render_mode="rgb_array" if HAS_VIEWER else None)


def test_check_env_passes(env):
    check_env(env, skip_render_check=not HAS_VIEWER)
    assert mecjax.make_gymnasium is make_gymnasium
    assert env.action_space == gymnasium.spaces.Discrete(M + 1)
    assert env.observation_space.shape == (6 + 5 * M,)
    assert env.observation_space.dtype == np.float32


def test_seeded_reset_and_a_whole_episode(env):
    obs_a, _ = env.reset(seed=5)
    obs_b, _ = env.reset(seed=6)
    obs_c, info = env.reset(seed=5)
    np.testing.assert_array_equal(obs_a, obs_c)
    assert not np.array_equal(obs_a, obs_b) and info == {}
    rewards, costs, flags = [], [], []
    for k in range(T * N):
        obs, reward, terminated, truncated, info = env.step(k % (M + 1))
        assert isinstance(obs, np.ndarray) and obs.dtype == np.float32
        assert env.observation_space.contains(obs)
        assert isinstance(reward, float) and type(terminated) is bool and type(truncated) is bool
        rewards.append(reward)
        flags.append((terminated, truncated))
        if info["slot_end"]:
            costs.append(info["slot_cost"])
    # Truncated (never terminated) on the last sub-step; no auto-reset after it.
    assert flags == [(False, False)] * (T * N - 1) + [(False, True)]
    assert obs[-1] == 0.0          # device 0 of the slot that would have followed
    with pytest.raises(ResetNeeded):
        env.step(0)
    assert len(costs) == T
    for slot in range(T):
        assert sum(rewards[slot * N:(slot + 1) * N]) == pytest.approx(-costs[slot], rel=1e-5)
    # The same seed replays the same episode.
    env.reset(seed=5)
    again = [env.step(k % (M + 1))[1] for k in range(T * N)]
    np.testing.assert_array_equal(again, rewards)


def test_actions_are_checked(env):
    env.reset(seed=0)
    for bad in (M + 1, -1):
        with pytest.raises(ValueError, match="not in Discrete"):
            env.step(bad)
    env.step(np.int64(M))  # numpy integers are actions too
    with pytest.raises(ValueError, match="render_mode"):
        make_gymnasium(SCENARIO, render_mode="human")


@pytest.mark.skipif(not HAS_VIEWER, reason="mecjax.viewer is not in this checkout")
def test_render_rgb_array(env):
    env.reset(seed=1)
    env.step(1)
    image = env.render()
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
    assert image.std() > 0       # a picture, not a blank canvas
    assert make_gymnasium(SCENARIO).render() is None
