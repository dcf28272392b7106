"""GAT-MEC: the graph attention network (eqs. 11-12), its learner and scheduler."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mecjax
import mecjax.schedulers.gat_mec  # noqa: F401  (registers the scheduler and its learner)
from mecjax.checkpoint import CheckpointMismatchError
from mecjax.env import env as E
from mecjax.env.env import observe as observe_state
from mecjax.env.graph import batch_graphs, graph_from_observation
from mecjax.learners.base import get_learner
from mecjax.learners.gat_mec import (GATMECLearner, apply_q, device_embeddings, fixed_prices,
                                     observation_features, option_deltas)
from mecjax.nets.gat import GAT, GATMECNet, padding_masks
from mecjax.optim.allocation import allocate
from mecjax.env.types import Decision
from mecjax.stats import summarize
from mecjax.schedulers import make
from mecjax.learners.base import train_chunk
from mecjax.learners.store import TrainedPolicy, load_run
from mecjax.schedulers.learned import in_memory
from train.run import train

from conftest import quick_rollout

TINY = mecjax.Scenario(n_devices=6, n_servers=2, horizon=20)
K = 100  # updates per chunk: every training call below shares one compiled chunk
LEARNER = GATMECLearner()


# Jitted once: eager op-by-op dispatch would dominate the test time.
_reset = jax.jit(E.reset)
_graph = jax.jit(graph_from_observation)
_apply_q = jax.jit(apply_q)
_init_policy = jax.jit(LEARNER.init_policy)
_GAT = GAT(hidden=(8,), heads=3, out_features=5, out_heads=2)
_gat_apply = jax.jit(_GAT.apply, static_argnames=("return_attention",))


def _obs(scenario, seed=0):
    return _reset(jax.random.key(seed), scenario)


def _gat_and_params(graph, seed=0):
    return _gat_apply, jax.jit(_GAT.init)(jax.random.key(seed), graph)


# --------------------------------------------------------------------------- the GAT


def test_attention_over_each_nodes_incoming_edges_sums_to_one():
    # The sizes of the equivariance test below: its reset and graph programs.
    obs, _ = _obs(mecjax.Scenario(n_devices=10, n_servers=3))
    g = _graph(obs, mecjax.Scenario(n_devices=10, n_servers=3))
    apply, p = _gat_and_params(g)
    _, attention = apply(p, g, return_attention=True)
    v = g.nodes.shape[0]
    receivers = jnp.concatenate([g.receivers, jnp.arange(v, dtype=jnp.int32)])  # + self-loops
    assert len(attention) == 2
    for alpha, heads in zip(attention, (3, 2)):
        assert alpha.shape == (g.senders.shape[0] + v, heads)
        a = np.asarray(alpha)
        assert np.all(a >= 0) and np.all(np.isfinite(a))
        sums = np.asarray(jax.ops.segment_sum(alpha, receivers, num_segments=v))
        np.testing.assert_allclose(sums, 1.0, rtol=1e-5)
        # not uniform: the weights depend on the features (eq. 11)
        assert np.std(a[:g.senders.shape[0]]) > 1e-4


def _permute_devices(obs, perm):
    fields = ("positions", "task_bits", "task_cycles", "cpu_freq", "tx_power", "gain_observed",
              "battery")
    return obs.replace(**{f: getattr(obs, f)[perm] for f in fields})


def test_gat_and_policy_are_equivariant_to_the_order_of_devices():
    s = mecjax.Scenario(n_devices=10, n_servers=3)
    obs, _ = _obs(s, 3)
    perm = np.random.default_rng(0).permutation(s.n_devices)
    g, gp = _graph(obs, s), _graph(_permute_devices(obs, perm), s)
    assert not np.allclose(np.asarray(g.nodes[:10]), np.asarray(gp.nodes[:10]))  # really permuted
    apply, p = _gat_and_params(g)
    out, out_p = np.asarray(apply(p, g)), np.asarray(apply(p, gp))
    np.testing.assert_allclose(out_p[:10], out[:10][perm], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out_p[10:], out[10:], rtol=1e-4, atol=1e-5)     # servers unchanged
    # the whole scorer (GAT + per-device head) too
    net_params = _init_policy(jax.random.key(1), s)
    q = np.asarray(_apply_q(net_params, obs, s))
    q_p = np.asarray(_apply_q(net_params, _permute_devices(obs, perm), s))
    np.testing.assert_allclose(q_p, q[perm], rtol=1e-4, atol=1e-5)


def test_gat_on_a_batch_of_graphs_matches_per_graph_results():
    s = mecjax.Scenario(n_devices=7, n_servers=2)
    keys = jax.random.split(jax.random.key(5), 3)
    obs, _ = jax.vmap(_reset, (0, None))(keys, s)
    graphs = jax.vmap(_graph, (0, None))(obs, s)
    apply, p = _gat_and_params(jax.tree.map(lambda x: x[0], graphs))
    batched = np.asarray(apply(p, jax.jit(batch_graphs)(graphs))).reshape(3, 9, -1)
    for i in range(3):
        single = np.asarray(apply(p, jax.tree.map(lambda x, i=i: x[i], graphs)))
        np.testing.assert_allclose(batched[i], single, rtol=1e-5, atol=1e-6)
    assert not np.allclose(batched[0], batched[1])


def test_padding_nodes_and_edges_are_masked_by_the_counts():
    s = mecjax.Scenario(n_devices=6, n_servers=2)
    obs, _ = _obs(s, 2)
    g = _graph(obs, s)
    apply, p = _gat_and_params(g)
    clean = np.asarray(apply(p, g))
    v, e = g.nodes.shape[0], g.senders.shape[0]
    # padded graph (jraph.pad_with_graphs layout: one padding graph last), with garbage
    # padding edges that point INTO real nodes: only the masks keep them out.
    n_pad_nodes, n_pad_edges = 3, 5
    rng = np.random.default_rng(0)
    padded = g._replace(
        nodes=jnp.concatenate([g.nodes, jnp.asarray(rng.normal(size=(n_pad_nodes, 7)) * 10, jnp.float32)]),
        edges=jnp.concatenate([g.edges, jnp.asarray(rng.normal(size=(n_pad_edges, 2)) * 10, jnp.float32)]),
        senders=jnp.concatenate([g.senders, jnp.array([v, v + 1, 0, v + 2, 1], jnp.int32)]),
        receivers=jnp.concatenate([g.receivers, jnp.array([0, 1, 2, v, 3], jnp.int32)]),
        globals=jnp.concatenate([g.globals, jnp.zeros_like(g.globals)]),
        n_node=jnp.array([v, n_pad_nodes], jnp.int32),
        n_edge=jnp.array([e, n_pad_edges], jnp.int32))
    node_mask, edge_mask = padding_masks(padded, n_padding_graphs=1)
    assert int(node_mask.sum()) == v and int(edge_mask.sum()) == e
    out, attention = apply(p, padded, node_mask, edge_mask, return_attention=True)
    np.testing.assert_allclose(np.asarray(out[:v]), clean, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(out[v:]), 0.0)
    for alpha in attention:  # padding edges and padding self-loops get weight exactly 0
        assert np.all(np.asarray(alpha[e:e + n_pad_edges]) == 0.0)
        assert np.all(np.asarray(alpha[e + n_pad_edges + v:]) == 0.0)
    # without the masks the garbage edges do change real nodes (the test can fail)
    assert not np.allclose(np.asarray(apply(p, padded)[:v]), clean, atol=1e-3)


def test_network_sizes_are_recovered_from_the_parameters():
    net = GATMECNet(n_servers=3, gat_hidden=(5,), heads=3, embed=7, embed_heads=2,
                    head_hidden=(11, 6, 9))
    s = mecjax.Scenario(n_devices=4, n_servers=3)
    obs, _ = _obs(s)
    g, dev = jax.jit(observation_features)(obs, s)
    params = jax.jit(net.init)(jax.random.key(0), g, dev)["params"]
    assert GATMECNet.from_params(params) == net
    # the encoder alone, from the parameters: one embedding per device (eqs. 11-12)
    emb = np.asarray(jax.jit(device_embeddings, static_argnums=2)(params, obs, s))
    full = jax.jit(GAT((5,), 3, 7, 2).apply)({"params": params["gat"]}, g)
    np.testing.assert_allclose(emb, np.asarray(full)[:4], rtol=1e-4, atol=1e-6)
    assert emb.shape == (4, 7) and not np.allclose(emb[0], emb[1])


# --------------------------------------------------------------------------- targets


@jax.jit
def _total(state, obs, offload, s):
    dec = allocate(obs, offload, fixed_prices(s), s)
    return jnp.sum(E.evaluate(state, dec, s).cost)


def _total_cost(state, obs, offload, s):
    return float(_total(state, obs, jnp.asarray(offload, jnp.int32), s))


@pytest.mark.parametrize("offload", [[0, 1, 1, 2, 2, 1, 0], [2, 2, 2, 2, 2, 2, 2],
                                     [1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]])
def test_option_deltas_are_the_exact_change_of_the_total_cost(offload):
    """delta_i(o) = G(a with i -> o) - G(a with i -> local), G the slot's total cost
    (eq. 13) on the true channel, checked by brute force against the environment,
    including servers left empty and joined alone."""
    s = mecjax.Scenario(n_devices=7, n_servers=2)
    obs, state = _obs(s, 4)
    dec = allocate(obs, jnp.asarray(offload, jnp.int32), fixed_prices(s), s)
    out = E.evaluate(state, dec, s)
    delta = np.asarray(jax.jit(option_deltas)(state, obs, dec, out.offload, out.rate, s))
    assert delta.shape == (7, 3)
    a = np.asarray(offload)
    for i in range(7):
        base = _total_cost(state, obs, np.where(np.arange(7) == i, 0, a), s)
        assert delta[i, 0] == 0.0
        for o in (1, 2):
            moved = _total_cost(state, obs, np.where(np.arange(7) == i, o, a), s)
            np.testing.assert_allclose(delta[i, o], moved - base, rtol=2e-4, atol=1e-6,
                                       err_msg=f"device {i} -> {o}")
    assert np.ptp(delta[:, 1:]) > 1e-3


def test_option_deltas_without_a_local_alternative_use_the_forced_server():
    s = mecjax.Scenario(n_devices=6, n_servers=2)
    obs, state = _obs(s, 4)
    flat = state.replace(battery=state.battery.at[2].set(0.0))
    fobs = observe_state(flat)
    dec = allocate(fobs, jnp.array([1, 1, 0, 2, 2, 2], jnp.int32), fixed_prices(s), s)
    out = E.evaluate(flat, dec, s)
    best = int(np.argmax(np.asarray(fobs.gain_observed[2]))) + 1
    assert int(out.offload[2]) == best  # the environment forces device 2 to offload
    delta = np.asarray(jax.jit(option_deltas)(flat, fobs, dec, out.offload, out.rate, s))
    assert delta[2, 0] == delta[2, best] and delta[2, 0] != 0.0
    assert delta[0, 0] == 0.0


def test_learner_hyper_parameters_are_checked_and_json_friendly():
    with pytest.raises(ValueError, match="epsilon"):
        GATMECLearner(epsilon=1.5)
    with pytest.raises(ValueError, match="n_envs"):
        GATMECLearner(n_envs=0)
    with pytest.raises(ValueError, match="polyak_rate"):
        GATMECLearner(polyak_rate=0.0)
    hyper = get_learner("gat_mec").hyper()
    assert hyper["learning_rate"] == 1e-3 and hyper["epsilon"] == 0.1  # Table 1
    assert all(isinstance(v, (int, float, str, tuple)) for v in hyper.values())
    # JSON gives lists back: the learner is rebuilt equal (and hashable)
    as_json = {k: list(v) if isinstance(v, tuple) else v for k, v in hyper.items()}
    assert get_learner("gat_mec", **as_json) == get_learner("gat_mec") and hash(LEARNER)
    assert GATMECLearner.scheduler_name == "gat_mec"


# --------------------------------------------------------------------------- training


# The initial train state of seed 0, the state the trained run below starts from. Eager, as
# train() runs it: the operations it compiles are compiled once for both.
_init_state = LEARNER.init


def test_update_is_deterministic_and_keeps_a_typed_key():
    ts = _init_state(jax.random.key(0), TINY)
    assert jnp.issubdtype(ts.key.dtype, jax.dtypes.prng_key)
    a, ma = train_chunk(LEARNER, ts, TINY, K)
    b, mb = train_chunk(LEARNER, ts, TINY, K)
    _assert_states_equal(a, b)
    for k in ma:
        np.testing.assert_array_equal(np.asarray(ma[k]), np.asarray(mb[k]))
    assert {"mean_cost", "loss", "offload_fraction"} <= set(ma)
    assert ma["mean_cost"].shape == (K,) and np.all(np.isfinite(np.asarray(ma["mean_cost"])))
    assert int(a.step) == K
    # a different state gives a different result (the comparison can fail)
    c, _ = train_chunk(LEARNER, a, TINY, K)
    assert not np.array_equal(np.asarray(c.params["head_out"]["kernel"]),
                              np.asarray(a.params["head_out"]["kernel"]))


def _leaves(state):
    out = []
    for path, x in jax.tree_util.tree_flatten_with_path(state)[0]:
        if jnp.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        out.append((jax.tree_util.keystr(path), np.asarray(x)))
    return out


def _assert_states_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (path, x), (_, y) in zip(_leaves(a), _leaves(b)):
        np.testing.assert_array_equal(x, y, err_msg=path)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("gat_mec_run")
    state = train(LEARNER, TINY, run_dir, total_updates=3 * K, chunk=K, seed=0, log=lambda m: None)
    return run_dir, state


def test_training_lowers_the_cost_against_the_untrained_policy(trained_run):
    run_dir, _ = trained_run
    key = jax.random.key(1234)
    # The run's own untrained policy (seed 0's initial state) against its trained one, both
    # in memory: one compiled rollout, two sets of weights (the initial ones placed on the
    # device as a checkpoint's are: jit compiles per placement of its arguments).
    initial = jax.device_put(LEARNER.policy(_init_state(jax.random.key(0), TINY)),
                             jax.devices()[0])
    in_memory_initial = make("gat_mec", trained=TrainedPolicy("gat_mec", "", TINY, initial))
    untrained = summarize(quick_rollout(in_memory_initial, TINY, key, 32, 20))
    trained = summarize(quick_rollout(in_memory(make("gat_mec", checkpoint=str(run_dir))), TINY,
                                      key, 32, 20))
    before, after = untrained["mean_cost"]["mean"], trained["mean_cost"]["mean"]
    # measured: 0.44 (training seeds 0, 1, 2: 0.44, 0.39, 0.44; about 0.5 against
    # untrained policies drawn per instance)
    assert after < 0.7 * before, (before, after)
    assert trained["invalid_decision"]["mean"] == 0.0


def test_the_scheduler_executes_the_trained_parameters(trained_run):
    run_dir, state = trained_run
    _, _, restored, config = load_run(run_dir)
    assert config["method"] == "gat_mec"
    _assert_states_equal(restored, state)
    loaded = make("gat_mec", checkpoint=str(run_dir)).init(jax.random.key(0), TINY)
    _assert_states_equal(loaded, state.policy_params)


def test_an_interrupted_and_resumed_run_ends_bit_identical(tmp_path):
    a, b = tmp_path / "interrupted", tmp_path / "straight"
    first = train(LEARNER, TINY, a, total_updates=2 * K, chunk=K, stop_after=1, log=lambda m: None)
    assert int(first.step) == K
    resumed = train(LEARNER, TINY, a, total_updates=2 * K, chunk=K, resume=True, log=lambda m: None)
    straight = train(LEARNER, TINY, b, total_updates=2 * K, chunk=K, log=lambda m: None)
    assert int(resumed.step) == 2 * K
    _assert_states_equal(resumed, straight)
    assert (a / "metrics.csv").read_text() == (b / "metrics.csv").read_text()


def test_a_checkpoint_for_another_n_is_refused(trained_run):
    run_dir, _ = trained_run
    other = mecjax.Scenario(n_devices=8, n_servers=2, horizon=20)
    with pytest.raises(CheckpointMismatchError, match="n_devices=6"):
        make("gat_mec", checkpoint=str(run_dir)).init(jax.random.key(0), other)


# --------------------------------------------------------------------------- execution


def _decision(obs, dec, params):
    """Probe of the rollout: each slot's decision itself."""
    return {"offload": dec.offload, "prices": dec.prices, "cpu_share": dec.cpu_share,
            "bandwidth_share": dec.bandwidth_share}


def test_untrained_scheduler_runs_under_jit_and_vmap_at_n50_with_valid_decisions():
    s = mecjax.Scenario(n_devices=50)
    sched = make("gat_mec")
    # One program: the rollout of 4 instances (jit of vmap) returning every slot's
    # decision with its metrics (the probe), so each decision is checked directly below.
    per_slot = quick_rollout(sched, s, jax.random.key(0), 4, 5, probe=_decision)
    assert per_slot["mean_cost"].shape == (4, 5)
    assert np.all(np.asarray(per_slot["invalid_decision"]) == 0.0)
    assert np.all(np.isfinite(np.asarray(per_slot["mean_cost"])))
    fields = np.asarray(per_slot["offload"]), np.asarray(per_slot["prices"]), \
        np.asarray(per_slot["cpu_share"]), np.asarray(per_slot["bandwidth_share"])
    for off, prices, cpu, bw in zip(*(f.reshape((20,) + f.shape[2:]) for f in fields)):
        # actions in 0..M, prices in range, eq. 14 shares
        E.check_decision(Decision(off, prices, bandwidth_share=bw, cpu_share=cpu), s)
        assert off.shape == (50,) and off.min() >= 0 and off.max() <= s.n_servers
        used = np.bincount(off, minlength=s.n_servers + 1)[1:] > 0
        for share in (cpu, bw):
            per_server = np.bincount(off, weights=share, minlength=s.n_servers + 1)[1:]
            assert np.all(per_server <= 1 + 1e-5)
            np.testing.assert_allclose(per_server[used], 1.0, rtol=1e-5)
