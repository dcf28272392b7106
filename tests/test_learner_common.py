"""The training pieces every learner shares (mecjax.learners.common)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mecjax
from mecjax.learners.common import (ReplayBuffer, check_hyper, epsilon_greedy, int_tuple,
                                    reset_envs, step_envs)


def _item(v):
    return {"s": jnp.full((3,), v, jnp.float32), "a": jnp.asarray(v, jnp.int32)}


def _items(values):
    return jax.tree.map(lambda *x: jnp.stack(x), *[_item(v) for v in values])


def test_ring_buffer_overwrites_the_oldest_and_wraps():
    buf = ReplayBuffer.init(_item(0), 5)
    assert buf.capacity == 5 and int(buf.size) == 0
    assert buf.data["s"].shape == (5, 3) and buf.data["a"].dtype == jnp.int32
    buf = buf.add(_items([1, 2, 3]))
    assert int(buf.ptr) == 3 and int(buf.size) == 3
    buf = buf.add(_items([4, 5, 6]))          # wraps: 6 overwrites 1
    assert int(buf.ptr) == 1 and int(buf.size) == 5
    np.testing.assert_array_equal(buf.data["a"], [6, 2, 3, 4, 5])
    np.testing.assert_array_equal(buf.data["s"][:, 0], [6, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="capacity 5"):
        buf.add(_items(range(6)))


def test_sample_is_uniform_over_filled_entries_only():
    buf = ReplayBuffer.init(_item(0), 8).add(_items([1, 2, 3]))
    batch = jax.jit(lambda b, k: b.sample(k, 3000))(buf, jax.random.key(0))
    a = np.asarray(batch["a"])
    assert batch["s"].shape == (3000, 3)
    np.testing.assert_array_equal(np.asarray(batch["s"])[:, 0], a)   # items stay whole
    counts = np.bincount(a, minlength=4)
    assert counts[0] == 0                                            # never an empty slot
    np.testing.assert_allclose(counts[1:] / 3000, 1 / 3, atol=0.04)


def test_per_agent_buffers_by_vmap():
    n = 4
    bufs = jax.vmap(lambda _: ReplayBuffer.init(_item(0), 6))(jnp.arange(n))
    items = jax.tree.map(lambda x: jnp.stack([x + 10 * i for i in range(n)]), _items([1, 2]))
    bufs = jax.vmap(ReplayBuffer.add)(bufs, items)
    np.testing.assert_array_equal(bufs.size, np.full(n, 2))
    batch = jax.vmap(lambda b, k: b.sample(k, 50))(bufs, jax.random.split(jax.random.key(1), n))
    a = np.asarray(batch["a"])
    for i in range(n):   # each agent samples its own transitions
        assert set(np.unique(a[i])) <= {10 * i + 1, 10 * i + 2}


def test_epsilon_greedy_explores_at_rate_epsilon():
    greedy = jnp.full((200, 50), 2, jnp.int32)
    key = jax.random.key(3)
    np.testing.assert_array_equal(epsilon_greedy(key, greedy, 4, 0.0), greedy)
    full = np.asarray(epsilon_greedy(key, greedy, 4, 1.0))
    np.testing.assert_allclose(np.bincount(full.ravel(), minlength=4) / full.size, 0.25, atol=0.01)
    some = np.asarray(epsilon_greedy(key, greedy, 4, 0.2))
    assert some.dtype == np.int32 and some.min() >= 0 and some.max() <= 3
    # a random action equals the greedy one with probability 1/4
    np.testing.assert_allclose(np.mean(some != 2), 0.2 * 3 / 4, atol=0.01)


def test_step_envs_executes_allocated_decisions_on_every_instance():
    s = mecjax.Scenario(n_devices=5, n_servers=2, horizon=3)
    obs, state = reset_envs(jax.random.key(0), 4, s)
    assert obs.task_bits.shape == (4, 5)
    offload = jnp.tile(jnp.array([0, 1, 2, 1, 0], jnp.int32), (4, 1))
    prices = jnp.full((4, 2), 0.5)
    dec, nobs, nstate, done, info = jax.jit(step_envs, static_argnums=5)(
        jax.random.key(1), state, obs, offload, prices, s)
    assert dec.bandwidth_share.shape == (4, 5) and info["cost"].shape == (4, 5)
    np.testing.assert_array_equal(nstate.t, np.ones(4))
    assert not bool(jnp.any(done)) and not bool(jnp.any(info["invalid_decision"]))
    np.testing.assert_allclose(dec.bandwidth_share[:, 1] + dec.bandwidth_share[:, 3], 1.0,
                               rtol=1e-5)
    assert not np.allclose(nobs.task_bits[0], nobs.task_bits[1])   # independent instances


def test_hyper_checks_name_the_bad_field():
    class Fake:
        name = "fake"
        n_envs, hidden, rate, eps = 2, (8, 0), 0.0, 1.5

    with pytest.raises(ValueError, match="fake: hidden"):
        check_hyper(Fake(), counts=("n_envs",), widths=("hidden",))
    with pytest.raises(ValueError, match="rate=0.0 must be > 0"):
        check_hyper(Fake(), positive=("rate",))
    with pytest.raises(ValueError, match="eps"):
        check_hyper(Fake(), fractions=("eps",))
    check_hyper(Fake(), counts=("n_envs",))
    assert int_tuple([64, 32]) == (64, 32) and int_tuple(16) == (16,)
