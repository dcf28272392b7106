"""The JaxMARL interface (mecjax.make_jaxmarl) and the IPPO of train/ippo.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mecjax
from mecjax.env import env as mec_env
from mecjax.env import metrics
from mecjax.env.types import Decision

pytest.importorskip("jaxmarl")

from mecjax.interfaces.jaxmarl_env import MultiAgentEnv  # noqa: E402

from conftest import QUICK_COMPILE  # noqa: E402

S = mecjax.Scenario(n_devices=4, n_servers=2, horizon=3)
N, M, H = S.n_devices, S.n_servers, S.horizon


@pytest.fixture(scope="module")
def env():
    return mecjax.make_jaxmarl(S, final_observation=True)


@pytest.fixture(scope="module")
def plain():
    """The environment without the final-observation option (JaxMARL's default)."""
    return mecjax.make_jaxmarl(S)


@pytest.fixture(scope="module")
def step_env(plain):
    """``step_env`` (no auto-reset) of ``plain``, jitted once for the tests that use it
    (the PettingZoo adapter compiles the very same program: the persistent compilation
    cache serves both)."""
    return jax.jit(plain.step_env)


def sample_actions(env, key):
    keys = jax.random.split(key, env.num_agents)
    return {a: env.action_space(a).sample(k) for a, k in zip(env.agents, keys)}


@pytest.fixture(scope="module")
def episode(env):
    """H + 2 jitted steps of random actions from one reset: (obs, state, actions,
    step keys, then what each step returned), stacked over the steps."""
    k0, k1 = jax.random.split(jax.random.key(0))
    act_keys, step_keys = (jnp.stack(k) for k in zip(*(jax.random.split(k)
                                                         for k in jax.random.split(k1, H + 2))))

    def run():
        obs, state = env.reset(k0)

        def body(carry, ks):
            obs, state = carry
            actions = sample_actions(env, ks[0])
            step = env.step(ks[1], state, actions)
            return step[:2], (obs, state, actions) + step

        _, out = jax.lax.scan(body, (obs, state), (act_keys, step_keys))
        return out

    obs, state, actions, *rest = jax.device_get(jax.jit(run, compiler_options=QUICK_COMPILE)())
    return (obs, state, actions, step_keys, *rest)


def test_agents_classes_and_spaces(env):
    assert isinstance(env, MultiAgentEnv)
    assert env.agents == [f"device_{i}" for i in range(N)] + [f"server_{j}" for j in range(M)]
    assert env.num_agents == N + M
    assert env.agent_classes == {"device": env.agents[:N], "server": env.agents[N:]}
    for a in env.agents[:N]:
        assert env.action_space(a).n == M + 1
        assert env.observation_space(a).shape == (5 + 3 * M,)
    for a in env.agents[N:]:
        space = env.action_space(a)
        assert space.shape == (1,) and (space.low, space.high) == (S.price_min, S.price_max)
        assert env.observation_space(a).shape == (4,)
    assert env.state_size == N * (5 + 3 * M) + 4 * M
    # JaxMARL has no params object: make returns the environment alone.
    discrete = mecjax.make_jaxmarl(S, price_levels=4)
    assert discrete.action_space("server_0").n == 4
    np.testing.assert_allclose(discrete.prices_of({"server_0": 0, "server_1": 3}), [0.5, 2.0])
    with pytest.raises(ValueError, match="price_levels"):
        mecjax.make_jaxmarl(S, price_levels=1)


def test_jitted_steps_stay_in_their_spaces(env, episode):
    obs, _, actions, _, next_obs, _, rewards, _, infos = episode
    for a in env.agents:
        assert bool(jnp.all(jax.vmap(env.action_space(a).contains)(jnp.asarray(actions[a]))))
        for o in (obs, next_obs, infos["final_observation"]):
            assert o[a].shape == (H + 2,) + env.observation_space(a).shape
            assert bool(jnp.all(jax.vmap(env.observation_space(a).contains)(jnp.asarray(o[a]))))
        assert rewards[a].shape == (H + 2,) and np.all(np.isfinite(rewards[a]))
    ws = np.concatenate([np.stack([obs[a] for a in env.agents[:N]], 1).reshape(H + 2, -1),
                         np.stack([obs[a] for a in env.agents[N:]], 1).reshape(H + 2, -1)], 1)
    np.testing.assert_array_equal(obs["world_state"], ws)
    # Every info but the final observation is one value per agent (the baselines' layout).
    assert all(v.shape == (H + 2, env.num_agents) for k, v in infos.items()
               if k != "final_observation")


def test_horizon_is_truncation_with_auto_reset(env, episode, plain, step_env):
    _, state, actions, keys, next_obs, next_state, _, dones, infos = episode
    ends = np.arange(H + 2) == H - 1
    np.testing.assert_array_equal(dones["__all__"], ends)
    for a in env.agents:
        np.testing.assert_array_equal(dones[a], ends)
    np.testing.assert_array_equal(infos["truncated"], np.repeat(ends[:, None], N + M, 1))
    assert not infos["terminated"].any()
    np.testing.assert_array_equal(state.step, [0, 1, 2, 0, 1])
    np.testing.assert_array_equal(next_state.step, [1, 2, 0, 1, 2])
    # At the end: the next observation is a fresh instance's (auto-reset with the reset key
    # JaxMARL's step splits off), the final observation that of the slot reached.
    t = H - 1
    pick = lambda tree: jax.tree.map(lambda x: x[t], tree)  # noqa: E731
    key_step, key_reset = jax.random.split(keys[t])
    fresh_obs, _ = env.reset(key_reset)
    reached, _, _, _, infos_plain = step_env(key_step, pick(state), pick(actions))
    for a in env.agents + ["world_state"]:
        np.testing.assert_allclose(next_obs[a][t], fresh_obs[a], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(infos["final_observation"][a][t], reached[a], rtol=1e-5,
                                   atol=1e-6)
        assert not np.allclose(next_obs[a][t], reached[a])
        # Before the end, the final observation is the next one.
        others = np.arange(H + 2) != t
        np.testing.assert_array_equal(infos["final_observation"][a][others], next_obs[a][others])
    # Without the option, infos hold no observation.
    assert "final_observation" not in infos_plain


def test_rewards_are_the_environment_costs_and_leader_utilities(env, step_env):
    obs, state = env.reset(jax.random.key(3))
    actions = {**{f"device_{i}": jnp.int32(i % (M + 1)) for i in range(N)},
               **{f"server_{j}": jnp.array([0.3 + j], jnp.float32) for j in range(M)}}
    _, _, rewards, _, _ = step_env(jax.random.key(4), state, actions)
    decision = Decision(jnp.arange(N, dtype=jnp.int32) % (M + 1),
                        jnp.array([0.3, 1.3], jnp.float32))
    out = mec_env.evaluate(state.env, decision, S)
    utility = metrics.server_accounts(out.offload, decision.prices, state.env.task_cycles,
                                      out.latency, S.params())["leader_utility"]
    np.testing.assert_allclose([rewards[f"device_{i}"] for i in range(N)], -out.cost, rtol=1e-6)
    np.testing.assert_allclose([rewards[f"server_{j}"] for j in range(M)], utility, rtol=1e-5,
                               atol=1e-7)
    # Eagerly, an action outside its space is an error (inside jit it is clipped).
    with pytest.raises(ValueError, match="offload"):
        env.step_env(jax.random.key(4), state, {**actions, "device_0": jnp.int32(M + 1)})


def test_local_is_unavailable_when_the_battery_cannot_pay(env):
    _, state = env.reset(jax.random.key(5))
    full = env.get_avail_actions(state)
    assert all(bool(full[a].all()) for a in env.agents)
    empty = state.replace(env=state.env.replace(battery=jnp.zeros(N)))
    avail = env.get_avail_actions(empty)
    for a in env.agents[:N]:
        np.testing.assert_array_equal(avail[a], [False] + [True] * M)
    assert all(bool(avail[a].all()) for a in env.agents[N:])


# ----------------------------------------------------------------------------- IPPO


def test_gae_bootstraps_at_truncation_and_stops_at_termination():
    from train.ippo import IPPOConfig, gae

    cfg = IPPOConfig(gamma=0.9, gae_lambda=0.5)
    r, v, nv = np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.25, 1.0]), np.array([4.0, 8.0, 2.0])
    shape = lambda x: jnp.asarray(x, jnp.float32)[:, None, None]  # noqa: E731  [T, E=1, A=1]
    done = jnp.array([[0.0], [1.0], [0.0]])

    def run(terminated):
        batch = {"reward": shape(r), "value": shape(v), "next_value": shape(nv), "done": done,
                 "terminated": jnp.asarray(terminated, jnp.float32)[:, None]}
        adv, target = jax.jit(gae, static_argnums=1)(batch, cfg)   # one compilation for both
        return np.asarray(adv)[:, 0, 0], np.asarray(target)[:, 0, 0]

    adv, target = run([0, 0, 0])            # a time limit at t = 1: bootstrap from nv[1]
    a2 = r[2] + 0.9 * nv[2] - v[2]
    a1 = r[1] + 0.9 * nv[1] - v[1]           # the trace is cut after the episode end
    a0 = r[0] + 0.9 * nv[0] - v[0] + 0.9 * 0.5 * a1
    np.testing.assert_allclose(adv, [a0, a1, a2], rtol=1e-6)
    np.testing.assert_allclose(target, adv + v, rtol=1e-6)
    adv, _ = run([0, 1, 0])                  # a real termination: no bootstrap
    np.testing.assert_allclose(adv[1], r[1] - v[1], rtol=1e-6)


def test_ippo_trains_a_few_updates_with_finite_losses(env):
    from train.ippo import IPPOConfig, IPPOPolicy, train

    cfg = IPPOConfig(num_envs=2, num_steps=3, total_timesteps=12, update_epochs=2,
                     num_minibatches=2, hidden=16, learn_prices=True, chunks=1)
    lines = []
    states, m, _ = train(S, cfg, log=lines.append, preflight=False,
                         compiler_options={"xla_backend_optimization_level": 0,
                                           "xla_llvm_disable_expensive_passes": True})
    assert set(states) == {"device", "server"} and len(lines) == 1
    for k in ("device_actor_loss", "device_value_loss", "server_value_loss", "device_entropy",
              "server_entropy", "mean_cost"):
        assert m[k].shape == (cfg.num_updates,) and np.all(np.isfinite(m[k])), k
    # Entropy starts near uniform (log of the action count) and the parameters moved.
    assert abs(m["device_entropy"][0] - np.log(M + 1)) < 0.05
    assert abs(m["server_entropy"][0] - np.log(cfg.price_levels)) < 0.05
    # The trained agents act as a mecjax scheduler: actions in range, prices on the grid.
    policy = IPPOPolicy(states["device"].params, states["server"].params, cfg.hidden,
                        cfg.price_levels, greedy=False)
    _, state = env.reset(jax.random.key(0))     # an EnvState serves as the observation
    decision, _ = jax.jit(policy.act, static_argnums=3, compiler_options=QUICK_COMPILE)(
        jax.random.key(1), None, state.env, S)
    assert decision.offload.shape == (N,) and int(decision.offload.max()) <= M
    assert set(np.round(np.asarray(decision.prices), 4)) <= {0.5, 1.0, 1.5, 2.0}
