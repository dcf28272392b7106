"""The PettingZoo interface (mecjax.make_pettingzoo): the parallel API, seeding,
spaces, truncation and rendering."""

import importlib.util

import numpy as np
import pytest

import mecjax

pytest.importorskip("pettingzoo")
pytest.importorskip("jaxmarl")

from pettingzoo.test import parallel_api_test, parallel_seed_test  # noqa: E402

S = mecjax.Scenario(n_devices=4, n_servers=2, horizon=3)
N, M, H = S.n_devices, S.n_servers, S.horizon


@pytest.fixture(scope="module")
def env():
    return mecjax.make_pettingzoo(S, render_mode="rgb_array")


def test_parallel_api_test_passes(env):
    parallel_api_test(env, num_cycles=2 * H)


def test_same_seed_same_episode():
    parallel_seed_test(lambda: mecjax.make_pettingzoo(S), num_cycles=2 * H)


def test_an_episode_stays_in_its_spaces_and_ends_truncated(env):
    obs, infos = env.reset(seed=7)
    assert env.agents == env.possible_agents and set(infos) == set(env.agents)
    assert [env.action_space(a).n for a in env.agents[:N]] == [M + 1] * N
    for t in range(H):
        for a in env.agents:
            assert obs[a].dtype == np.float32 and env.observation_space(a).contains(obs[a]), a
        state = env.state()
        assert env.state_space.contains(state)
        np.testing.assert_array_equal(state[: 5 + 3 * M], obs["device_0"])
        env.action_space("server_0").seed(t)
        actions = {a: env.action_space(a).sample() for a in env.agents}
        obs, rewards, terms, truncs, infos = env.step(actions)
        assert all(isinstance(r, float) and np.isfinite(r) for r in rewards.values())
        assert not any(terms.values())
        assert all(truncs.values()) == (t == H - 1) and any(truncs.values()) == (t == H - 1)
    assert env.agents == []
    with pytest.raises(RuntimeError, match="reset"):
        env.step({})
    # Seeded resets repeat the instance; unseeded ones continue the stream.
    first, _ = env.reset(seed=7)
    second, _ = env.reset()
    again, _ = env.reset(seed=7)
    np.testing.assert_array_equal(first["device_0"], again["device_0"])
    assert not np.array_equal(first["device_0"], second["device_0"])


def test_actions_outside_their_space_are_errors(env):
    env.reset(seed=0)
    good = {a: 0 for a in env.agents[:N]} | {a: np.array([0.5]) for a in env.agents[N:]}
    for bad, match in (({"device_1": M + 1}, "device_1"), ({"server_0": np.array([9.0])},
                                                          "server_0")):
        with pytest.raises(ValueError, match=match):
            env.step(good | bad)
    with pytest.raises(ValueError, match="missing"):
        env.step({"device_0": 0})
    env.step(good)       # a python float in a list is a valid price as well
    env.step(good | {"server_1": [1.5]})


@pytest.mark.skipif(importlib.util.find_spec("mecjax.viewer") is None,
                    reason="mecjax.viewer is not there")
def test_render_returns_an_rgb_array(env):
    env.reset(seed=1)
    before = env.render()
    env.step({a: env.action_space(a).sample() for a in env.agents})
    after = env.render()
    for img in (before, after):
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert not np.array_equal(before, after)
    assert mecjax.make_pettingzoo(S).render() is None
