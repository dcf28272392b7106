"""TSG-MARL (paper section 3.2): MADDPG learner, scheduler, checkpoints."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mecjax
from mecjax import checkpoint as ckpt
from mecjax.env import env
from mecjax.env.features import device_features, server_features
from mecjax.learners import tsg_marl as T
from mecjax.learners.base import get_learner
from mecjax.nets import actor_critic as ac
from mecjax.schedulers import make
from mecjax.schedulers import tsg_marl as _sched  # noqa: F401  (registers "tsg_marl")
from mecjax.learners.base import train_chunk
from mecjax.learners.store import TrainedPolicy, load_run
from mecjax.schedulers.learned import in_memory
from train.run import train

from conftest import QUICK_COMPILE, quick_rollout

S = mecjax.Scenario(n_devices=6, n_servers=2, horizon=20)
K = 150  # updates per chunk: every train() call below compiles one chunk length
# Every training program compiled with QUICK_COMPILE (it runs for a second; compiling is
# most of its time): the runs compared with each other all use it.
QUIET = dict(log=lambda *_: None, compiler_options=QUICK_COMPILE)
_quick = partial(jax.jit, compiler_options=QUICK_COMPILE)   # programs this file compiles itself


def _leaves(tree):
    return [np.asarray(jax.random.key_data(x)) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
            else np.asarray(x) for x in jax.tree.leaves(tree)]


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(_leaves(a), _leaves(b)):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def learner():
    return get_learner("tsg_marl")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, learner):
    """One uninterrupted run of 2K updates: (run_dir, final train state)."""
    run = tmp_path_factory.mktemp("tsg_full")
    return run, train(learner, S, run, total_updates=2 * K, chunk=K, **QUIET)


def _mean_cost(scheduler, scenario, n=16, slots=20):
    out = quick_rollout(scheduler, scenario, jax.random.key(11), n, slots)
    assert float(jnp.max(out["invalid_decision"])) == 0.0
    return float(jnp.mean(out["mean_cost"]))


def test_training_lowers_cost_against_untrained_self(full_run, learner):
    run, _ = full_run
    # The run's own untrained policy (seed 0's initial state, the state training started
    # from) against its trained one, both in memory: one compiled rollout, two sets of
    # weights (the initial ones placed on the device as a checkpoint's are: jit compiles
    # per placement of its arguments).
    initial = jax.device_put(learner.policy(learner.init(jax.random.key(0), S)),
                             jax.devices()[0])
    trained = _mean_cost(in_memory(make("tsg_marl", checkpoint=str(run))), S)
    untrained = _mean_cost(make("tsg_marl", trained=TrainedPolicy("tsg_marl", "", S, initial)), S)
    local = _mean_cost(make("local"), S)
    print("tsg_marl trained/untrained/local", trained, untrained, local)
    assert trained < 0.8 * untrained, (trained, untrained)
    assert trained < 1.05 * local, (trained, local)


def test_update_is_deterministic_and_regulariser_starts_at_zero(learner):
    state = learner.init(jax.random.key(3), S)
    chunk = train_chunk.lower(learner, state, S, K).compile(QUICK_COMPILE)   # as train()'s
    a, m_a = chunk(state, S)
    b, m_b = chunk(state, S)
    _assert_trees_equal(a, b)
    _assert_trees_equal(m_a, m_b)
    assert int(a.step) == K and a.buffer.size == min(K * learner.n_envs, learner.buffer_size)
    # The first update's previous actor is the initial actor: L_reg = 0 (up to the
    # rounding of two differently fused evaluations); later updates compare with the
    # actor one update back, which has moved (about 1e-7..1e-5 here).
    for name in ("follower_actor_reg", "leader_actor_reg"):
        assert float(m_a[name][0]) < 1e-12
        assert float(np.median(m_a[name][1:])) > 1e-9
    assert np.all(np.isfinite(np.asarray(m_a["mean_cost"])))


def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, full_run, learner):
    _, full = full_run
    part = train(learner, S, tmp_path, total_updates=2 * K, chunk=K, stop_after=1, **QUIET)
    assert int(part.step) == K
    resumed = train(learner, S, tmp_path, total_updates=2 * K, chunk=K, resume=True, **QUIET)
    assert int(resumed.step) == 2 * K
    _assert_trees_equal(full, resumed)


def test_run_rebuilds_learner_and_refuses_other_sizes(full_run, learner):
    run, state = full_run
    learner2, scenario, state2, _ = load_run(run)
    assert learner2 == learner and scenario == S  # hidden sizes come back as tuples
    _assert_trees_equal(learner.policy(state), learner2.policy(state2))
    sched = make("tsg_marl", checkpoint=str(run))
    with pytest.raises(ckpt.CheckpointMismatchError, match="n_devices=6.*n_devices=7"):
        sched.init(jax.random.key(0), S.replace(n_devices=7))


def test_untrained_scheduler_runs_under_jit_and_vmap_at_n50():
    big = mecjax.Scenario(n_devices=50)
    out = quick_rollout(make("tsg_marl"), big, jax.random.key(1), 4, 5)
    assert out["mean_cost"].shape == (4, 5)
    assert float(jnp.max(out["invalid_decision"])) == 0.0
    assert np.all(np.isfinite(np.asarray(out["mean_cost"])))


def test_decisions_are_valid_and_decentralised():
    sc = mecjax.Scenario(n_devices=50, price_min=0.3, price_max=1.2)
    obs, _ = env.reset(jax.random.key(2), sc)
    learner = get_learner("tsg_marl")
    policy = _quick(learner.init_policy, static_argnums=1)(jax.random.key(4), sc)
    # Large actor weights push the sigmoid to its ends: prices must stay in range.
    policy = {**policy, "leader_actor": jax.tree.map(lambda w: 50.0 * w, policy["leader_actor"])}
    act = _quick(T.greedy_actions, static_argnums=2)
    offload, prices = act(policy, obs, sc)
    assert offload.shape == (50,) and offload.dtype == jnp.int32
    assert int(offload.min()) >= 0 and int(offload.max()) <= sc.n_servers
    assert prices.shape == (3,)
    assert np.all((np.asarray(prices) >= 0.3) & (np.asarray(prices) <= 1.2))
    decision = _quick(T.policy_decision, static_argnums=2)(policy, obs, sc)
    env.check_decision(decision, sc)  # raises if invalid
    # Device 0's own task changes only device 0's input row (decentralised execution).
    obs2 = obs.replace(task_cycles=obs.task_cycles.at[0].set(1e8),
                       task_bits=obs.task_bits.at[0].set(1e6))
    follower = _quick(lambda actor, o: ac.follower_logits(actor, device_features(o, sc)))
    logits = follower(policy["follower_actor"], obs)
    logits2 = follower(policy["follower_actor"], obs2)
    assert not np.allclose(logits[0], logits2[0])
    np.testing.assert_array_equal(np.asarray(logits[1:]), np.asarray(logits2[1:]))


def test_smoothing_regulariser_is_zero_iff_actors_unchanged():
    learner = get_learner("tsg_marl", smooth_lambda=0.5)
    nets = _quick(learner.init_nets, static_argnums=1)(jax.random.key(5), S)
    obs, _ = env.reset(jax.random.key(6), S)
    dev, srv = device_features(obs, S)[None], server_features(obs, S)[None]
    penalty = _quick(T.smoothing_penalty)    # the weight is an argument: one program
    same = jax.tree.map(jnp.array, nets)
    f, lead = penalty(nets, same, dev, srv, learner.smooth_lambda)
    assert float(f) == 0.0 and float(lead) == 0.0
    moved = jax.tree.map(lambda w: w + 0.3, nets)
    f, lead = penalty(moved, nets, dev, srv, learner.smooth_lambda)
    assert float(f) > 0.0 and float(lead) > 0.0
    f2, lead2 = penalty(moved, nets, dev, srv, 2 * learner.smooth_lambda)
    np.testing.assert_allclose([f2, lead2], [2 * f, 2 * lead], rtol=1e-6)


def test_features_and_shared_actors_match_their_definitions(learner):
    default = learner
    obs, _ = env.reset(jax.random.key(8), S)
    dev, srv = device_features(obs, S), server_features(obs, S)
    # The scheduler's parameter-only apply equals the training modules.
    learner = get_learner("tsg_marl", actor_hidden=(16, 8, 4))
    nets = learner.init_nets(jax.random.key(9), S)
    mods = learner._modules(S.n_servers + 1)
    np.testing.assert_allclose(ac.follower_logits(nets["follower_actor"], dev),
                               mods["follower_actor"].apply(nets["follower_actor"], dev), rtol=1e-6)
    np.testing.assert_allclose(ac.leader_fraction(nets["leader_actor"], srv),
                               mods["leader_actor"].apply(nets["leader_actor"], srv), rtol=1e-6)
    assert ac.mlp_shape(nets["follower_actor"]) == ((16, 8, 4), S.n_servers + 1)
    # Others' action fractions exclude the device itself.
    frac, others = T.action_fractions(jnp.array([0, 1, 1, 2, 0, 0]), 3)
    np.testing.assert_allclose(frac, [3 / 6, 2 / 6, 1 / 6])
    np.testing.assert_allclose(others[1], [3 / 5, 1 / 5, 1 / 5])
    # The untrained scheduler policy is the learner's policy(init(key)) (the default
    # learner: its init is the one the training run compiled).
    key = jax.random.key(10)
    _assert_trees_equal(default.init_policy(key, S), default.policy(default.init(key, S)))


def test_one_update_stores_transitions_and_soft_updates_the_targets(learner):
    import optax

    s0 = learner.init(jax.random.key(12), S)
    s1, _ = _quick(learner.update, static_argnums=1)(s0, S)
    b = learner.n_envs
    assert int(s1.buffer.size) == b and int(s1.buffer.ptr) == b
    data = s1.buffer.data
    feats = jax.vmap(device_features, (0, None))
    # s and s' of every instance, full eq. 1 rows (no instance reset after one slot)
    np.testing.assert_allclose(data.dev[:b], feats(s0.obs, S), atol=1e-6)
    np.testing.assert_allclose(data.next_dev[:b], feats(s1.obs, S), atol=1e-6)
    np.testing.assert_allclose(data.next_srv[:b], jax.vmap(server_features, (0, None))(s1.obs, S),
                               atol=1e-6)
    np.testing.assert_array_equal(np.asarray(data.dev[b:]), 0.0)
    # soft target update: target <- rate * online + (1 - rate) * target
    want = optax.incremental_update(s1.params, s0.target_params, learner.target_rate)
    for got, exp in zip(_leaves(s1.target_params), _leaves(want)):
        np.testing.assert_allclose(got, exp, rtol=1e-6, atol=1e-8)
    assert not np.allclose(_leaves(s1.target_params)[0], _leaves(s0.target_params)[0])
    # L_reg compares with the actors before this update
    _assert_trees_equal(s1.prev_params, {a: s0.params[a] for a in T.ACTORS})


def test_hyper_parameters_are_checked():
    with pytest.raises(ValueError, match="target_rate"):
        get_learner("tsg_marl", target_rate=0.0)
    with pytest.raises(ValueError, match="must be >= n_envs"):
        get_learner("tsg_marl", n_envs=8, buffer_size=4)
    with pytest.raises(ValueError, match="actor_hidden"):
        get_learner("tsg_marl", actor_hidden=[])
    assert get_learner("tsg_marl").learning_rate == 1e-3  # Table 1
