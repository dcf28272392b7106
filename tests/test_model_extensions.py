"""The model extensions (docs/model.md, "Extensions"): the optimizers that model the cost
in closed form (separable objective, look-ahead) agree with the environment on a
scenario with every extension on, and the extensions do what they claim over a few slots."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mecjax
from mecjax import env
from mecjax.config import per_server
from mecjax.env import Decision, features, graph
from mecjax.learners import twin
from mecjax.optim import game, lookahead, objective, separable
from mecjax.schedulers.base import fixed_prices

# Every extension on: hard battery, device queues (a short slot, so they carry), per-server
# CPU and bandwidth, a remote cloud, fixed server sites.
EXT = mecjax.Scenario(n_devices=8, n_servers=3, horizon=10, slot_s=0.05, battery_hard=True,
                      failure_cost=0.5, device_queue=True, server_cpu_hz=(10e9, 5e9, 50e9),
                      bandwidth_hz=(10e6, 20e6, 5e6), wan_delay_s=(0.0, 0.0, 0.04),
                      server_xy=((100.0, 100.0), (400.0, 100.0), (250.0, 450.0)))


@pytest.fixture(scope="module")
def ext_obs():
    """An observation of EXT with queued local work and, on odd devices, batteries too low
    to compute locally (forced offloading) and for some transmissions (failures)."""
    obs, _ = env.reset(jax.random.key(3), EXT)
    k1, k2 = jax.random.split(jax.random.key(4))
    low = jax.random.uniform(k1, (8,), maxval=0.03)
    return obs.replace(battery=jnp.where(jnp.arange(8) % 2 == 0, 5.0, low),
                       device_backlog=jax.random.uniform(k2, (8,), maxval=5e7))


def test_separable_cost_equals_the_objective_with_every_extension(ext_obs):
    prices = fixed_prices(EXT)
    xs = jax.random.randint(jax.random.key(1), (32, 8), 0, EXT.n_options)

    @jax.jit
    def check(obs):   # one program: compiling the pieces one by one costs more
        terms = separable.slot_terms(obs, prices, EXT)
        got = jax.vmap(lambda x: separable.separable_mean_cost(terms, x))(xs)
        want = objective.batch_mean_cost(obs, xs, prices, EXT)
        failed = jax.vmap(lambda x: objective.outcome_of(obs, x, prices, EXT).failed)(xs)
        x, _, converged = separable.descend(terms, jnp.zeros(8, jnp.int32))
        singles = jnp.stack([x.at[i].set(o) for i in range(8) for o in range(4)])
        return (got, want, failed, separable.relaxation_bound(terms, 50), converged,
                objective.mean_cost(obs, x, prices, EXT),
                objective.batch_mean_cost(obs, singles, prices, EXT))

    got, want, failed, bound, converged, value, singles = check(ext_obs)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5)
    # The candidates exercise failures, forced offloading and the cloud.
    assert 0 < int(jnp.sum(failed)) < failed.size
    assert bool(jnp.any(xs == 3))
    # The relaxation bound stays below every candidate's cost.
    assert float(bound) <= float(jnp.min(want)) + 1e-6
    # Descent ends where no single change lowers the full objective.
    assert bool(converged)
    assert float(jnp.min(singles)) >= float(value) * (1 - 1e-5)


def test_lookahead_agrees_with_the_environment_with_every_extension(ext_obs):
    prices = fixed_prices(EXT)
    slots = twin.persistence_slots(ext_obs, 2)
    a = jnp.array([0, 3, 0, 3, 1, 3, 2, 1], jnp.int32)   # odd devices: low batteries
    costs = lookahead.horizon_costs(ext_obs, slots, a, prices, EXT)
    # One slot: the slot cost.
    np.testing.assert_allclose(costs[0], game.slot_costs_fn(ext_obs, prices, EXT)(a), rtol=1e-6)
    # Second slot: the environment's own update of battery (mean harvest), server backlogs and
    # device queues, then its cost.
    out0 = env.evaluate(ext_obs, Decision(a, prices), EXT)
    backlog, device_backlog = env.queues_after(ext_obs.backlog, ext_obs.device_backlog,
                                               ext_obs.task_cycles, ext_obs.cpu_freq, out0, EXT)
    o1 = ext_obs.replace(battery=jnp.clip(ext_obs.battery - out0.energy
                                          + 0.5 * EXT.harvest_max_j, 0.0, 10.0),
                         backlog=backlog, device_backlog=device_backlog)
    np.testing.assert_allclose(costs[1], env.evaluate(o1, Decision(a, prices), EXT).cost,
                               rtol=1e-5)
    assert bool(jnp.any(out0.failed)) and bool(jnp.any(device_backlog > 0))


def test_congested_slot_builds_server_and_device_backlogs():
    """A 5 ms slot: F tau = 5e7 cycles per server and f tau = 5e6-1e7 per device, against
    tasks of about 5e7 cycles: server backlogs build under all-offload, device queues
    (FIFO) under all-local."""
    s = mecjax.Scenario(n_devices=6, n_servers=2, slot_s=0.005, device_queue=True)
    _, state = env.reset(jax.random.key(0), s)
    prices = fixed_prices(s)
    offload = jnp.array([1, 1, 1, 2, 2, 2], jnp.int32)
    for t in range(3):
        _, state, _, _, _ = env.step(jax.random.key(t), state, Decision(offload, prices), s)
    assert float(jnp.min(state.backlog)) > 0 and float(jnp.max(state.device_backlog)) == 0
    for t in range(3, 6):
        before = state
        local = jnp.zeros(6, jnp.int32)
        _, state, _, _, info = env.step(jax.random.key(t), state, Decision(local, prices), s)
        np.testing.assert_allclose(info["latency"],
                                   (before.device_backlog + before.task_cycles) / before.cpu_freq,
                                   rtol=1e-6)
        np.testing.assert_allclose(state.device_backlog,
                                   np.maximum(before.device_backlog + before.task_cycles
                                              - before.cpu_freq * s.slot_s, 0.0), rtol=1e-6)
    assert float(jnp.min(state.device_backlog)) > 0
    # Deadlines are redrawn every slot inside the range.
    assert float(jnp.min(state.task_deadline)) >= s.deadline_min_s
    assert float(jnp.max(state.task_deadline)) <= s.deadline_max_s


def test_features_and_graph_scale_by_each_servers_capacity(ext_obs):
    dev = features.device_features(ext_obs, EXT)
    srv = features.server_features(ext_obs, EXT)
    capacity = np.asarray(per_server(EXT.server_cpu_hz, 3)) * EXT.slot_s
    obs = ext_obs.replace(backlog=jnp.asarray(capacity * np.array([1.0, 2.0, 0.5]), jnp.float32))
    np.testing.assert_allclose(features.server_features(obs, EXT)[:, 0], [1.0, 2.0, 0.5],
                               rtol=1e-6)
    np.testing.assert_allclose(features.device_features(obs, EXT)[0, -3:], [1.0, 2.0, 0.5],
                               rtol=1e-6)
    assert dev.shape == (8, 5 + 3 * 3) and srv.shape == (3, 4)
    g = graph.graph_from_observation(ext_obs, EXT)
    np.testing.assert_allclose(g.nodes[8:, 4], [0.2, 0.1, 1.0], rtol=1e-6)
