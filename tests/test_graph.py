"""Graph view of observations (mecjax.env.graph)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import pytest

import mecjax
from mecjax.env import graph as G
from mecjax.env import reset


def _obs(scenario, seed=0):
    obs, state = reset(jax.random.key(seed), scenario)
    return obs, state


# Jitted once per scenario: eager op-by-op dispatch would dominate the test time.
_graph = jax.jit(G.graph_from_observation)


def _k(s):
    return min(s.knn, s.n_devices - 1)


SCENARIOS = [
    mecjax.Scenario(n_devices=8),
    mecjax.Scenario(n_devices=12, n_servers=2, knn=3),
    mecjax.Scenario(n_devices=6, n_servers=4, knn=10),  # knn > N - 1: k = 5
]


@pytest.mark.parametrize("s", SCENARIOS)
def test_shapes_and_dtypes(s):
    obs, _ = _obs(s)
    g = _graph(obs, s)
    n, m, k = s.n_devices, s.n_servers, _k(s)
    e = 2 * n * m + n * k
    assert G.num_edges(s) == e == G.num_edges(s.params())
    assert g.nodes.shape == (n + m, G.NODE_FEATURES) and g.nodes.dtype == jnp.float32
    assert g.edges.shape == (e, G.EDGE_FEATURES) and g.edges.dtype == jnp.float32
    assert g.senders.shape == g.receivers.shape == (e,)
    assert g.senders.dtype == g.receivers.dtype == jnp.int32
    assert g.globals.shape == (1, G.GLOBAL_FEATURES) and g.globals.dtype == jnp.float32
    np.testing.assert_array_equal(g.n_node, [n + m])
    np.testing.assert_array_equal(g.n_edge, [e])
    assert g.n_node.dtype == g.n_edge.dtype == jnp.int32
    nodes = np.asarray(g.nodes)
    assert np.all(np.isfinite(nodes)) and np.all(np.isfinite(np.asarray(g.edges)))
    assert np.all(np.isfinite(np.asarray(g.globals)))
    # one-hot node type
    np.testing.assert_array_equal(nodes[:n, -2:], np.tile([1.0, 0.0], (n, 1)))
    np.testing.assert_array_equal(nodes[n:, -2:], np.tile([0.0, 1.0], (m, 1)))
    # index ranges, no self loops
    snd, rcv = np.asarray(g.senders), np.asarray(g.receivers)
    assert snd.min() >= 0 and rcv.min() >= 0 and snd.max() < n + m and rcv.max() < n + m
    assert not np.any(snd == rcv)


def test_node_features_match_definitions():
    s = mecjax.Scenario(n_devices=8)
    obs, _ = _obs(s)
    g = _graph(obs, s)
    n = s.n_devices
    nodes = np.asarray(g.nodes)
    h_db = (10 * np.log10(np.asarray(obs.gain_observed, np.float64)) + 110) / 30
    np.testing.assert_allclose(nodes[:n, 0], np.asarray(obs.battery) / s.battery_capacity_j,
                               rtol=1e-5)
    np.testing.assert_allclose(nodes[:n, 1], np.asarray(obs.task_bits) / s.task_bits_max,
                               rtol=1e-5)
    np.testing.assert_allclose(nodes[:n, 2], np.asarray(obs.task_cycles) / s.task_cycles_max,
                               rtol=1e-5)
    np.testing.assert_allclose(nodes[:n, 3], h_db.max(1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(nodes[:n, 4], np.asarray(obs.cpu_freq) / s.device_cpu_max_hz,
                               rtol=1e-5)
    np.testing.assert_allclose(nodes[n:, 0], 0.0)
    np.testing.assert_allclose(nodes[n:, 1], np.asarray(obs.backlog)
                               / (s.server_cpu_hz * s.slot_s), rtol=1e-5)
    np.testing.assert_allclose(nodes[n:, 2], np.asarray(obs.prices) / s.price_max, rtol=1e-5)
    np.testing.assert_allclose(nodes[n:, 3], h_db.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(nodes[n:, 4], 1.0)
    np.testing.assert_allclose(np.asarray(g.globals)[0],
                               [0.0, np.mean(np.asarray(obs.prices)) / s.price_max], rtol=1e-5)


def test_state_and_observation_give_same_graph_and_ignore_true_gain():
    s = mecjax.Scenario(n_devices=8)
    obs, state = _obs(s)
    g_obs = _graph(obs, s)
    g_state = _graph(state, s)
    g_other = _graph(state.replace(gain=state.gain * 7.0), s)
    for a, b, c in zip(jax.tree.leaves(g_obs), jax.tree.leaves(g_state),
                       jax.tree.leaves(g_other)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("s", SCENARIOS)
def test_neighbourhoods(s):
    obs, _ = _obs(s, seed=3)
    g = _graph(obs, s)
    n, m, k = s.n_devices, s.n_servers, _k(s)
    snd, rcv = np.asarray(g.senders), np.asarray(g.receivers)
    for i in range(n):
        out = rcv[snd == i]
        assert np.sum(out >= n) == m and set(out[out >= n]) == set(range(n, n + m))
        assert np.sum(out < n) == k
        assert len(set(out[out < n])) == k  # distinct neighbours
        inc = snd[rcv == i]
        assert set(inc[inc >= n]) == set(range(n, n + m)) and np.sum(inc >= n) == m
    for j in range(n, n + m):
        assert sorted(rcv[snd == j]) == list(range(n))
        assert sorted(snd[rcv == j]) == list(range(n))
    # no server-server edges
    assert not np.any((snd >= n) & (rcv >= n))


@pytest.mark.parametrize("s", SCENARIOS)
def test_knn_edges_are_nearest(s):
    obs, _ = _obs(s, seed=5)
    g = _graph(obs, s)
    n, m, k = s.n_devices, s.n_servers, _k(s)
    pos = np.asarray(obs.positions, np.float64)
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    snd = np.asarray(g.senders)[2 * n * m:]
    rcv = np.asarray(g.receivers)[2 * n * m:]
    feat = np.asarray(g.edges)[2 * n * m:]
    np.testing.assert_array_equal(snd, np.repeat(np.arange(n), k))
    for i in range(n):
        mine = rcv[snd == i]
        brute = np.sort(d[i])[:k]
        # same distances as the brute-force k nearest (robust to ties)
        np.testing.assert_allclose(np.sort(d[i, mine]), brute, rtol=1e-5)
        if k < n - 1:  # strictly nearer than every excluded device
            assert d[i, mine].max() <= np.sort(d[i])[k] + 1e-6
    np.testing.assert_allclose(feat[:, 0], 0.0)
    np.testing.assert_allclose(feat[:, 1], d[snd, rcv] / s.area_m, rtol=1e-4)


def test_edge_channel_features_match_gain_observed():
    s = mecjax.Scenario(n_devices=10, n_servers=3)
    obs, _ = _obs(s, seed=1)
    g = _graph(obs, s)
    n, m = s.n_devices, s.n_servers
    snd, rcv, feat = np.asarray(g.senders), np.asarray(g.receivers), np.asarray(g.edges)
    h = np.asarray(obs.gain_observed, np.float64)
    pos, srv = np.asarray(obs.positions, np.float64), np.asarray(obs.server_positions, np.float64)
    nm = n * m
    i = np.concatenate([snd[:nm], rcv[nm:2 * nm]])
    j = np.concatenate([rcv[:nm], snd[nm:2 * nm]]) - n
    assert np.all((0 <= i) & (i < n)) and np.all((0 <= j) & (j < m))
    np.testing.assert_allclose(feat[:2 * nm, 0], (10 * np.log10(h[i, j]) + 110) / 30,
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(feat[:2 * nm, 1], np.linalg.norm(pos[i] - srv[j], axis=-1)
                               / s.area_m, rtol=1e-4)


@pytest.mark.parametrize("knn,n", [(0, 8), (4, 1)])
def test_no_device_device_edges(knn, n):
    s = mecjax.Scenario(n_devices=n, n_servers=2, knn=knn)
    obs, _ = _obs(s)
    g = _graph(obs, s)
    assert G.num_edges(s) == 2 * n * 2
    assert g.edges.shape == (4 * n, G.EDGE_FEATURES)
    snd, rcv = np.asarray(g.senders), np.asarray(g.receivers)
    assert not np.any((snd < n) & (rcv < n))
    assert np.all(np.isfinite(np.asarray(g.nodes)))


def test_zero_gain_is_finite():
    s = mecjax.Scenario(n_devices=6)
    obs, _ = _obs(s)
    g = _graph(obs.replace(gain_observed=jnp.zeros_like(obs.gain_observed)), s)
    assert np.all(np.isfinite(np.asarray(g.nodes)))
    assert np.all(np.isfinite(np.asarray(g.edges)))
    # the channel columns sit on the scaled-dB floor (-200 dB)
    n, m = s.n_devices, s.n_servers
    np.testing.assert_allclose(np.asarray(g.nodes)[:, 3], -3.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g.edges)[:2 * n * m, 0], -3.0, rtol=1e-6)


@pytest.mark.parametrize("s", SCENARIOS[:2])
def test_in_degree_by_segment_sum(s):
    obs, _ = _obs(s, seed=2)
    g = _graph(obs, s)
    n, m = s.n_devices, s.n_servers
    ones = jnp.ones((g.senders.shape[0],), jnp.float32)
    deg = np.asarray(jraph.segment_sum(ones, g.receivers, n + m))
    knn_in = np.bincount(np.asarray(g.receivers)[2 * n * m:], minlength=n)
    np.testing.assert_array_equal(deg[:n], m + knn_in)
    np.testing.assert_array_equal(deg[n:], n)
    out = np.asarray(jraph.segment_sum(ones, g.senders, n + m))
    np.testing.assert_array_equal(out[:n], m + _k(s))
    np.testing.assert_array_equal(out[n:], n)


def _assert_graphs_equal(a, b, exact=True):
    for name in ("nodes", "edges", "senders", "receivers", "globals", "n_node", "n_edge"):
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert x.shape == y.shape, name
        assert x.dtype == y.dtype, name
        if exact or np.issubdtype(x.dtype, np.integer):
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:  # jit may fuse float ops differently from eager execution
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=name)


def test_batch_graphs_matches_jraph_batch_under_jit_and_vmap():
    s = mecjax.Scenario(n_devices=8, n_servers=3)
    b = 4
    keys = jax.random.split(jax.random.key(7), b)
    obs, _ = jax.jit(jax.vmap(reset, in_axes=(0, None)), static_argnums=1)(keys, s)

    vg = jax.jit(jax.vmap(G.graph_from_observation, in_axes=(0, None)), static_argnums=1)(obs, s)
    assert vg.nodes.shape == (b, s.n_devices + s.n_servers, G.NODE_FEATURES)
    assert vg.senders.shape == (b, G.num_edges(s))

    singles = [jax.tree.map(lambda x: x[i], vg) for i in range(b)]
    # vmap/jit agree with the eager, unbatched graph (one is enough; eager is slow)
    eager = G.graph_from_observation(jax.tree.map(lambda x: x[1], obs), s)
    _assert_graphs_equal(singles[1], eager, exact=False)

    expected = jraph.batch(singles)
    _assert_graphs_equal(G.batch_graphs(vg), expected)
    _assert_graphs_equal(jax.jit(G.batch_graphs)(vg), expected)

    # Nested batch axes flatten in row-major order.
    nested = jax.tree.map(lambda x: x.reshape((2, 2) + x.shape[1:]), vg)
    _assert_graphs_equal(G.batch_graphs(nested), expected)


def test_vmap_over_env_params():
    s = mecjax.Scenario(n_devices=6, n_servers=2)
    obs, _ = _obs(s)
    p = s.params()
    areas = jnp.array([500.0, 1000.0], jnp.float32)
    ps = p.replace(area_m=areas)
    axes = jax.tree.map(lambda _: None, p).replace(area_m=0)
    g = jax.jit(jax.vmap(G.graph_from_observation, in_axes=(None, axes)))(obs, ps)
    assert g.edges.shape == (2, G.num_edges(s), G.EDGE_FEATURES)
    np.testing.assert_allclose(g.edges[0, :, 1], 2 * g.edges[1, :, 1], rtol=1e-5)
