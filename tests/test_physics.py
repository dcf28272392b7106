"""The closed forms on hand-computed cases (docs/model.md)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mecjax
from mecjax import env
from mecjax.env import metrics, physics

S = mecjax.Scenario(n_devices=3, n_servers=2, kappa=1e-27, bandwidth_hz=10e6, noise_w=1e-13,
                    server_cpu_hz=10e9, alpha=1.0, beta=0.5, gamma=0.2)


def hand_state(**over):
    """A 3-device, 2-server state with round numbers."""
    base = dict(
        t=jnp.int32(0),
        positions=jnp.zeros((3, 2)),
        server_positions=jnp.zeros((2, 2)),
        task_bits=jnp.array([1e5, 2e5, 5e5]),
        task_cycles=jnp.array([1e7, 4e7, 9e7]),
        cpu_freq=jnp.array([1e9, 2e9, 1.5e9]),
        tx_power=jnp.array([0.2, 0.1, 0.5]),
        path_gain=jnp.ones((3, 2)) * 1e-11,
        fading_re=jnp.ones((3, 2)),
        fading_im=jnp.zeros((3, 2)),
        gain=jnp.array([[1e-11, 3e-12], [2e-12, 5e-11], [1e-10, 1e-12]]),
        gain_observed=jnp.array([[1e-11, 3e-12], [2e-12, 5e-11], [1e-10, 1e-12]]),
        battery=jnp.full((3,), 10.0),
        backlog=jnp.array([0.0, 5e9]),
        prices=jnp.array([0.5, 0.5]),
        load_phase=jnp.zeros(3),
        burst=jnp.zeros(3),
        task_deadline=jnp.full((3,), 0.1),
        device_backlog=jnp.zeros(3),
    )
    base.update(over)
    return env.EnvState(**{k: jnp.asarray(v, jnp.int32 if k == "t" else jnp.float32)
                           for k, v in base.items()})


def test_local_task_latency_and_energy():
    out = env.evaluate(hand_state(), env.Decision(jnp.zeros(3, jnp.int32), jnp.array([0.5, 0.5])), S)
    c = np.array([1e7, 4e7, 9e7])
    f = np.array([1e9, 2e9, 1.5e9])
    np.testing.assert_allclose(out.latency, c / f, rtol=1e-6)          # 10 ms, 20 ms, 60 ms
    np.testing.assert_allclose(out.energy, 1e-27 * f**2 * c, rtol=1e-6)  # 0.01 J, 0.16 J, 0.2025 J
    np.testing.assert_allclose(out.payment, 0.0)
    np.testing.assert_allclose(out.rate, 0.0)
    np.testing.assert_allclose(out.cost, c / f + 0.5 * 1e-27 * f**2 * c, rtol=1e-6)


def test_offloaded_task_rate_time_energy_and_payment():
    # Device 0 alone on server 1 (no backlog); devices 1 and 2 share server 2 (backlog 5e9 cycles).
    dec = env.Decision(jnp.array([1, 2, 2], jnp.int32), jnp.array([0.4, 1.5]))
    out = env.evaluate(hand_state(), dec, S)
    # Device 0: full 10 MHz, SNR = 0.2 * 1e-11 / 1e-13 = 20.
    r0 = 10e6 * math.log2(1 + 20.0)
    # Devices 1, 2: half of 10 MHz each, SNR 0.1 * 5e-11 / 1e-13 = 50 and 0.5 * 1e-12 / 1e-13 = 5.
    r1 = 5e6 * math.log2(51.0)
    r2 = 5e6 * math.log2(6.0)
    np.testing.assert_allclose(out.rate, [r0, r1, r2], rtol=1e-5)
    wait = 5e9 / 10e9  # backlog ahead on server 2: 0.5 s
    lat = [1e5 / r0 + 1e7 / 10e9,
           2e5 / r1 + wait + 4e7 / 5e9,
           5e5 / r2 + wait + 9e7 / 5e9]
    np.testing.assert_allclose(out.latency, lat, rtol=1e-5)
    np.testing.assert_allclose(out.energy, [0.2 * 1e5 / r0, 0.1 * 2e5 / r1, 0.5 * 5e5 / r2], rtol=1e-5)
    np.testing.assert_allclose(out.payment, [0.4 * 0.01, 1.5 * 0.04, 1.5 * 0.09], rtol=1e-6)
    np.testing.assert_allclose(out.cost, np.array(lat) + 0.5 * np.asarray(out.energy)
                               + 0.2 * np.asarray(out.payment), rtol=1e-6)


def test_explicit_shares_are_used():
    dec = env.Decision(jnp.array([2, 2, 0], jnp.int32), jnp.array([0.5, 0.5]),
                       bandwidth_share=jnp.array([0.25, 0.75, 0.0]),
                       cpu_share=jnp.array([0.6, 0.4, 0.0]))
    out = env.evaluate(hand_state(backlog=jnp.zeros(2)), dec, S)
    r0 = 0.25 * 10e6 * math.log2(1 + 0.2 * 3e-12 / 1e-13)
    r1 = 0.75 * 10e6 * math.log2(1 + 0.1 * 5e-11 / 1e-13)
    np.testing.assert_allclose(out.rate[:2], [r0, r1], rtol=1e-5)
    np.testing.assert_allclose(out.latency[:2], [1e5 / r0 + 1e7 / (0.6 * 10e9),
                                                 2e5 / r1 + 4e7 / (0.4 * 10e9)], rtol=1e-5)


def test_path_gain_matches_3gpp_formula():
    # 128.1 dB at 1 km, 128.1 - 37.6 = 90.5 dB at 100 m, clamped below min distance.
    g = physics.path_gain(jnp.array([1000.0, 100.0, 1.0, 10.0]), 128.1, 37.6, 10.0)
    np.testing.assert_allclose(g, [10**-12.81, 10**-9.05, 10 ** (-(128.1 - 2 * 37.6) / 10),
                                   10 ** (-(128.1 - 2 * 37.6) / 10)], rtol=2e-6)


def test_queue_backlog_carries_over():
    q = physics.queue_wait(jnp.float32(2e10), 1e10)
    assert float(q) == pytest.approx(2.0)
    from mecjax.env import dynamics
    nxt = dynamics.backlog_update(jnp.array([0.0, 3e9]), jnp.array([1.5e10, 1e9]), 1e10, 1.0)
    np.testing.assert_allclose(nxt, [5e9, 0.0], rtol=1e-6)


@jax.jit
def _sqrt_shares_case(c, off, key):
    """Shares of the devices with ``off == 1`` (the others local) on one server of 10 GHz:
    their sum, the total compute time, its closed form, the time under equal shares and the
    best time of 64 random feasible splits. One program for every case (fixed shape [12]),
    instead of one per list length."""
    on = off == 1
    share = physics.sqrt_cycle_cpu_shares(off, c, 1)

    def time_of(s):
        return jnp.sum(jnp.where(on, physics.edge_compute_time(c, jnp.where(on, s, 1.0), 1e10),
                                 0.0), axis=-1)

    g = jax.random.gamma(key, 1.0, (64, c.shape[0])) * on       # Dirichlet(1) over the active
    rnd = g / jnp.sum(g, axis=-1, keepdims=True)
    return (jnp.sum(share), time_of(share), jnp.sum(jnp.where(on, jnp.sqrt(c), 0.0)) ** 2 / 1e10,
            time_of(physics.equal_shares(off, 1)), jnp.min(time_of(rnd)))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(1e6, 1e8), min_size=1, max_size=12))
def test_sqrt_cycle_cpu_shares_total_time_and_optimality(cycles):
    n = len(cycles)
    c = jnp.asarray(cycles + [1e6] * (12 - n), jnp.float32)
    off = (jnp.arange(12) < n).astype(jnp.int32)
    total_share, total, closed_form, equal, best_random = (
        float(x) for x in _sqrt_shares_case(c, off, jax.random.key(n)))
    assert total_share == pytest.approx(1.0, rel=1e-5)
    assert total == pytest.approx(closed_form, rel=1e-4)
    assert total <= equal * (1 + 1e-5)
    # No random feasible allocation beats it.
    assert best_random >= total * (1 - 1e-4)


def test_sqrt_shares_strictly_beat_equal_shares_on_unequal_tasks():
    c = jnp.array([1e6, 1e8, 4e7])
    off = jnp.array([1, 1, 1])
    opt = jnp.sum(physics.edge_compute_time(c, physics.sqrt_cycle_cpu_shares(off, c, 1), 1e10))
    eq = jnp.sum(physics.edge_compute_time(c, physics.equal_shares(off, 1), 1e10))
    assert float(opt) < 0.9 * float(eq)


def test_equal_shares_split_per_server():
    share = physics.equal_shares(jnp.array([0, 1, 1, 2, 1, 0]), 2)
    np.testing.assert_allclose(share, [0, 1 / 3, 1 / 3, 1, 1 / 3, 0], rtol=1e-6)


def test_jain_fairness_extremes():
    assert float(metrics.jain_fairness(jnp.ones(7))) == pytest.approx(1.0)
    assert float(metrics.jain_fairness(jnp.array([5.0, 0, 0, 0]))) == pytest.approx(0.25)
    assert float(metrics.jain_fairness(jnp.array([1.0, 3.0]))) == pytest.approx(16 / 20)


def test_empty_battery_forces_offloading_to_best_observed_server():
    st_ = hand_state(battery=jnp.array([10.0, 0.001, 10.0]))
    out = env.evaluate(st_, env.Decision(jnp.zeros(3, jnp.int32), jnp.array([0.5, 0.5])), S)
    # Device 1 cannot pay 0.16 J for local work: it offloads to its best observed server (2).
    np.testing.assert_array_equal(out.offload, [0, 2, 0])
    assert float(out.rate[1]) > 0


def test_leader_utility_eq15():
    from mecjax.env.metrics import server_accounts
    p = S.params()
    acc = server_accounts(jnp.array([1, 1, 0]), jnp.array([2.0, 1.0]),
                          jnp.array([1e9, 3e9, 5e9]), jnp.array([0.2, 0.4, 9.0]), p)
    e = S.server_kappa * 1e20 * 4e9
    np.testing.assert_allclose(acc["leader_utility"], [2.0 * 4 - S.leader_lambda * e - S.leader_mu * 0.3, 0.0],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(acc["revenue"], [8.0, 0.0], rtol=1e-6)


# --------------------------------------------------------------------------
# Extensions (docs/model.md, "Extensions"): hand-computed cases.
# --------------------------------------------------------------------------

_transition = jax.jit(env.transition, static_argnums=3)


def test_hard_battery_fails_a_task_that_cannot_pay_its_option():
    sh = S.replace(battery_hard=True, failure_cost=0.7)
    state = hand_state(battery=jnp.array([1e-4, 1e-4, 10.0]), backlog=jnp.array([0.0, 2e10]),
                       task_deadline=jnp.array([0.1, 0.1, 10.0]))
    dec = env.Decision(jnp.array([1, 0, 2], jnp.int32), jnp.array([0.4, 1.5]))
    out = env.evaluate(state, dec, sh)
    # Device 0 alone on server 1 needs 0.2 * 1e5 / r0 = 4.6e-4 J > 1e-4 J: it fails.
    # Device 1 cannot pay 0.16 J locally, is forced to its best observed server (2), shares
    # it with device 2 and needs 0.1 * 2e5 / r1 = 7.0e-4 J > 1e-4 J: it fails too.
    r0, r1, r2 = 10e6 * math.log2(21.0), 5e6 * math.log2(51.0), 5e6 * math.log2(6.0)
    np.testing.assert_array_equal(out.offload, [1, 2, 2])
    np.testing.assert_array_equal(out.failed, [True, True, False])
    np.testing.assert_allclose(out.energy, [0.0, 0.0, 0.5 * 5e5 / r2], rtol=1e-5)
    np.testing.assert_allclose(out.payment, [0.0, 0.0, 1.5 * 0.09], rtol=1e-6)
    np.testing.assert_allclose(out.rate, [0.0, 0.0, r2], rtol=1e-5)
    # A failed task costs max(its cost had it run, computing locally) + failure_cost.
    lat = [1e5 / r0 + 1e7 / 10e9, 2e5 / r1 + 2.0 + 4e7 / 5e9, 5e5 / r2 + 2.0 + 9e7 / 5e9]
    np.testing.assert_allclose(out.latency, lat, rtol=1e-5)
    ran0 = lat[0] + 0.5 * 0.2 * 1e5 / r0 + 0.2 * 0.4 * 0.01
    local0 = 1e7 / 1e9 + 0.5 * 1e-27 * 1e18 * 1e7            # 0.015 > ran0
    ran1 = lat[1] + 0.5 * 0.1 * 2e5 / r1 + 0.2 * 1.5 * 0.04   # > local 0.02 + 0.08
    ran2 = lat[2] + 0.5 * 0.5 * 5e5 / r2 + 0.2 * 1.5 * 0.09
    assert local0 > ran0
    np.testing.assert_allclose(out.cost, [local0 + 0.7, ran1 + 0.7, ran2], rtol=1e-5)
    # The step: failed tasks draw nothing and reach no server; the metrics count them.
    noise = env.step_noise(jax.random.key(0), sh)
    _, nxt, _, _, info = _transition(state, dec, noise, sh)
    harvest = np.asarray(noise["harvest"]) * sh.harvest_max_j
    np.testing.assert_allclose(nxt.battery[:2], 1e-4 + harvest[:2], rtol=1e-5)
    np.testing.assert_allclose(nxt.backlog, [0.0, 2e10 + 9e7 - 1e10], rtol=1e-6)
    np.testing.assert_array_equal(info["task_failed"], [True, True, False])
    assert float(info["failed"]) == pytest.approx(2 / 3)
    assert float(info["deadline_miss"]) == pytest.approx(2 / 3)   # device 2 meets its 10 s
    assert float(info["throughput_mbps"]) == pytest.approx(1e-6 * 5e5 / lat[2] / 3, rel=1e-5)
    # The default (soft) battery runs both tasks and clamps the battery at 0.
    soft = env.evaluate(state, dec, S)
    assert not bool(jnp.any(soft.failed)) and float(soft.energy[0]) > 1e-4


def test_device_queue_delays_local_work_first_in_first_out():
    sq = S.replace(device_queue=True, slot_s=0.01)
    state = hand_state(device_backlog=jnp.array([2e7, 0.0, 5e6]))
    dec = env.Decision(jnp.array([1, 0, 0], jnp.int32), jnp.array([0.5, 0.5]))
    out = env.evaluate(state, dec, sq)
    # Local tasks wait for the work queued before them; energy pays only their own cycles.
    np.testing.assert_allclose(out.latency[1:], [4e7 / 2e9, (5e6 + 9e7) / 1.5e9], rtol=1e-6)
    np.testing.assert_allclose(out.energy[1:], [0.16, 0.2025], rtol=1e-5)
    _, nxt, _, _, info = _transition(state, dec, env.step_noise(jax.random.key(0), sq), sq)
    # q' = max(0, q + C [local] - f tau): device 0 offloaded, so it only drains its queue.
    np.testing.assert_allclose(nxt.device_backlog, [2e7 - 1e7, 4e7 - 2e7, 5e6 + 9e7 - 1.5e7],
                               rtol=1e-6)
    # The all-local reference of the utility waits behind the queues too.
    local = metrics.all_local_cost(state.task_cycles, state.cpu_freq, sq.params(),
                                   state.device_backlog)
    np.testing.assert_allclose(local, [0.03 + 0.005, 0.02 + 0.08, 95e6 / 1.5e9 + 0.10125],
                               rtol=1e-5)
    # Off (the default), queued work is ignored and never builds.
    assert float(env.evaluate(state, dec, S).latency[2]) == pytest.approx(9e7 / 1.5e9, rel=1e-6)


def test_per_server_cpu_and_bandwidth():
    sh = S.replace(server_cpu_hz=(10e9, 40e9), bandwidth_hz=(10e6, 20e6))
    dec = env.Decision(jnp.array([1, 2, 2], jnp.int32), jnp.array([0.4, 1.5]))
    out = env.evaluate(hand_state(), dec, sh)
    # Server 2 has 20 MHz (10 MHz each for devices 1 and 2) and 40 GHz (20 GHz each).
    r0, r1, r2 = 10e6 * math.log2(21.0), 10e6 * math.log2(51.0), 10e6 * math.log2(6.0)
    np.testing.assert_allclose(out.rate, [r0, r1, r2], rtol=1e-5)
    wait = 5e9 / 40e9
    np.testing.assert_allclose(out.latency, [1e5 / r0 + 1e7 / 10e9, 2e5 / r1 + wait + 4e7 / 20e9,
                                             5e5 / r2 + wait + 9e7 / 20e9], rtol=1e-5)
    acc = metrics.server_accounts(out.offload, dec.prices, hand_state().task_cycles,
                                  out.latency, sh.params())
    np.testing.assert_allclose(acc["server_energy"], [S.server_kappa * 1e20 * 1e7,
                                                      S.server_kappa * 16e20 * 13e7], rtol=1e-5)
    from mecjax.env import dynamics
    nxt = dynamics.backlog_update(jnp.array([0.0, 3e10]), jnp.array([1.5e10, 1e9]),
                                  sh.params().server_cpu_hz, 1.0)
    np.testing.assert_allclose(nxt, [5e9, 0.0], rtol=1e-6)


def test_fixed_topology_and_a_cloud_reached_through_the_strongest_edge_site():
    sc = mecjax.Scenario(n_devices=3, n_servers=3, server_xy=((100.0, 200.0), (300.0, 400.0),
                                                             (0.0, 500.0)),
                         device_xy=((100.0, 205.0), (300.0, 300.0), (0.0, 0.0)),
                         wan_delay_s=(0.0, 0.0, 0.08), server_cpu_hz=(10e9, 10e9, 100e9),
                         bandwidth_hz=(10e6, 10e6, 40e6))
    _, state = env.reset(jax.random.key(0), sc)
    np.testing.assert_array_equal(state.positions, np.asarray(sc.device_xy, np.float32))
    np.testing.assert_array_equal(state.server_positions, np.asarray(sc.server_xy, np.float32))
    d = np.linalg.norm(np.asarray(sc.device_xy)[:, None] - np.asarray(sc.server_xy)[None, :2], axis=-1)
    d = np.maximum(d, 10.0)   # device 0 is 5 m from its site: the 10 m minimum applies
    edge = 10 ** (-(128.1 + 37.6 * np.log10(d / 1000)) / 10)
    np.testing.assert_allclose(state.path_gain[:, :2], edge, rtol=2e-5)
    np.testing.assert_allclose(state.path_gain[:, 2], edge.max(1), rtol=2e-5)
    # Devices 0 and 1 share the cloud's 40 MHz and 100 GHz; its WAN round trip adds 80 ms.
    st_ = state.replace(gain=jnp.full((3, 3), 1e-11), backlog=jnp.zeros(3),
                        battery=jnp.full((3,), 10.0))
    out = env.evaluate(st_, env.Decision(jnp.array([3, 3, 0], jnp.int32), jnp.full(3, 0.5)), sc)
    p, bits, cycles = (np.asarray(x, np.float64) for x in (st_.tx_power, st_.task_bits,
                                                             st_.task_cycles))
    rate = 20e6 * np.log2(1 + p[:2] * 1e-11 / 1e-13)
    np.testing.assert_allclose(out.latency[:2], bits[:2] / rate + 0.08 + cycles[:2] / 50e9,
                               rtol=1e-5)
    np.testing.assert_allclose(out.energy[:2], p[:2] * bits[:2] / rate, rtol=1e-5)


@pytest.mark.parametrize("m", [3, physics.SELECT_MAX_SERVERS + 2])  # selects, and gathers
def test_per_server_helpers_match_a_loop_over_devices(m):
    rng = np.random.default_rng(m)
    n = 17
    off = rng.integers(0, m + 1, (2, n))
    values = rng.uniform(1.0, 2.0, (2, n)).astype(np.float32)
    table = rng.uniform(1.0, 2.0, (2, m)).astype(np.float32)
    pair = rng.uniform(1.0, 2.0, (2, n, m)).astype(np.float32)
    sums = np.zeros((2, m), np.float32)
    for b in range(2):
        for i in range(n):
            if off[b, i] > 0:
                sums[b, off[b, i] - 1] += values[b, i]
    np.testing.assert_allclose(physics.per_server_sum(jnp.asarray(off), values, m), sums,
                               rtol=1e-6)
    mine = np.where(off > 0, np.take_along_axis(table, np.maximum(off - 1, 0), 1), 0.0)
    np.testing.assert_array_equal(physics.per_device_of_server(jnp.asarray(off), table), mine)
    placeholder = np.where(off > 0, mine, table[:, :1])
    np.testing.assert_array_equal(physics.of_server(jnp.asarray(off), table), placeholder)
    own = np.where(off > 0, np.take_along_axis(pair, np.maximum(off - 1, 0)[..., None], 2)[..., 0],
                   0.0)
    np.testing.assert_array_equal(physics.gain_of_server(jnp.asarray(off), pair), own)
    # one instance without a batch axis, and a scalar per-server constant
    np.testing.assert_allclose(physics.per_server_sum(jnp.asarray(off[0]), values[0], m),
                               sums[0], rtol=1e-6)
    assert physics.of_server(jnp.asarray(off[0]), 2.5) == 2.5
