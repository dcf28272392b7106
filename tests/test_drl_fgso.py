"""DRL-FGSO: DQN per device, FedAvg (eq. 7), Stackelberg pricing (eqs. 8-9)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mecjax
import mecjax.schedulers.drl_fgso  # noqa: F401  (registers scheduler and learner)
from mecjax.checkpoint import CheckpointMismatchError
from mecjax.env import env
from mecjax.env.features import device_feature_dim, device_features
from mecjax.learners import drl_fgso as L
from mecjax.learners import fedavg
from mecjax.learners.base import get_learner
from mecjax.nets import qnet
from mecjax.learners.store import TrainedPolicy
from mecjax.schedulers import Transition, make
from mecjax.schedulers.learned import in_memory
from mecjax.stats import summarize
from train.run import train

from conftest import QUICK_COMPILE, quick_rollout

TINY = mecjax.Scenario(n_devices=6, n_servers=2, horizon=20)
HYPER = {"n_envs": 8, "buffer_size": 256}
TOTAL, CHUNK = 400, 200
ROLLOUT_KEY = jax.random.key(7)


def leaves(state):
    """Every leaf as a NumPy array (typed keys as their key data)."""
    out = []
    for x in jax.tree.leaves(state):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        out.append(np.asarray(x))
    return out


def assert_same_state(a, b):
    la, lb = leaves(a), leaves(b)
    assert len(la) == len(lb)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(x, y)


def mean_cost(scheduler, scenario, key=ROLLOUT_KEY, n=16, slots=20):
    return summarize(quick_rollout(scheduler, scenario, key, n, slots))["mean_cost"]["mean"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One uninterrupted tiny training run: (run_dir, final train state)."""
    run_dir = tmp_path_factory.mktemp("drl_fgso") / "full"
    learner = get_learner("drl_fgso", **HYPER)
    state = train(learner, TINY, run_dir, total_updates=TOTAL, chunk=CHUNK, seed=3,
                  log=lambda s: None)
    return run_dir, state


@pytest.fixture(scope="module")
def stepper():
    """A learner with FedAvg and target refresh every 2 updates and a buffer of
    two updates, and its jitted update."""
    learner = L.DRLFGSO(n_envs=4, buffer_size=8, fedavg_period=2, target_period=2)
    return learner, jax.jit(learner.update, static_argnums=1, compiler_options=QUICK_COMPILE)


# --------------------------------------------------------------------------
# FedAvg (eq. 7)
# --------------------------------------------------------------------------

def test_fedavg_of_identical_models_is_identity():
    one = qnet.init_params(jax.random.key(0), 8, 3, (16,))
    stacked = fedavg.broadcast(one, 5)
    for w in (jnp.array([1.0, 2.0, 3.0, 4.0, 5.0]), jnp.array([0.1, 0.0, 7.0, 1e-3, 2.0])):
        assert_same_state(fedavg.average(stacked, w), one)
        assert_same_state(fedavg.aggregate(stacked, w), stacked)


def test_fedavg_respects_weights_on_arbitrary_pytrees():
    a = {"w": jnp.array([[1.0, 2.0], [3.0, 4.0]]), "nested": (jnp.array(0.0), {"b": jnp.ones(3)})}
    b = {"w": jnp.array([[5.0, 6.0], [7.0, 8.0]]), "nested": (jnp.array(4.0), {"b": -jnp.ones(3)})}
    stacked = jax.tree.map(lambda x, y: jnp.stack([x, y]), a, b)
    avg = fedavg.average(stacked, jnp.array([1, 3]))            # n_1 = 1, n_2 = 3
    want = jax.tree.map(lambda x, y: 0.25 * x + 0.75 * y, a, b)
    assert jax.tree.structure(avg) == jax.tree.structure(a)
    for got, exp in zip(jax.tree.leaves(avg), jax.tree.leaves(want)):
        np.testing.assert_allclose(got, exp, rtol=1e-6)
    np.testing.assert_allclose(avg["w"], [[4.0, 5.0], [6.0, 7.0]], rtol=1e-6)
    # Broadcast back: every device holds the global model.
    agg = fedavg.aggregate(stacked, jnp.array([1, 3]))
    for got, exp in zip(jax.tree.leaves(agg), jax.tree.leaves(want)):
        np.testing.assert_allclose(got, np.broadcast_to(exp, (2,) + exp.shape), rtol=1e-6)
    # No data anywhere yet: the plain mean.
    np.testing.assert_allclose(fedavg.average(stacked, jnp.zeros(2))["w"], [[3, 4], [5, 6]])


def test_fedavg_refuses_integer_leaves_and_missing_device_axis():
    opt_like = {"mu": jnp.zeros((2, 3)), "count": jnp.zeros((2,), jnp.int32)}
    with pytest.raises(TypeError, match="floating-point leaves only"):
        fedavg.average(opt_like, jnp.ones(2))
    with pytest.raises(ValueError, match="leading device axis"):
        fedavg.average({"w": jnp.zeros((3, 4))}, jnp.ones(2))


# --------------------------------------------------------------------------
# Leader pricing (eqs. 8-9, 15)
# --------------------------------------------------------------------------

def test_leader_update_ascends_utility_within_bounds():
    p = mecjax.as_params(TINY)
    s = L.leader_init(TINY)
    np.testing.assert_array_equal(s.prices, [TINY.price_init] * 2)
    s = L.leader_update(s, jnp.array([1.0, 1.0]), 0.1, TINY)   # first slot: keep going up
    np.testing.assert_allclose(s.prices, [0.6, 0.6], rtol=1e-6)
    s = L.leader_update(s, jnp.array([2.0, 0.5]), 0.1, TINY)   # server 1 gained, server 2 lost
    np.testing.assert_allclose(s.prices, [0.7, 0.5], rtol=1e-6)
    np.testing.assert_array_equal(s.direction, [1.0, -1.0])
    s = L.leader_update(s, jnp.array([1.5, 0.9]), 0.1, TINY)   # server 1 lost, server 2 gained
    np.testing.assert_allclose(s.prices, [0.6, 0.4], rtol=1e-6)
    hi = L.LeaderState(jnp.array([p.price_max - 0.01, p.price_min + 0.01]), jnp.zeros(2),
                       jnp.array([1.0, -1.0]))
    hi = L.leader_update(hi, jnp.array([1.0, 1.0]), 0.5, TINY)
    np.testing.assert_allclose(hi.prices, [TINY.price_max, TINY.price_min])


def test_scheduler_prices_adapt_online_and_decisions_are_valid():
    sched = make("drl_fgso")
    act = jax.jit(sched.act, static_argnums=3)
    observe = jax.jit(sched.observe, static_argnums=2)
    key = jax.random.key(11)
    obs, state = env.reset(key, TINY)
    s = sched.init(key, TINY)
    seen = []
    for t in range(6):
        dec, s = act(jax.random.fold_in(key, t), s, obs, TINY)
        seen.append(np.asarray(dec.prices))
        nobs, state, reward, _, info = env.step(jax.random.fold_in(key, 100 + t), state, dec, TINY)
        assert not bool(info["invalid_decision"])
        s = observe(s, Transition(obs, dec, reward, nobs, info), TINY)
        obs = nobs
    seen = np.stack(seen)
    np.testing.assert_allclose(seen[0], TINY.price_init)
    assert np.all(np.abs(np.diff(seen, axis=0)) > 0.04)          # every slot each server moves
    assert np.all((seen >= TINY.price_min) & (seen <= TINY.price_max))


# --------------------------------------------------------------------------
# State, network, acting
# --------------------------------------------------------------------------

def test_device_state_is_eq1_with_the_posted_prices():
    obs, _ = env.reset(jax.random.key(1), TINY)
    prices = jnp.array([1.5, 0.2])
    learner = L.DRLFGSO()
    f = learner.features(obs, prices, TINY)
    assert f.shape == (6, learner.feature_dim(TINY)) == (6, device_feature_dim(2)) == (6, 11)
    last = device_features(obs, TINY)                                       # last slot's prices
    np.testing.assert_array_equal(f[:, :7], last[:, :7])                     # own + channel
    np.testing.assert_allclose(f[:, 7:9], np.broadcast_to(prices / TINY.price_max, (6, 2)))
    assert not np.allclose(f[:, 7:9], last[:, 7:9])
    np.testing.assert_array_equal(f[:, 9:], last[:, 9:])                     # backlogs


def test_scheduler_acts_greedily_with_the_global_model():
    sched = make("drl_fgso")
    key = jax.random.key(2)
    obs, _ = env.reset(key, TINY)
    s = sched.init(key, TINY)
    q = jax.tree.map(lambda x: x, s.policy.q)
    out = q["params"]["Dense_2"]
    q["params"]["Dense_2"] = {"kernel": jnp.zeros_like(out["kernel"]),
                              "bias": jnp.array([0.0, -1.0, 3.0])}   # server 2 is best
    dec, _ = sched.act(key, s.replace(policy=s.policy.replace(q=q)), obs, TINY)
    np.testing.assert_array_equal(dec.offload, [2] * 6)
    np.testing.assert_allclose(jnp.sum(dec.bandwidth_share), 1.0, rtol=1e-5)


def test_untrained_scheduler_runs_jit_vmap_at_n50_with_valid_decisions():
    sc = mecjax.Scenario(n_devices=50)
    per_slot = quick_rollout(make("drl_fgso"), sc, jax.random.key(5), 4, 5)
    assert per_slot["mean_cost"].shape == (4, 5)
    assert np.all(np.isfinite(np.asarray(per_slot["mean_cost"])))
    assert float(jnp.max(per_slot["invalid_decision"])) == 0.0


# --------------------------------------------------------------------------
# The learner: update, replay, FedAvg, target network
# --------------------------------------------------------------------------

def test_update_is_deterministic(stepper):
    learner, update = stepper
    s0 = learner.init(jax.random.key(4), TINY)
    a, ma = update(s0, TINY)
    b, mb = update(s0, TINY)
    assert_same_state(a, b)
    assert_same_state(ma, mb)
    assert {"mean_cost", "loss"} <= set(ma) and ma["mean_cost"].shape == ()
    # ... and it does change the state (parameters, key, counter).
    assert int(a.step) == 1
    assert not np.array_equal(leaves(a.params)[0], leaves(s0.params)[0])


def test_replay_fedavg_and_target_schedule(stepper):
    learner, update = stepper
    b, n = learner.n_envs, TINY.n_devices
    s0 = learner.init(jax.random.key(4), TINY)
    # Training starts from one global model on every device.
    for x in jax.tree.leaves(s0.params):
        np.testing.assert_array_equal(x, np.broadcast_to(x[0], x.shape))
    s1, _ = update(s0, TINY)
    s2, _ = update(s1, TINY)
    s3, _ = update(s2, TINY)

    def identical_devices(params):
        return all(np.array_equal(x, np.broadcast_to(x[0], x.shape))
                   for x in leaves(params))

    # Update 1: each device trained on its own data, no aggregation yet.
    assert not identical_devices(s1.params)
    assert_same_state(s1.target_params, s0.params)
    # Update 2 (fedavg_period = target_period = 2): FedAvg broadcast, target refreshed.
    assert identical_devices(s2.params)
    assert_same_state(s2.target_params, s2.params)
    np.testing.assert_array_equal(s2.data_count, np.full(n, 2 * b))
    np.testing.assert_array_equal(s3.data_count, np.full(n, 3 * b))
    # One ring buffer per device, 2 updates long: update 3 overwrote the first B slots.
    np.testing.assert_array_equal(s3.buffer.ptr, np.full(n, b))
    np.testing.assert_array_equal(s3.buffer.size, np.full(n, 2 * b))
    feats_of = jax.vmap(device_features, (0, None, 0))
    feats2 = feats_of(s2.obs, TINY, s2.leader.prices)
    data = s3.buffer.data
    # (features recomputed outside the compiled update: equal up to float rounding)
    np.testing.assert_allclose(data.state[:, :b], np.swapaxes(feats2, 0, 1), atol=1e-5)
    feats1 = feats_of(s1.obs, TINY, s1.leader.prices)
    np.testing.assert_allclose(data.state[:, b:], np.swapaxes(feats1, 0, 1), atol=1e-5)
    # s' of the transitions stored at update 2 is the state update 3 acted on
    np.testing.assert_allclose(data.next_state[:, b:], data.state[:, :b], atol=1e-5)
    assert np.all(np.asarray(data.reward) <= 0)
    assert np.all(np.asarray(data.reward) >= -learner.reward_clip)
    # The exported policy is the FedAvg of the device models.
    pol = learner.policy(s2)
    assert_same_state(pol.q, jax.tree.map(lambda x: x[0], s2.params))


def test_auto_reset_when_episode_ends(stepper):
    learner, update = stepper
    s = learner.init(jax.random.key(0), TINY)
    for _ in range(TINY.horizon - 1):
        s, _ = update(s, TINY)
    assert np.all(np.asarray(s.env_state.t) == TINY.horizon - 1)
    assert np.all(np.asarray(s.leader.prices) != TINY.price_init)
    s, _ = update(s, TINY)
    assert np.all(np.asarray(s.env_state.t) == 0)                  # reset after the horizon
    np.testing.assert_array_equal(s.leader.prices, np.full((learner.n_envs, 2), TINY.price_init,
                                                           np.float32))


# --------------------------------------------------------------------------
# Training, checkpoints, resume
# --------------------------------------------------------------------------

def test_training_lowers_cost_against_untrained_self(trained):
    run_dir, _ = trained
    # The run's own untrained policy (seed 3's initial state, the state training started
    # from) against its trained one, both in memory: one compiled rollout, two sets of
    # weights (the initial ones placed on the device as a checkpoint's are: jit compiles
    # per placement of its arguments).
    learner = get_learner("drl_fgso", **HYPER)
    initial = jax.device_put(learner.policy(learner.init(jax.random.key(3), TINY)),
                             jax.devices()[0])
    untrained = mean_cost(make("drl_fgso", trained=TrainedPolicy("drl_fgso", "", TINY, initial)),
                          TINY)
    learned = mean_cost(in_memory(make("drl_fgso", checkpoint=str(run_dir))), TINY)
    local = mean_cost(make("local"), TINY)
    assert learned < 0.75 * untrained, (learned, untrained)
    assert learned < local, (learned, local)


def test_interrupted_and_resumed_run_is_bit_identical(trained, tmp_path):
    _, full = trained
    learner = get_learner("drl_fgso", **HYPER)
    run_dir = tmp_path / "resumed"
    part = train(learner, TINY, run_dir, total_updates=TOTAL, chunk=CHUNK, seed=3,
                 stop_after=1, log=lambda s: None)
    assert int(part.step) == CHUNK
    resumed = train(learner, TINY, run_dir, total_updates=TOTAL, chunk=CHUNK, seed=3,
                    resume=True, log=lambda s: None)
    assert int(resumed.step) == TOTAL
    assert_same_state(resumed, full)


def test_checkpoint_for_another_n_is_refused(trained):
    run_dir, _ = trained
    sched = make("drl_fgso", checkpoint=str(run_dir))
    other = mecjax.Scenario(n_devices=7, n_servers=2, horizon=20)
    with pytest.raises(CheckpointMismatchError, match="n_devices=6"):
        sched.init(jax.random.key(0), other)


def test_learner_hyper_round_trips_through_json():
    learner = get_learner("drl_fgso", hidden=[32, 16], n_envs=4, buffer_size=64)
    assert learner.hidden == (32, 16) and hash(learner)
    assert get_learner("drl_fgso", **learner.hyper()) == learner
    with pytest.raises(ValueError, match="must be >= n_envs"):
        get_learner("drl_fgso", n_envs=8, buffer_size=4)
    with pytest.raises(ValueError, match="epsilon"):
        get_learner("drl_fgso", epsilon=1.5)
    with pytest.raises(ValueError, match="hidden"):
        get_learner("drl_fgso", hidden=[64, 0])
