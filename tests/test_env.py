"""Environment properties: batching, determinism, robustness, dynamics."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mecjax
from mecjax import env

from conftest import QUICK_COMPILE


def _policy(obs, s):
    """Offload heavy tasks to the best observed server (a deterministic test policy)."""
    heavy = obs.task_cycles > 5e7
    best = jnp.argmax(obs.gain_observed, -1).astype(jnp.int32) + 1
    return env.Decision(jnp.where(heavy, best, 0), jnp.full((s.n_servers,), 0.7))


def _rollout(key, s, slots):
    k0, k1 = jax.random.split(key)
    obs, state = env.reset(k0, s)

    def body(carry, t):
        obs, state = carry
        obs, state, reward, done, info = env.step(jax.random.fold_in(k1, t), state, _policy(obs, s), s)
        return (obs, state), (reward, info["latency"], state.gain, done)

    _, traj = jax.lax.scan(body, (obs, state), jnp.arange(slots))
    return traj


rollout = jax.jit(_rollout, static_argnums=(1, 2))


def test_vmap_over_instances_equals_a_loop(small):
    keys = jax.random.split(jax.random.key(0), 5)
    batched = jax.jit(jax.vmap(_rollout, (0, None, None)), static_argnums=(1, 2))(keys, small, 6)
    for i, k in enumerate(keys):
        single = rollout(k, small, 6)
        for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(batched)):
            np.testing.assert_allclose(np.asarray(b[i]), np.asarray(a), rtol=1e-6, atol=1e-30)


def test_same_key_same_trajectory_and_different_keys_differ(small):
    # 6 slots: the program of test_vmap_over_instances_equals_a_loop's single rollouts.
    a = rollout(jax.random.key(7), small, 6)
    b = rollout(jax.random.key(7), small, 6)
    c = rollout(jax.random.key(8), small, 6)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(np.asarray(a[1]), np.asarray(c[1]))


def test_done_at_horizon():
    s = mecjax.Scenario(n_devices=4, horizon=5)
    done = np.asarray(rollout(jax.random.key(1), s, 7)[3])
    np.testing.assert_array_equal(done, [False, False, False, False, True, True, True])


def test_observed_channel_is_last_slots_true_channel(small):
    obs, state = env.reset(jax.random.key(2), small)
    assert not hasattr(obs, "gain")
    dec = _policy(obs, small)
    obs2, state2, *_ = env.step(jax.random.key(3), state, dec, small)
    np.testing.assert_array_equal(np.asarray(obs2.gain_observed), np.asarray(state.gain))
    np.testing.assert_array_equal(np.asarray(obs2.prices), np.asarray(dec.prices))
    assert int(state2.t) == 1


def test_random_valid_decisions_never_give_nan_or_inf():
    """10^5 random valid decisions (with random shares and prices) on random states."""
    s = mecjax.Scenario(n_devices=50, n_servers=3)
    n_states, per_state = 100, 1000
    states = jax.jit(jax.vmap(lambda k: env.reset(k, s)[1]))(jax.random.split(jax.random.key(0), n_states))

    # QUICK_COMPILE: the check is about finiteness, not the last bits of the floats.
    @partial(jax.jit, compiler_options=QUICK_COMPILE)
    def check(states, key):
        def on_state(state, key):
            def one(k):
                k1, k2, k3, k4, k5 = jax.random.split(k, 5)
                off = jax.random.randint(k1, (s.n_devices,), 0, s.n_servers + 1)
                prices = jax.random.uniform(k2, (s.n_servers,), minval=s.price_min, maxval=s.price_max)
                raw_bw = jax.random.uniform(k3, (s.n_devices,), minval=1e-6)
                raw_cpu = jax.random.uniform(k4, (s.n_devices,), minval=1e-6)
                use_shares = jax.random.bernoulli(k5)
                onehot = off[:, None] == jnp.arange(1, s.n_servers + 1)

                def norm(raw):
                    tot = (onehot * (onehot * raw[:, None]).sum(0)).sum(1)
                    return jnp.where(off > 0, raw / jnp.where(tot > 0, tot, 1.0), 0.0)

                explicit = env.evaluate(state, env.Decision(off, prices, norm(raw_bw), norm(raw_cpu)), s)
                default = env.evaluate(state, env.Decision(off, prices), s)
                out = jax.tree.map(lambda a, b: jnp.where(use_shares, a, b), explicit, default)
                leaves = [out.latency, out.energy, out.payment, out.cost, out.rate]
                return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) & jnp.all(out.latency > 0)

            return jax.vmap(one)(jax.random.split(key, per_state))

        return jax.vmap(on_state)(states, jax.random.split(key, n_states))

    ok = np.asarray(check(states, jax.random.key(1)))
    assert ok.size == 100_000
    assert ok.all(), f"{(~ok).sum()} decisions produced NaN/Inf"


def test_fading_is_correlated_rayleigh(small):
    s = mecjax.Scenario(n_devices=64, n_servers=2, fading_rho=0.9)
    traj = rollout(jax.random.key(4), s, 200)
    gains = np.asarray(traj[2])                      # [T, N, M]
    _, state = env.reset(jax.random.split(jax.random.key(4))[0], s)  # the rollout's reset key
    fade = gains / np.asarray(state.path_gain)[None]  # |g|^2, Exp(1) if Rayleigh
    assert fade.mean() == pytest.approx(1.0, abs=0.08)
    assert fade.var() == pytest.approx(1.0, abs=0.2)
    # Power of a Gauss-Markov CN process has lag-1 correlation rho^2 = 0.81.
    x = fade - fade.mean()
    corr = (x[1:] * x[:-1]).mean() / x.var()
    assert corr == pytest.approx(0.81, abs=0.06)


def test_workload_is_forecastable_beyond_persistence():
    """The load has a periodic part, so the slot-ahead task size is predictable."""
    s = mecjax.Scenario(n_devices=64)
    obs, state = env.reset(jax.random.key(9), s)
    bits = []
    step = jax.jit(env.step, static_argnums=3)
    for t in range(96):
        bits.append(np.asarray(state.task_bits))
        obs, state, *_ = step(jax.random.key(t), state, env.Decision(jnp.zeros(64, jnp.int32), jnp.full(3, 0.5)), s)
    bits = np.stack(bits)                              # [T, N]
    x = bits - bits.mean(0)
    lag1 = (x[1:] * x[:-1]).mean() / x.var()
    assert lag1 > 0.3, "task sizes should be autocorrelated"
    # The periodic mean alone (known phase) explains a clear part of the variance.
    phase = np.asarray(state.load_phase)
    t = np.arange(96)[:, None]
    periodic = s.task_bits_min + (s.task_bits_max - s.task_bits_min) * np.clip(
        s.load_mean + s.load_amplitude * np.sin(2 * np.pi * t / s.load_period_slots + phase), 0, 1)
    resid = bits - periodic
    assert resid.var() < 0.8 * bits.var()


def test_backlog_builds_when_one_server_is_overloaded():
    s = mecjax.Scenario(n_devices=150, task_cycles_min=9e7, task_cycles_max=1e8, battery_capacity_j=100)
    obs, state = env.reset(jax.random.key(0), s)
    dec = env.Decision(jnp.ones(150, jnp.int32), jnp.full(3, 0.5))
    _, state2, _, _, info1 = env.step(jax.random.key(1), state, dec, s)
    work = float(state.task_cycles.sum())
    assert float(state2.backlog[0]) == pytest.approx(work - s.server_cpu_hz * s.slot_s, rel=1e-5)
    _, _, _, _, info2 = env.step(jax.random.key(2), state2, dec, s)
    # Next slot, every task on server 1 waits for the backlog first.
    assert float(info2["latency"].min()) >= float(state2.backlog[0]) / s.server_cpu_hz


def test_battery_drains_and_harvests_within_bounds():
    s = mecjax.Scenario(n_devices=16, battery_capacity_j=1.0, harvest_max_j=0.0)
    obs, state = env.reset(jax.random.key(0), s)
    local = env.Decision(jnp.zeros(16, jnp.int32), jnp.full(3, 0.5))
    # Both steps with the scenario as EnvParams (its constants traced): one compiled step.
    _, nxt, _, _, info = env.step(jax.random.key(1), state, local, s.params())
    expect = np.clip(np.asarray(state.battery) - np.asarray(info["energy"]), 0, 1)
    np.testing.assert_allclose(nxt.battery, expect, rtol=1e-6, atol=1e-7)
    s2 = s.replace(harvest_max_j=5.0)
    _, full, *_ = env.step(jax.random.key(1), state, local, s2.params())
    assert float(full.battery.max()) <= 1.0


def test_mobility_moves_devices_inside_the_area():
    s = mecjax.Scenario(n_devices=32, mobility=True, mobility_step_m=50.0)
    obs, state = env.reset(jax.random.key(0), s)
    dec = env.Decision(jnp.zeros(32, jnp.int32), jnp.full(3, 0.5))
    _, nxt, *_ = env.step(jax.random.key(1), state, dec, s)
    moved = np.linalg.norm(np.asarray(nxt.positions - state.positions), axis=-1)
    assert moved.max() > 0 and moved.max() <= 50.0 + 1e-3
    assert float(nxt.positions.min()) >= 0 and float(nxt.positions.max()) <= s.area_m
    assert not np.allclose(nxt.path_gain, state.path_gain)
    static = s.replace(mobility=False)
    _, nxt2, *_ = env.step(jax.random.key(1), state, dec, static)
    np.testing.assert_array_equal(np.asarray(nxt2.positions), np.asarray(state.positions))


def test_features_have_documented_shapes_and_are_finite(small):
    obs, _ = env.reset(jax.random.key(0), small)
    dv = env.device_features(obs, small)
    sv = env.server_features(obs, small)
    assert dv.shape == (small.n_devices, 5 + 3 * small.n_servers) and dv.dtype == jnp.float32
    assert sv.shape == (small.n_servers, 4) and sv.dtype == jnp.float32
    assert np.isfinite(dv).all() and np.isfinite(sv).all()
    # Features are scaled to roughly unit range.
    assert np.abs(dv).max() < 5


def test_device_features_are_the_eq1_state(small):
    obs, _ = env.reset(jax.random.key(3), small)
    obs = obs.replace(backlog=jnp.array([0.0, 2e8, 5e8]), prices=jnp.array([0.3, 0.6, 0.9]))
    m, cap = small.n_servers, small.server_cpu_hz * small.slot_s
    dv = np.asarray(env.device_features(obs, small))
    np.testing.assert_allclose(dv[:, 0], obs.battery / small.battery_capacity_j, rtol=1e-6)
    np.testing.assert_allclose(dv[:, 1], obs.task_bits / small.task_bits_max, rtol=1e-6)
    np.testing.assert_allclose(dv[:, 2], obs.task_cycles / small.task_cycles_max, rtol=1e-6)
    np.testing.assert_allclose(dv[:, 3], obs.cpu_freq / small.device_cpu_max_hz, rtol=1e-6)
    np.testing.assert_allclose(dv[:, 4], obs.tx_power / small.tx_power_max_w, rtol=1e-6)
    h = np.asarray(obs.gain_observed, np.float64)
    np.testing.assert_allclose(dv[:, 5:5 + m], (10 * np.log10(h) + 110) / 30, rtol=1e-5)
    np.testing.assert_allclose(dv[:, 5 + m:5 + 2 * m],
                               np.broadcast_to([0.3, 0.6, 0.9], (small.n_devices, m))
                               / small.price_max, rtol=1e-6)
    np.testing.assert_allclose(dv[:, 5 + 2 * m:], np.broadcast_to(
        np.array([0.0, 2e8, 5e8]) / cap, (small.n_devices, m)), rtol=1e-6)
    # A leader posting this slot's prices: only the price columns change.
    posted = jnp.array([1.0, 0.2, 0.5])
    dp = np.asarray(env.device_features(obs, small, posted))
    np.testing.assert_allclose(dp[:, 5 + m:5 + 2 * m],
                               np.broadcast_to(posted / small.price_max, (small.n_devices, m)),
                               rtol=1e-6)
    np.testing.assert_array_equal(np.delete(dp, np.s_[5 + m:5 + 2 * m], 1),
                                  np.delete(dv, np.s_[5 + m:5 + 2 * m], 1))


def test_server_features_match_definitions(small):
    obs, _ = env.reset(jax.random.key(4), small)
    cap = small.server_cpu_hz * small.slot_s
    sv = np.asarray(env.server_features(obs, small))
    h = np.asarray(obs.gain_observed, np.float64)
    np.testing.assert_allclose(sv[:, 0], np.asarray(obs.backlog) / cap, rtol=1e-6)
    np.testing.assert_allclose(sv[:, 1], np.asarray(obs.prices) / small.price_max, rtol=1e-6)
    np.testing.assert_allclose(sv[:, 2], ((10 * np.log10(h) + 110) / 30).mean(0), rtol=1e-5)
    best = h.argmax(1)
    offered = [np.asarray(obs.task_cycles)[best == j].sum() / cap for j in range(small.n_servers)]
    np.testing.assert_allclose(sv[:, 3], offered, rtol=1e-5)
    assert sv[:, 3].sum() > 0


def test_scaled_db_floor_and_clip():
    from mecjax.env.features import FEATURE_CLIP, from_scaled_db, scaled_db

    h = jnp.array([0.0, 1e-30, 1e-20, 1e-11, 1e-5, 1e30, jnp.inf])
    s = np.asarray(scaled_db(h))
    # Vanishing channels sit on the -200 dB floor; unphysical ones on the clip.
    np.testing.assert_allclose(s, [-3.0, -3.0, -3.0, 0.0, 2.0, FEATURE_CLIP, FEATURE_CLIP],
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(from_scaled_db(s[2:5]), h[2:5], rtol=1e-4)


def test_metrics_of_all_local_decision(small):
    obs, state = env.reset(jax.random.key(0), small)
    _, _, reward, _, info = env.step(jax.random.key(1), state,
                                     env.Decision(jnp.zeros(small.n_devices, jnp.int32), jnp.full(3, 0.5)), small)
    assert float(info["utility"]) == pytest.approx(0.0, abs=1e-6)
    assert float(info["offload_fraction"]) == 0.0
    assert float(info["revenue"]) == 0.0
    lat = np.asarray(state.task_cycles / state.cpu_freq)
    assert float(info["latency_ms"]) == pytest.approx(1e3 * lat.mean(), rel=1e-5)
    thr = np.asarray(state.task_bits) / lat
    assert float(info["fairness"]) == pytest.approx(thr.sum() ** 2 / (len(thr) * (thr**2).sum()), rel=1e-5)
    assert float(reward) == pytest.approx(-float(info["cost"].mean()), rel=1e-6)
