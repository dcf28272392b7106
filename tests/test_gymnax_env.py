"""mecjax.make_gymnax: spaces, the sequential decision against mecjax.env.step, rewards that
sum to the slot's cost, truncation with auto-reset, vmapped params, and a smoke run of
train/ppo.py's PPO on 1,000 vmapped instances (gymnax's LogWrapper under jit(vmap))."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mecjax
from mecjax.env import env as mec
from mecjax.env.types import Decision

pytest.importorskip("gymnax")
from gymnax.environments import environment, spaces  # noqa: E402

from mecjax.interfaces.gymnax_env import (GymnaxParams, cond_any, make_gymnax,  # noqa: E402
                                          obs_dim, sequential_obs)

from conftest import QUICK_COMPILE  # noqa: E402

N, M, T = 4, 2, 2
SCENARIO = mecjax.Scenario(n_devices=N, n_servers=M, horizon=T)
ACTIONS = ([0, 1, 2, 1], [2, 2, 0, 1])      # one slot each: every option used


@pytest.fixture(scope="module")
def env():
    return make_gymnax(SCENARIO)


@pytest.fixture(scope="module")
def episode(env):
    """One whole episode (T slots of N sub-steps) through env.step, one call at a time."""
    e, params = env
    key = jax.random.key(7)
    obs, state = e.reset(jax.random.key(3), params)
    steps = []
    for slot in ACTIONS:
        for a in slot:
            key, k = jax.random.split(key)
            out = e.step(k, state, jnp.asarray(a, jnp.int32), params)
            steps.append({"key": k, "state": state, "obs": obs, "out": out})
            obs, state = out[0], out[1]
    return steps


def test_spaces_and_params(env):
    e, params = env
    assert isinstance(e, environment.Environment)
    assert isinstance(params, GymnaxParams) and isinstance(params.env, mecjax.EnvParams)
    assert isinstance(e.action_space(params), spaces.Discrete)
    assert e.action_space(params).n == e.num_actions == M + 1
    box = e.observation_space(params)
    assert isinstance(box, spaces.Box) and box.shape == (obs_dim(M),) == (6 + 5 * M,)
    assert e.name == "mecjax" and make_gymnax("paper")[0].name == "mecjax/paper"
    np.testing.assert_array_equal(params.prices, np.full(M, SCENARIO.price_init, np.float32))
    assert params.max_steps_in_episode == T * N


def test_observations_are_device_features_and_assigned_load(env, episode):
    e, params = env
    p = SCENARIO.params()
    for k, s in enumerate(episode[:N]):
        obs, mec_state = np.asarray(s["obs"]), s["state"].mec
        feats = np.asarray(mecjax.env.device_features(mec.observe(mec_state), p, params.prices))
        np.testing.assert_allclose(obs[:5 + 3 * M], feats[k], rtol=1e-5, atol=1e-6)
        before = np.asarray(ACTIONS[0][:k])
        counts = [(before == j).sum() / N for j in range(1, M + 1)]
        np.testing.assert_allclose(obs[5 + 3 * M:5 + 4 * M], counts, rtol=1e-6)
        cycles = np.asarray(mec_state.task_cycles)[:k]
        work = [cycles[before == j].sum() / (SCENARIO.server_cpu_hz * SCENARIO.slot_s)
                for j in range(1, M + 1)]
        np.testing.assert_allclose(obs[5 + 4 * M:5 + 5 * M], work, rtol=1e-5, atol=1e-7)
        assert obs[-1] == pytest.approx(k / N)
        assert bool(e.observation_space(params).contains(obs))


def test_slot_is_mecjax_step_of_the_assembled_decision(env, episode):
    """The N sub-steps of a slot execute exactly mecjax.env.step with the assembled decision,
    and their rewards sum to that step's reward: the slot's negative mean cost, computed
    independently with mecjax.env.evaluate on the true state."""
    e, params = env
    for slot, actions in enumerate(ACTIONS):
        steps = episode[slot * N:(slot + 1) * N]
        mec_state = steps[0]["state"].mec
        decision = Decision(jnp.asarray(actions, jnp.int32), params.prices)
        cost = float(jnp.mean(mec.evaluate(mec_state, decision, SCENARIO).cost))
        rewards = [float(s["out"][2]) for s in steps]
        assert sum(rewards) == pytest.approx(-cost, rel=1e-5)
        last = steps[-1]
        assert bool(last["out"][5]["slot_end"]) and not any(
            bool(s["out"][5]["slot_end"]) for s in steps[:-1])
        assert float(last["out"][5]["slot_cost"]) == pytest.approx(cost, rel=1e-6)
        key_step = jax.random.split(last["key"])[0]
        _, want, reward, _, _ = mec.step(key_step, mec_state, decision, SCENARIO)
        assert float(reward) == pytest.approx(-cost, rel=1e-6)
        if slot < T - 1:  # no reset in between: the next slot's state is step's
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-12),
                         last["out"][1].mec, want)
        else:  # the episode's end: final_observation is device 0 of slot T, before the reset
            assert int(want.t) == T
            final = sequential_obs(want, jnp.zeros(N, jnp.int32), 0, params.prices, SCENARIO)
            np.testing.assert_allclose(last["out"][5]["final_observation"], final, rtol=1e-5,
                                       atol=1e-6)


def test_truncation_not_termination_and_auto_reset(env, episode):
    e, params = env
    terminated = [bool(s["out"][3]) for s in episode]
    truncated = [bool(s["out"][4]) for s in episode]
    assert not any(terminated)
    assert truncated == [False] * (T * N - 1) + [True]
    for s in episode:
        info = s["out"][5]
        assert bool(info["terminated"]) == bool(s["out"][3])
        assert bool(info["truncated"]) == bool(s["out"][4])
    last = episode[-1]
    obs, state, _, _, _, info = last["out"]
    # Auto-reset: a fresh instance at slot 0, sub-step 0, from the step's reset key.
    fresh_obs, fresh = e.reset(jax.random.split(last["key"])[1], params)
    assert int(state.time) == 0 and int(state.mec.t) == 0 and int(state.device) == 0
    np.testing.assert_allclose(obs, fresh_obs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.mec.positions, fresh.mec.positions, rtol=1e-6)
    assert not np.allclose(info["final_observation"], obs)


def test_cond_any_selects_per_instance():
    x = jnp.arange(3.0)
    f = lambda v: v + 10.0  # noqa: E731
    g = lambda v: v * 2.0  # noqa: E731
    pred = jnp.array([True, False, True])
    got = jax.vmap(lambda p, v: cond_any(p, f, g, v))(pred, x)
    np.testing.assert_allclose(got, [10.0, 2.0, 12.0])
    got = jax.vmap(lambda p, v: cond_any(p, f, g, v))(jnp.zeros(3, bool), x)
    np.testing.assert_allclose(got, [0.0, 2.0, 4.0])
    got = jax.vmap(lambda v: cond_any(True, f, g, v))(x)       # unbatched predicate
    np.testing.assert_allclose(got, [10.0, 11.0, 12.0])
    assert float(cond_any(False, f, g, 3.0)) == 6.0


def test_params_vmap(env):
    """GymnaxParams is a pytree whose scenario constants are leaves: one program resets
    instances with different cost weights (the all-local cost scales with alpha)."""
    e, params = env
    alphas = jnp.asarray([0.5, 1.0, 2.0], jnp.float32)
    batched = params.replace(env=params.env.replace(alpha=alphas))
    axes = GymnaxParams(env=jax.tree.map(lambda _: None, params.env).replace(alpha=0), prices=None)
    key = jax.random.key(2)
    obs, state = jax.vmap(e.reset, (None, axes))(key, batched)
    assert obs.shape == (3, obs_dim(M))
    np.testing.assert_allclose(obs, jnp.broadcast_to(obs[0], obs.shape))   # same instance
    cost = np.asarray(state.base_cost)
    assert cost[0] < cost[1] < cost[2]


def test_make_gymnax_rejects_bad_prices_and_tasks():
    env, params = make_gymnax(SCENARIO, prices=[1.0, 1.5])
    np.testing.assert_array_equal(params.prices, [1.0, 1.5])
    with pytest.raises(ValueError, match="shape"):
        make_gymnax(SCENARIO, prices=[1.0])
    with pytest.raises(ValueError, match="price_min, price_max"):
        make_gymnax(SCENARIO, prices=[1.0, 5.0])
    with pytest.raises(ValueError, match="unknown task"):
        make_gymnax("no-such-task")


# ----------------------------------------------------------------- train/ppo.py


def test_gae_bootstraps_at_truncation_not_termination():
    from train.ppo import Transition, gae

    z = jnp.zeros((3, 1))
    def traj(term, done):
        return Transition(terminated=jnp.asarray(term, jnp.float32)[:, None],
                          done=jnp.asarray(done, jnp.float32)[:, None], action=z, value=z + 1.0,
                          final_value=z + 10.0, reward=z + 2.0, log_prob=z, obs=z, slot_cost=z,
                          slot_end=z, episode_return=z, episode_end=z)
    gamma, lam = 0.5, 1.0
    adv_trunc, target = gae(traj([0, 0, 0], [0, 1, 0]), gamma, lam)
    adv_term, _ = gae(traj([0, 1, 0], [0, 1, 0]), gamma, lam)
    # Step 1 ends its episode: truncated, it bootstraps from V(final obs) = 10; terminated, not.
    assert float(adv_trunc[1, 0]) == pytest.approx(2 + 0.5 * 10 - 1)
    assert float(adv_term[1, 0]) == pytest.approx(2 - 1)
    # The recursion does not leak across the episode end: step 0 sees step 1 only.
    assert float(adv_trunc[0, 0]) == pytest.approx((2 + 5 - 1) + 0.5 * float(adv_trunc[1, 0]))
    np.testing.assert_allclose(target, adv_trunc + 1.0)


def test_ppo_config_file_loads_and_rejects_bad_settings():
    from mecjax.outputs import UserError
    from train.ppo import CONFIG, load_config

    cfg = load_config(CONFIG)
    assert cfg.task == "paper" and cfg.num_updates >= 1 and "nearest" in cfg.references
    for bad, match in (({"num_envs": 0}, "num_envs"), ({"lr": -1.0}, "lr"),
                       ({"no_such": 1}, "unknown setting"), ({"num_minibatches": 7}, "multiple"),
                       ({"references": ("local", "nope")}, "not schedulers"),
                       ({"anneal_lr": 1}, "anneal_lr")):
        with pytest.raises(UserError, match=match):
            load_config(CONFIG, bad)


def test_ppo_train_smoke_on_1000_instances(env):
    """Two PPO updates on 1,000 vmapped instances of the tiny scenario (gymnax's
    LogWrapper under jit(vmap)): finite losses, one metric per update, each rollout one
    whole episode whose logged return is minus its two slot costs."""
    from train.ppo import PPOConfig, PPOPolicy, _network, make_train

    e, params = env
    cfg = PPOConfig(total_timesteps=2 * 1000 * T * N, num_envs=1000, num_steps=T * N,
                    num_minibatches=4, update_epochs=1, hidden=16)
    out = jax.jit(make_train(cfg, e, params), compiler_options=QUICK_COMPILE)(jax.random.key(0))
    m = out["metrics"]
    assert cfg.num_updates == 2
    for k in ("total_loss", "value_loss", "actor_loss", "entropy", "slot_cost",
              "episode_return"):
        assert m[k].shape == (2,) and bool(jnp.all(jnp.isfinite(m[k]))), k
    assert bool(jnp.all(m["slot_cost"] > 0))
    np.testing.assert_allclose(m["episode_return"], -T * m["slot_cost"], rtol=1e-4)
    assert float(m["entropy"][0]) == pytest.approx(np.log(M + 1), rel=0.05)  # starts uniform
    train_state, env_state, last_obs, _ = out["runner_state"]
    assert last_obs.shape == (cfg.num_envs, obs_dim(M))
    # The trained policy as a mecjax scheduler decides, from an Observation, what the
    # same network decides stepping the gymnax environment device by device.
    policy = PPOPolicy(hidden=cfg.hidden, weights=train_state.params)
    net = _network(M + 1, cfg.hidden, cfg.activation)
    obs, state = e.reset(jax.random.key(4), params)
    want = []
    for k in range(N):
        a = int(jnp.argmax(net.apply(train_state.params, obs)[0]))
        want.append(a)
        obs, state = e.step(jax.random.key(k), state, jnp.asarray(a, jnp.int32), params)[:2]
    _, state0 = e.reset(jax.random.key(4), params)
    view = mec.observe(state0.mec)
    act = jax.jit(lambda pol, key: pol.act(key, None, view, SCENARIO)[0])
    decision = act(policy, jax.random.key(0))
    np.testing.assert_array_equal(decision.offload, want)
    np.testing.assert_array_equal(decision.prices, params.prices)
    # Sampled (same compiled program): the nearly uniform policy departs from the greedy one.
    sampled = [np.asarray(act(dataclasses.replace(policy, greedy=False), jax.random.key(i)).offload)
               for i in range(8)]
    assert all(((a >= 0) & (a <= M)).all() for a in sampled)
    assert any((a != want).any() for a in sampled)
