"""DT-MEC look-ahead, the unified scheduler's fusion, and its ablation flags."""

import dataclasses
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mecjax
from mecjax import checkpoint as ckpt
from mecjax.checkpoint import CheckpointMismatchError
from mecjax.env import env
from mecjax.env.features import device_features
from mecjax.env.types import Decision
from mecjax.learners import drl_gat
from mecjax.learners import gat_mec as gat_learner
from mecjax.learners import tsg_marl as marl_learner
from mecjax.learners import twin
from mecjax.learners.base import get_learner, train_chunk
from mecjax.learners.store import export_policy, load_policy_checkpoint, run_config
from mecjax.nets import qnet
from mecjax.optim import fusion, game, lookahead, qio
from mecjax.optim.allocation import allocate
from mecjax.rollout import METRICS, rollout
from mecjax.schedulers import make
from mecjax.schedulers.base import Transition, fixed_prices
from mecjax.schedulers.learned import in_memory
from eval.plan import method_checkpoints
from train.recipes import SHIPPED_ROOT

from conftest import QUICK_COMPILE, quick_rollout

ROOT = Path(__file__).resolve().parent.parent
S = mecjax.Scenario(n_devices=8, n_servers=3, horizon=10)


@pytest.fixture(scope="module")
def obs():
    o, _ = env.reset(jax.random.key(3), S)
    return o


# ------------------------------------------------------------------ QIO seeded by several candidates

def test_qio_multi_seed_starts_from_best_seed_and_never_gets_worse():
    n, k = 10, 4
    target = jnp.arange(n) % k

    def fit(x):
        return jnp.sum(x != target, -1).astype(jnp.float32)

    seeds = jnp.stack([jnp.zeros(n, jnp.int32), target.at[0].set((target[0] + 1) % k),
                       jnp.full(n, 2, jnp.int32)])
    cfg = qio.QIOConfig(population=9, iterations=3)
    st = qio.init(n, k, cfg, seed_x=seeds, seed_fitness=fit(seeds))
    np.testing.assert_array_equal(st.best_x, seeds[1])
    assert float(st.best_fitness) == 1.0
    np.testing.assert_array_equal(st.personal_x, seeds[jnp.arange(9) % 3])
    with pytest.raises(ValueError, match="seed_x"):
        qio.init(n, k, cfg, seed_x=seeds, seed_fitness=jnp.ones(2))
    x, f = qio.search(jax.random.key(0), fit, n, k, cfg, seed_x=seeds)
    assert float(f) <= 1.0 and float(f) == float(fit(x[None])[0])


# ------------------------------------------------------------------ eq. 22 look-ahead

def test_one_slot_lookahead_is_the_slot_cost(obs):
    slots = twin.persistence_slots(obs, 1)
    a = jnp.array([0, 1, 2, 3, 1, 0, 2, 1], jnp.int32)
    prices = fixed_prices(S)
    got = lookahead.horizon_costs(obs, slots, a, prices, S)
    want = game.slot_costs_fn(obs, prices, S)(a)
    np.testing.assert_allclose(got[0], want, rtol=1e-6)


def test_lookahead_carries_battery_and_backlog_between_slots(obs):
    # A slow server: offloaded work exceeds F tau, so the second slot waits behind a backlog.
    s = S.replace(server_cpu_hz=2e7)
    o = obs.replace(battery=jnp.full(8, 5.0))
    slots = twin.persistence_slots(o, 2)
    prices = fixed_prices(s)
    a = jnp.ones(8, jnp.int32)
    costs = lookahead.horizon_costs(o, slots, a, prices, s)
    out0 = env.evaluate(o, Decision(a, prices), s)
    work = float(jnp.sum(o.task_cycles))
    backlog = max(0.0, work - 2e7)
    o1 = o.replace(battery=jnp.clip(o.battery - out0.energy + 0.5 * s.harvest_max_j, 0, 10),
                   backlog=jnp.array([backlog, 0.0, 0.0], jnp.float32))
    want1 = env.evaluate(o1, Decision(a, prices), s).cost
    np.testing.assert_allclose(costs[1], want1, rtol=1e-5)
    assert float(jnp.mean(costs[1])) > float(jnp.mean(costs[0])) + 1.0   # the backlog costs later
    # The eq. 22 objective is the sum over the horizon of the device-mean cost.
    np.testing.assert_allclose(lookahead.horizon_mean_cost(o, slots, a, prices, s),
                               jnp.mean(costs[0]) + jnp.mean(costs[1]), rtol=1e-6)


# The plans and eq. 22 below are jitted once per scheduler variant and shape, with the
# scenario as EnvParams (its constants traced): the coupled and the fast-server scenarios
# share each program, and every observation is an argument, not a constant of its own program.
@partial(jax.jit, compiler_options=QUICK_COMPILE)
def _plan(sched, o, p):
    """(plan [H, N], view) of DT-MEC ``sched`` on observation ``o``."""
    return sched.lookahead_plan(sched.init(jax.random.key(0), p), o, p)[:2]


def _plan_fn(params, **kw):
    """obs -> [H, N] the DT-MEC plan (persistence forecast) of ``make(**kw)``."""
    sched = make("dt_mec", forecast="persistence", **kw)
    return lambda o: _plan(sched, o, mecjax.as_params(params))[0]


def _eq22_of(obs, plan, params, horizon):
    slots = twin.persistence_slots(obs, horizon)
    return lookahead.plan_mean_cost(obs, slots, plan, fixed_prices(params), params)


_eq22_one = jax.jit(_eq22_of, static_argnums=3, compiler_options=QUICK_COMPILE)
_eq22_many = jax.jit(jax.vmap(_eq22_of, (None, 0, None, None)), static_argnums=3,
                     compiler_options=QUICK_COMPILE)


def _eq22(obs, params, horizon):
    """plan [H, N] (or held [N]) -> eq. 22 on the persistence forecast of ``obs``;
    ``.many``: the same for a batch of plans [B, H, N]."""
    p = mecjax.as_params(params)
    value = lambda plan: _eq22_one(obs, plan, p, horizon)  # noqa: E731
    value.many = lambda plans: _eq22_many(obs, plans, p, horizon)
    return value


@partial(jax.jit, static_argnums=3, compiler_options=QUICK_COMPILE)
def _own_horizon_costs(o, a, p, horizon):
    """[N, M+1] each device's cost summed over the horizon for each of its options,
    the others holding ``a`` (the costs the selfish horizon game is played on)."""
    prices = fixed_prices(p)
    per_device = lookahead.horizon_costs_fn(o, twin.persistence_slots(o, horizon), prices, p)
    return jax.vmap(lambda i: game.own_costs(o, a, i, prices, p, costs_fn=per_device))(
        jnp.arange(a.shape[0]))


def test_dt_mec_with_persistence_and_no_horizon_is_best_response(obs):
    sched = make("dt_mec", forecast="persistence", horizon=1, lookahead="selfish")
    plan, view = _plan(sched, obs, S.params())
    offload = plan[0]
    want, _, _ = jax.jit(game.best_response, static_argnames="max_rounds",
                         compiler_options=QUICK_COMPILE)(
        obs, fixed_prices(S), S.params(), max_rounds=sched.max_rounds)
    np.testing.assert_array_equal(offload, want)
    np.testing.assert_array_equal(view.gain_observed, obs.gain_observed)


def test_plan_costs_use_one_decision_per_slot_and_a_hold_plan_repeats_it(obs):
    s = S.replace(server_cpu_hz=2e7)
    slots = twin.persistence_slots(obs, 3)
    prices = fixed_prices(s)
    a = jnp.array([0, 1, 2, 3, 1, 0, 2, 1], jnp.int32)
    b = jnp.array([1, 0, 0, 2, 3, 3, 0, 1], jnp.int32)
    np.testing.assert_array_equal(lookahead.horizon_costs(obs, slots, a, prices, s),
                                  lookahead.horizon_costs(obs, slots, jnp.stack([a, a, a]),
                                                          prices, s))
    mixed = lookahead.horizon_costs(obs, slots, jnp.stack([a, b, b]), prices, s)
    np.testing.assert_allclose(mixed[0], lookahead.horizon_costs(obs, slots, a, prices, s)[0],
                               rtol=1e-6)
    # Slot 1 plays b on the battery and backlog a left behind in slot 0.
    out0 = env.evaluate(obs, Decision(a, prices), s)
    work = np.zeros(3)
    np.add.at(work, np.asarray(a)[np.asarray(a) > 0] - 1,
              np.asarray(obs.task_cycles)[np.asarray(a) > 0])
    o1 = obs.replace(
        battery=jnp.clip(obs.battery - out0.energy + 0.5 * s.harvest_max_j, 0, 10),
        backlog=jnp.asarray(np.maximum(work - 2e7, 0.0), jnp.float32))
    np.testing.assert_allclose(mixed[1], env.evaluate(o1, Decision(b, prices), s).cost,
                               rtol=1e-5)
    fresh_b = lookahead.horizon_costs(obs, slots, b, prices, s)[0]
    assert not np.allclose(mixed[1], fresh_b)   # a's backlog is still there
    np.testing.assert_allclose(
        lookahead.plan_mean_cost(obs, slots, jnp.stack([a, b, b]), prices, s),
        jnp.sum(jnp.mean(mixed, -1)), rtol=1e-6)


def test_plans_mean_cost_is_plan_mean_cost_of_each_plan(obs):
    # the batched evaluation (its loop's step vmapped) gives each plan's eq. 22 value
    s = S.replace(server_cpu_hz=2e7, battery_capacity_j=0.3)
    slots = twin.persistence_slots(obs, 3)
    prices = fixed_prices(s)
    plans = jax.random.randint(jax.random.key(5), (6, 3, 8), 0, 4)
    plans = plans.at[0].set(0).at[1].set(jnp.broadcast_to(plans[1, 0], (3, 8)))
    many = jax.jit(lookahead.plans_mean_cost, static_argnums=4,
                   compiler_options=QUICK_COMPILE)(obs, slots, plans, prices, s)
    one = jax.jit(lookahead.plan_mean_cost, static_argnums=4, compiler_options=QUICK_COMPILE)
    want = np.array([float(one(obs, slots, plan, prices, s)) for plan in plans])
    np.testing.assert_allclose(np.asarray(many), want, rtol=1e-6)
    assert np.ptp(want) > 1e-3 * np.abs(want).max()     # the plans differ in value


# A slow server and a short slot: one offloaded task is more than F tau, so what a
# device offloads now delays the next slot's tasks on that server, and eq. 22's
# slots are coupled (with tau = 1 s, as in Table 1, nothing carries over at N = 8).
COUPLED = dict(server_cpu_hz=5e8, slot_s=0.1)


def test_dt_mec_cooperative_plan_beats_myopic_and_selfish_when_slots_are_coupled():
    s = S.replace(**COUPLED)
    myopic = _plan_fn(s, horizon=1, lookahead="selfish")    # the one-slot best response
    myopic_coop = _plan_fn(s, horizon=1)
    selfish = _plan_fn(s, horizon=3, lookahead="selfish", max_rounds=20)
    coop = _plan_fn(s, horizon=3)
    strictly, replans = 0, 0
    for seed in range(4):
        o, _ = env.reset(jax.random.key(seed), s)
        value = _eq22(o, s, 3)
        a1, a1c, a3, plan = (np.asarray(x) for x in (myopic(o)[0], myopic_coop(o)[0],
                                                     selfish(o), coop(o)))
        # The selfish plan holds one option: a Nash equilibrium of the horizon game.
        np.testing.assert_array_equal(a3, np.broadcast_to(a3[0], a3.shape))
        own = np.asarray(_own_horizon_costs(o, a3[0], s.params(), 3))
        for i in range(8):
            assert float(own[i, a3[0, i]]) <= float(own[i].min()) * (1 + 1e-5) + 1e-9
        v = float(value(plan))
        others = [float(value(a1)), float(value(a1c)), float(value(a3[0]))]
        assert v <= min(others) * (1 + 1e-6), (seed, v, others)
        strictly += v < min(others) * (1 - 1e-3)
        replans += bool(np.any(plan[1:] != plan[0]))
    # Planning matters: lower than every held plan (offload now, compute locally
    # later) on instances where a held offload's backlog would grow slot after slot.
    assert strictly >= 1 and replans >= 1


@pytest.mark.parametrize("coupled", [False, True])
def test_dt_mec_cooperative_plan_is_a_local_optimum_of_eq_22(obs, coupled):
    s = S.replace(**COUPLED) if coupled else S
    o = env.reset(jax.random.key(0), s)[0] if coupled else obs
    plan = _plan_fn(s, horizon=3)(o)
    value = _eq22(o, s, 3)
    v = float(value(plan))
    n_options = s.n_servers + 1
    moves = [(k, i, c) for k in range(3) for i in range(8) for c in range(n_options)]
    changed = np.repeat(np.asarray(plan)[None], len(moves), 0)
    for j, (k, i, c) in enumerate(moves):
        changed[j, k, i] = c
    values = np.asarray(value.many(changed))
    # No single (slot, device) change lowers eq. 22 (beyond float noise; the descent
    # moves on relative drops of 1e-7).
    assert values.min() >= v * (1 - 1e-6), moves[int(values.argmin())]
    assert values.max() > v * (1 + 1e-3)   # the check is not vacuous: moves do cost


S3 = mecjax.Scenario(n_devices=3, n_servers=3, horizon=10)


def _exhaustive_gaps(params, seeds):
    """Relative gaps to the optimum over all 4^6 plans (N = 3, H = 2, M = 3), one per
    seed: the cooperative plan's, its start's (the better of the held myopic decision
    and all-local), and whether the optimum is not a held plan."""
    plans = np.indices((4,) * 6).reshape(6, -1).T.reshape(-1, 2, 3).astype(np.int32)
    coop = _plan_fn(params, horizon=2, max_sweeps=50)
    myopic = _plan_fn(params, horizon=1, lookahead="selfish")
    gaps, start_gaps, non_held = [], [], []
    for seed in seeds:
        o, _ = env.reset(jax.random.key(seed), params)
        value = _eq22(o, params, 2)
        values = np.asarray(value.many(plans))
        best = int(np.argmin(values))
        opt, got = float(values[best]), float(value(coop(o)))
        start = min(float(value(myopic(o)[0])), float(value(np.zeros(3, np.int32))))
        assert got >= opt * (1 - 1e-6)     # the exhaustive optimum is a lower bound
        gaps.append((got - opt) / opt)
        start_gaps.append((start - opt) / opt)
        non_held.append(bool(np.any(plans[best, 0] != plans[best, 1])))
    return np.array(gaps), np.array(start_gaps), np.array(non_held)


def test_dt_mec_cooperative_plan_is_optimal_on_tiny_coupled_instances():
    # Seeds 7 and 17 have an optimum that is not a held plan, which the held myopic
    # start misses; the descent reached the optimum on all 30 seeds we measured.
    gaps, start_gaps, non_held = _exhaustive_gaps(S3.replace(**COUPLED), (0, 2, 7, 17))
    assert non_held.sum() >= 1 and start_gaps.max() > 1e-3
    assert gaps.max() <= 1e-5, gaps


def test_dt_mec_cooperative_plan_gap_when_servers_are_fast():
    # Table 1's fast servers: nothing carries over, each slot is an assignment problem
    # whose single-change local optima can miss the optimum by a swap of two devices'
    # servers. Measured on seeds 0-29: 14 end above the optimum, by at most 15.5 %
    # (seed 3); with pairwise swaps added to the moves, 1, by 1.3 %. By construction
    # the descent never ends above its start; on seeds 0, 9 and 20 it ends below
    # (start gaps 11.6 %, 28.8 %, 21.1 %; plan gaps 0, 7.9 %, 12.3 %).
    gaps, start_gaps, _ = _exhaustive_gaps(S3, (0, 3, 9, 20))
    assert np.all(gaps <= start_gaps + 1e-6), (gaps, start_gaps)
    assert np.sum(gaps < start_gaps - 1e-3) >= 1, (gaps, start_gaps)
    assert gaps.max() <= 0.16, gaps     # the measured gap, as a regression bound


def test_dt_mec_refuses_an_unknown_lookahead():
    with pytest.raises(ValueError, match="lookahead"):
        make("dt_mec", lookahead="greedy")
    with pytest.raises(ValueError, match="max_sweeps"):
        make("dt_mec", max_sweeps=0)


def test_dt_mec_closed_loop_rollout_is_finite_and_feeds_the_twin(obs):
    sched = make("dt_mec", horizon=2, max_rounds=2)

    # Two slots of the closed loop (act, step, observe, act) as one program: the rollout's
    # loop written out, so each slot's scheduler state can be checked (a rollout returns
    # metrics only; DT-MEC's rollouts are run in test_twin and test_paper_scale).
    @partial(jax.jit, compiler_options=QUICK_COMPILE)
    def two_slots():
        o, state = env.reset(jax.random.key(3), S)
        st = sched.init(jax.random.key(0), S)
        d1, st1 = sched.act(jax.random.key(1), st, o, S)
        o2, state, reward, _, info1 = env.step(jax.random.key(2), state, d1, S)
        st1 = sched.observe(st1, Transition(o, d1, reward, o2, info1), S)
        d2, st2 = sched.act(jax.random.key(4), st1, o2, S)
        _, _, _, _, info2 = env.step(jax.random.key(5), state, d2, S)
        return o, (st, st1, st2), (d1, d2), (info1, info2)

    o, states, decisions, infos = two_slots()
    np.testing.assert_array_equal(jax.tree.leaves(o)[0], jax.tree.leaves(obs)[0])
    for d in decisions:
        env.check_decision(d, S)
    # each act feeds the twin: its carry moves on every slot
    for before, after in zip(states, states[1:]):
        assert not all(np.array_equal(a, b) for a, b in
                       zip(jax.tree.leaves(before.carry), jax.tree.leaves(after.carry)))
    for info in infos:
        assert all(np.isfinite(np.asarray(info[k])).all() for k in METRICS)
        assert float(info["invalid_decision"]) == 0.0


# ------------------------------------------------------------------ unified: fusion and ablations

# The modules run the shipped N = 50 policies (a trained twin among them: an untrained twin
# is exactly persistence, which would hide what use_dt changes). Their weights are data
# read from disk: an untrained module's policy would be computed from its learner's whole
# train state (buffers, training instances), one more compiled program per module.
U = mecjax.Scenario(n_devices=50)      # the scenario they were trained for
SHIPPED = method_checkpoints("unified", 50, str(ROOT / SHIPPED_ROOT))


@pytest.fixture(scope="module")
def uobs():
    return env.reset(jax.random.key(3), U)[0]


def small_unified(**flags):
    return make("unified", population=8, iterations=6, **flags)


@pytest.fixture(scope="module")
def full():
    sched = small_unified(**SHIPPED)
    st = sched.init(jax.random.key(0), U)
    return sched, st


# One compiled program per variant (a scheduler is a pytree whose flags are static): an
# eager pipeline would compile each of its hundreds of operations on its own.
_pipeline = jax.jit(lambda sched, key, st, obs: sched.pipeline(key, st, obs, U),
                    compiler_options=QUICK_COMPILE)


def _pipe(sched, st, obs):
    return _pipeline(sched, jax.random.key(7), st, obs)


# The modules' own functions, each one program, that the pipeline's rows are checked against.
_quick = partial(jax.jit, compiler_options=QUICK_COMPILE)
_marl_greedy = _quick(marl_learner.greedy_actions, static_argnums=2)
_gat_greedy = _quick(gat_learner.greedy_actions, static_argnums=2)
_drl_gat_greedy = _quick(drl_gat.greedy_offload, static_argnums=3)
_fusion_score = _quick(fusion.fusion_score, static_argnums=3)
_batch_fusion_score = _quick(fusion.batch_fusion_score, static_argnums=3)


def test_fused_decision_never_worse_than_best_candidate_under_the_twin(full):
    sched, st = full
    for k in range(3):
        o, _ = env.reset(jax.random.key(10 + k), U)
        pl = _pipe(sched, st, o)
        assert pl.candidates.shape == (len(sched.candidate_names()), 50)
        assert float(pl.fused_score) <= float(jnp.min(pl.candidate_scores)) + 1e-7
        again = _fusion_score(pl.view, pl.fused, pl.prices, U)
        np.testing.assert_allclose(again, pl.fused_score, rtol=1e-5)
        np.testing.assert_allclose(pl.candidate_scores,
                                   _batch_fusion_score(pl.view, pl.candidates, pl.prices, U),
                                   rtol=1e-6)


def test_fusion_score_is_eq_23():
    o, _ = env.reset(jax.random.key(4), S)
    a = jnp.array([0, 1, 0, 2, 3, 0, 1, 1], jnp.int32)
    prices = fixed_prices(S)
    t = fusion.fusion_terms(o, a, prices, S)
    w = (2.0, 3.0, 0.5, 0.25)
    want = w[0] * t["latency_s"] + w[1] * t["energy_j"] - w[2] * t["fairness"] - w[3] * t["utility"]
    np.testing.assert_allclose(fusion.fusion_score(o, a, prices, S, w), want, rtol=1e-6)
    out = env.evaluate(o, allocate(o, a, prices, S), S)
    np.testing.assert_allclose(t["latency_s"], jnp.mean(out.latency), rtol=1e-5)
    np.testing.assert_allclose(t["energy_j"], jnp.mean(out.energy), rtol=1e-5)


# QIO only refines the candidates (test_no_qio_picks_the_best_candidate): the module
# ablations below are compared with QIO off in both (the full model's pipeline with QIO
# is checked above), so one QIO search is compiled instead of one per variant.
def _ablate(full, obs, **flag):
    """(full pipeline, ablated scheduler, its pipeline, its state) on the same observation
    and key, both without QIO."""
    sched, st = full
    sched = dataclasses.replace(sched, use_qio=False)
    abl = dataclasses.replace(sched, **flag)
    abl_st = abl.init(jax.random.key(0), U)
    return _pipe(sched, st, obs), abl, _pipe(abl, abl_st, obs), abl_st


def _rows(sched, pl):
    return dict(zip(sched.candidate_names(), np.asarray(pl.candidates)))


def test_no_dt_acts_on_the_last_observation_only(full, uobs):
    obs = uobs
    sched, st = full
    pl, abl, pa, _ = _ablate(full, obs, use_dt=False)
    assert float(jnp.max(jnp.abs(jnp.log(pl.view.gain_observed / obs.gain_observed)))) > 0.1
    np.testing.assert_array_equal(pa.view.gain_observed, obs.gain_observed)
    assert pa.carry is None
    # Every other module is the same function, now applied to the observation.
    offload, prices = _marl_greedy(st.marl, obs, U)
    np.testing.assert_array_equal(pa.prices, prices)
    rows = _rows(abl, pa)
    np.testing.assert_array_equal(rows["marl"], offload)
    np.testing.assert_array_equal(rows["gat"], _gat_greedy(st.gat, obs, U))
    np.testing.assert_array_equal(rows["drl"], _drl_gat_greedy(st.drl, obs, prices, U))


def test_no_gat_feeds_raw_features_to_drl_and_drops_the_gat_candidate(full, uobs):
    sched, st = full
    pl, abl, pa, abl_st = _ablate(full, uobs, use_gat=False)
    assert "gat" in sched.candidate_names() and "gat" not in abl.candidate_names()
    np.testing.assert_array_equal(pa.view.gain_observed, pl.view.gain_observed)
    np.testing.assert_array_equal(pa.prices, pl.prices)
    full_rows, rows = _rows(sched, pl), _rows(abl, pa)
    for name in ("marl", "local"):
        np.testing.assert_array_equal(rows[name], full_rows[name])
    # With GAT the DRL agents see GAT embeddings; without, DRL-FGSO sees the raw state.
    np.testing.assert_array_equal(full_rows["drl"],
                                  _drl_gat_greedy(st.drl, pl.view, pl.prices, U))
    raw = abl_st.drl     # DRL-FGSO's agents (drl_checkpoint)
    assert not hasattr(raw, "gat")
    q = _quick(lambda q, view, prices: qnet.apply_q(q, device_features(view, U, prices)))(
        raw.q, pa.view, pa.prices)
    np.testing.assert_array_equal(rows["drl"], jnp.argmax(q, -1))


def test_no_marl_fixes_prices_and_drops_the_marl_candidate(full, uobs):
    sched, st = full
    pl, abl, pa, _ = _ablate(full, uobs, use_marl=False)
    np.testing.assert_array_equal(pa.prices, fixed_prices(U))
    assert not np.allclose(pl.prices, fixed_prices(U))
    assert abl.candidate_names() == ("drl", "gat", "local")
    np.testing.assert_array_equal(pa.view.gain_observed, pl.view.gain_observed)
    rows, full_rows = _rows(abl, pa), _rows(sched, pl)
    np.testing.assert_array_equal(rows["gat"], full_rows["gat"])   # GAT does not see prices
    # The DRL agents respond to the fixed prices instead of the MARL leaders' prices.
    np.testing.assert_array_equal(rows["drl"],
                                  _drl_gat_greedy(st.drl, pa.view, fixed_prices(U), U))


def test_no_drl_uses_the_heuristic_candidate(full, uobs):
    pl, abl, pa, abl_st = _ablate(full, uobs, use_drl=False)
    assert abl.candidate_names()[0] == "nearest" and abl_st.drl is None
    np.testing.assert_array_equal(pa.candidates[0], jnp.argmax(pl.view.gain_observed, -1) + 1)
    np.testing.assert_array_equal(pa.candidates[1:], pl.candidates[1:])
    np.testing.assert_array_equal(pa.prices, pl.prices)


def test_no_qio_picks_the_best_candidate(full, uobs):
    obs = uobs
    sched, st = full
    pl = _pipe(sched, st, obs)
    abl = dataclasses.replace(sched, use_qio=False)
    pa = _pipe(abl, st, obs)
    np.testing.assert_array_equal(pa.candidates, pl.candidates)
    # Two compiled programs (with and without QIO): the same scores up to float rounding.
    np.testing.assert_allclose(pa.candidate_scores, pl.candidate_scores, rtol=1e-6)
    np.testing.assert_array_equal(pa.fused, pa.candidates[int(jnp.argmin(pa.candidate_scores))])
    assert float(pa.fused_score) == float(jnp.min(pa.candidate_scores))
    assert float(pl.fused_score) <= float(pa.fused_score) * (1 + 1e-6) + 1e-7


def test_unified_rollout_every_variant_is_valid():
    # The ablated variants here; the full model rolls out in test_paper_scale (N = 150, its
    # shipped checkpoints) and its pipeline is checked step by step above. The first with
    # the shipped modules in memory: the very program of the last rollouts of
    # test_drl_gat_learner_feeds_frozen_gat_embeddings_to_the_dqn; the second untrained.
    for flags, options, s in (({"use_dt": False, "use_qio": False}, SHIPPED, U),
                              ({"use_drl": False, "use_marl": False, "use_gat": False}, {}, S)):
        out = quick_rollout(in_memory(small_unified(**flags, **options)), s, jax.random.key(5), 2,
                            2)
        assert all(np.isfinite(np.asarray(v)).all() for v in out.values()), flags
        assert float(np.max(out["invalid_decision"])) == 0.0


def test_unified_refuses_bad_weights():
    with pytest.raises(ValueError, match="weights"):
        make("unified", weights=(1.0, 2.0))


def test_reproduce_plans_table_5_from_the_shipped_checkpoints(tmp_path):
    from eval.plan import ABLATION_VARIANTS, Settings, plan_cells

    todo, missing = plan_cells(Settings(sizes=(50,), ablation_size=100, methods=("unified",)),
                               "results/checkpoints")
    assert missing == []
    keys = [t[0] for t in todo]
    assert ("unified", 50) in keys
    # At N=100, not among the sizes, the full model needs its own cell too.
    assert [k for k in keys if k[0].startswith("unified:")] == \
        [(f"unified:{v}", 100) for v in ABLATION_VARIANTS]
    flags = {t[0][0]: t[5] for t in todo}
    assert flags["unified:Without DT"] == {"use_dt": False}
    options = dict(todo[0][4])
    assert options["twin_checkpoint"].endswith("twin_N50")
    assert options["drl_gat_checkpoint"].endswith("drl_gat_N50")
    assert options["drl_checkpoint"].endswith("drl_fgso_N50")
    # Nothing is planned for a root without checkpoints; the reasons are listed.
    todo, missing = plan_cells(Settings(sizes=(50,), methods=("unified", "dt_mec")), str(tmp_path))
    assert todo == [] and len(missing) == 4 and all("checkpoint" in m for m in missing)


def test_variant_notes_use_paired_differences():
    from eval.plan import Settings
    from eval.report import variant_notes

    def cell(values):
        v = np.asarray(values, float)
        return {"summary": {}, "per_instance": {"latency_ms": v.tolist(), "fairness": v.tolist()}}

    base = [10.0, 20.0, 30.0, 40.0]
    cells = {("dt_mec:DT-MEC (twin, H=3)", 100): cell(base),
             # Shifted by exactly 1 on every instance: a clear paired difference even though
             # the unpaired CIs of the two would overlap widely.
             ("dt_mec:persistence forecast instead of the twin", 100): cell(np.add(base, 1.0)),
             ("dt_mec:no look-ahead (H=1)", 100): cell(np.add(base, [1, -1, 1, -1]))}
    notes = "\n".join(variant_notes(cells, Settings(ablation_size=100), "dt_mec",
                                     ("latency_ms", "fairness"), "DT-MEC"))
    assert "persistence forecast instead of the twin (paired" in notes
    assert "latency_ms full better (-1 ± 0)" in notes and "fairness full worse" in notes
    assert "no look-ahead (H=1) (paired over instances, 95% CI): latency_ms no clear difference" \
        in notes


# ------------------------------------------------------------------ checkpoints read once, as data

def _assert_leaves_equal(a, b):
    assert len(jax.tree.leaves(a)) == len(jax.tree.leaves(b)) > 0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_unified_reads_the_checkpoints_its_flags_need_once(full):
    sched, st = full
    assert set(sched.modules) == {"drl", "gat", "marl", "twin"}
    # Each module holds the weights of its checkpoint, and together they are the leaves;
    # init passes them on.
    option = {"drl": "drl_gat_checkpoint", "gat": "gat_checkpoint", "marl": "marl_checkpoint",
              "twin": "twin_checkpoint"}
    trained = {role: load_policy_checkpoint(SHIPPED[option[role]])[2] for role in option}
    for role in option:
        _assert_leaves_equal(sched.modules[role], trained[role])
        _assert_leaves_equal(getattr(st, role), trained[role])
    _assert_leaves_equal(sched, [trained[role] for role in sorted(sched.modules)])
    # An ablated module is dropped; one kept by replace is not read again (without GAT the
    # DRL agents are DRL-FGSO's, read from drl_checkpoint).
    abl = dataclasses.replace(sched, use_dt=False, use_gat=False)
    assert set(abl.modules) == {"drl", "marl"} and abl.modules["marl"] is sched.modules["marl"]
    _assert_leaves_equal(abl, [load_policy_checkpoint(SHIPPED["drl_checkpoint"])[2],
                               trained["marl"]])
    assert dataclasses.replace(sched, use_qio=False).modules["twin"] is sched.modules["twin"]
    # Untrained modules have no weights: their policies come from the init key.
    assert jax.tree.leaves(small_unified(use_dt=False)) == []
    # The twin is checked against the scenario at init, also inside the rollout.
    with pytest.raises(CheckpointMismatchError, match="fading_rho"):
        rollout(sched, U.replace(fading_rho=0.5), jax.random.key(0), 1, 1)


# ------------------------------------------------------------------ DRL agents on GAT embeddings

def test_drl_gat_learner_feeds_frozen_gat_embeddings_to_the_dqn(tmp_path):
    # The frozen GAT: the shipped GAT-MEC policy (its training is test_gat_mec's).
    gat_dir = SHIPPED["gat_checkpoint"]
    learner = get_learner("drl_gat", n_envs=2, buffer_size=64, gat_checkpoint=gat_dir)
    gat = load_policy_checkpoint(gat_dir)[2]
    o, _ = env.reset(jax.random.key(0), U)

    @_quick   # one program (eagerly, each operation would compile on its own)
    def pieces(gat, o):
        return (gat_learner.device_embeddings(gat, o, U),
                learner.bind(gat).features(o, fixed_prices(U), U),
                device_features(o, U, fixed_prices(U)))

    emb, feats, raw = pieces(gat, o)
    assert learner.feature_dim(U) == raw.shape[1] + emb.shape[1]
    np.testing.assert_array_equal(feats[:, -emb.shape[1]:], emb)
    np.testing.assert_array_equal(feats[:, :-emb.shape[1]], raw)
    with pytest.raises(TypeError, match="frozen GAT"):
        learner.features(o, fixed_prices(U), U)
    # The GAT is read on the host by init and is data of the train state.
    state = learner.init(jax.random.key(1), U)
    for a, b in zip(jax.tree.leaves(state.gat), jax.tree.leaves(gat)):
        np.testing.assert_array_equal(a, b)
    assert jax.tree.structure(learner.state_shapes(U)) == jax.tree.structure(state)
    # QUICK_COMPILE: three updates checked for finiteness, and the state they give is what
    # the export below must carry (the floats' last bits do not matter here).
    state, metrics = _quick(lambda st: train_chunk(learner, st, U, 3))(state)
    assert np.isfinite(np.asarray(metrics["loss"])).all() and int(state.drl.step) == 3
    policy = learner.policy(state)
    # The policy carries the frozen GAT unchanged: executing it needs nothing else.
    for a, b in zip(jax.tree.leaves(policy.gat), jax.tree.leaves(gat)):
        np.testing.assert_array_equal(a, b)
    assert _drl_gat_greedy(policy, o, fixed_prices(U), U).shape == (50,)
    # A GAT trained for another N is refused, naming the sizes.
    with pytest.raises(CheckpointMismatchError, match="n_devices=50.*n_devices=9"):
        learner.feature_dim(U.replace(n_devices=9))
    with pytest.raises(CheckpointMismatchError, match="n_devices=50.*n_devices=9"):
        learner.init(jax.random.key(1), U.replace(n_devices=9))
    # A drl_gat run and its exported policy load and run in the unified scheduler.
    run_dir = tmp_path / "drl_gat"
    ckpt.save(run_dir / "ckpt", 3, state, run_config(learner, U, 1, 3))
    export_policy(run_dir, tmp_path / "exported")
    for d in (run_dir, tmp_path / "exported"):
        _, _, loaded, _ = load_policy_checkpoint(d)
        for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(policy)):
            np.testing.assert_array_equal(a, b)
        sched = small_unified(**{**SHIPPED, "drl_gat_checkpoint": str(d)}, use_dt=False,
                              use_qio=False)
        st = sched.init(jax.random.key(0), U)
        for a, b in zip(jax.tree.leaves(st.drl), jax.tree.leaves(policy)):
            np.testing.assert_array_equal(a, b)
        # In memory (the weights kept, the paths cleared): the schedulers of both
        # directories run in one compiled program, with the weights as data.
        out = quick_rollout(in_memory(sched), U, jax.random.key(5), 2, 2)
        assert float(np.max(out["invalid_decision"])) == 0.0
    with pytest.raises(CheckpointMismatchError, match="method='drl_gat'.*'drl_fgso'"):
        small_unified(drl_checkpoint=str(run_dir), use_gat=False)
