"""DT-MEC look-ahead, the unified scheduler's fusion, and its ablation flags."""

import dataclasses
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
from mecjax.rollout import rollout
from mecjax.schedulers import make
from mecjax.schedulers.base import fixed_prices

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


def test_dt_mec_with_persistence_and_no_horizon_is_best_response(obs):
    sched = make("dt_mec", forecast="persistence", horizon=1, lookahead="selfish")
    st = sched.init(jax.random.key(0), S)
    offload, view, _ = sched.plan(st, obs, S)
    want, _, _ = game.best_response(obs, fixed_prices(S), S, max_rounds=sched.max_rounds)
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


# A slow server and a short slot: one offloaded task is more than F tau, so what a
# device offloads now delays the next slot's tasks on that server, and eq. 22's
# slots are coupled (with tau = 1 s, as in Table 1, nothing carries over at N = 8).
COUPLED = dict(server_cpu_hz=5e8, slot_s=0.1)


def _plan_fn(params, **kw):
    """jitted obs -> [H, N] the DT-MEC plan (persistence forecast) of ``make(**kw)``."""
    sched = make("dt_mec", forecast="persistence", **kw)
    st = sched.init(jax.random.key(0), params)
    return jax.jit(lambda o: sched.lookahead_plan(st, o, params)[0])


def _eq22(obs, params, horizon):
    """jitted plan [H, N] (or held [N]) -> eq. 22 on the persistence forecast of ``obs``."""
    slots = twin.persistence_slots(obs, horizon)
    prices = fixed_prices(params)
    return jax.jit(lambda plan: lookahead.plan_mean_cost(obs, slots, plan, prices, params))


def test_dt_mec_cooperative_plan_beats_myopic_and_selfish_when_slots_are_coupled():
    s = S.replace(**COUPLED)
    myopic = _plan_fn(s, horizon=1, lookahead="selfish")    # the one-slot best response
    myopic_coop = _plan_fn(s, horizon=1)
    selfish = _plan_fn(s, horizon=3, lookahead="selfish", max_rounds=20)
    coop = _plan_fn(s, horizon=3)
    prices = fixed_prices(s)
    strictly, replans = 0, 0
    for seed in range(4):
        o, _ = env.reset(jax.random.key(seed), s)
        value = _eq22(o, s, 3)
        a1, a1c, a3, plan = myopic(o)[0], myopic_coop(o)[0], selfish(o), coop(o)
        # The selfish plan holds one option: a Nash equilibrium of the horizon game.
        np.testing.assert_array_equal(a3, jnp.broadcast_to(a3[0], a3.shape))
        per_device = lookahead.horizon_costs_fn(o, twin.persistence_slots(o, 3), prices, s)
        for i in range(8):
            own = game.own_costs(o, a3[0], i, prices, s, costs_fn=per_device)
            assert float(own[a3[0, i]]) <= float(jnp.min(own)) * (1 + 1e-5) + 1e-9
        v = float(value(plan))
        others = [float(value(a1)), float(value(a1c)), float(value(a3[0]))]
        assert v <= min(others) * (1 + 1e-6), (seed, v, others)
        strictly += v < min(others) * (1 - 1e-3)
        replans += bool(np.any(np.asarray(plan[1:] != plan[0])))
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
    changed = jnp.stack([plan.at[k, i].set(c) for k, i, c in moves])
    values = np.asarray(jax.jit(jax.vmap(value))(changed))
    # No single (slot, device) change lowers eq. 22 (beyond float noise; the descent
    # moves on relative drops of 1e-7).
    assert values.min() >= v * (1 - 1e-6), moves[int(values.argmin())]
    assert values.max() > v * (1 + 1e-3)   # the check is not vacuous: moves do cost


S3 = mecjax.Scenario(n_devices=3, n_servers=3, horizon=10)


def _exhaustive_gaps(params, seeds):
    """Relative gaps to the optimum over all 4^6 plans (N = 3, H = 2, M = 3), one per
    seed: the cooperative plan's, its start's (the better of the held myopic decision
    and all-local), and whether the optimum is not a held plan."""
    plans = jnp.array(np.indices((4,) * 6).reshape(6, -1).T.reshape(-1, 2, 3), jnp.int32)
    coop = _plan_fn(params, horizon=2, max_sweeps=50)
    myopic = _plan_fn(params, horizon=1, lookahead="selfish")
    gaps, start_gaps, non_held = [], [], []
    for seed in seeds:
        o, _ = env.reset(jax.random.key(seed), params)
        value = _eq22(o, params, 2)
        values = jax.jit(jax.vmap(value))(plans)
        best = int(jnp.argmin(values))
        opt, got = float(values[best]), float(value(coop(o)))
        start = min(float(value(myopic(o)[0])), float(value(jnp.zeros(3, jnp.int32))))
        assert got >= opt * (1 - 1e-6)     # the exhaustive optimum is a lower bound
        gaps.append((got - opt) / opt)
        start_gaps.append((start - opt) / opt)
        non_held.append(bool(np.any(np.asarray(plans[best, 0] != plans[best, 1]))))
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
    st = sched.init(jax.random.key(0), S)
    d, st2 = sched.act(jax.random.key(1), st, obs, S)
    env.check_decision(d, S)
    assert not all(np.array_equal(a, b) for a, b in
                   zip(jax.tree.leaves(st.carry), jax.tree.leaves(st2.carry)))
    out = rollout(sched, S, jax.random.key(2), 2, 3)
    assert all(np.isfinite(np.asarray(v)).all() for v in out.values())
    assert float(np.max(out["invalid_decision"])) == 0.0


# ------------------------------------------------------------------ unified: fusion and ablations

def save_run(learner, scenario, directory, updates, seed=0):
    """A run directory as ``mecjax train`` writes it, after ``updates`` updates."""
    state = learner.init(jax.random.key(seed), scenario)
    state, _ = train_chunk(learner, state, scenario, updates)
    ckpt.save(Path(directory) / "ckpt", updates, state,
              run_config(learner, scenario, seed, updates))
    return state


@pytest.fixture(scope="module")
def twin_dir(tmp_path_factory):
    """A briefly trained twin for S: an untrained twin is exactly persistence,
    which would hide what use_dt changes."""
    d = tmp_path_factory.mktemp("unified") / "twin"
    save_run(get_learner("twin", lstm_hidden=8, n_envs=2, window=8), S, d, 30)
    return d


def small_unified(**flags):
    return make("unified", population=8, iterations=6, **flags)


@pytest.fixture(scope="module")
def full(twin_dir):
    # Untrained DRL, GAT and MARL modules, a trained twin.
    sched = small_unified(twin_checkpoint=str(twin_dir))
    st = sched.init(jax.random.key(0), S)
    return sched, st


# One compiled program per variant (a scheduler is a pytree whose flags are static): an
# eager pipeline would compile each of its hundreds of operations on its own.
_pipeline = jax.jit(lambda sched, key, st, obs: sched.pipeline(key, st, obs, S))


def _pipe(sched, st, obs):
    return _pipeline(sched, jax.random.key(7), st, obs)


def test_fused_decision_never_worse_than_best_candidate_under_the_twin(full, obs):
    sched, st = full
    for k in range(3):
        o, _ = env.reset(jax.random.key(10 + k), S)
        pl = _pipe(sched, st, o)
        assert pl.candidates.shape == (len(sched.candidate_names()), 8)
        assert float(pl.fused_score) <= float(jnp.min(pl.candidate_scores)) + 1e-7
        again = fusion.fusion_score(pl.view, pl.fused, pl.prices, S)
        np.testing.assert_allclose(again, pl.fused_score, rtol=1e-5)
        np.testing.assert_allclose(pl.candidate_scores,
                                   fusion.batch_fusion_score(pl.view, pl.candidates, pl.prices, S),
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


def _ablate(full, obs, **flag):
    """(full pipeline, ablated scheduler, its pipeline) on the same observation and key."""
    sched, st = full
    abl = dataclasses.replace(sched, **flag)
    return _pipe(sched, st, obs), abl, _pipe(abl, abl.init(jax.random.key(0), S), obs)


def _rows(sched, pl):
    return dict(zip(sched.candidate_names(), np.asarray(pl.candidates)))


def test_no_dt_acts_on_the_last_observation_only(full, obs):
    sched, st = full
    pl = _pipe(sched, st, obs)
    assert float(jnp.max(jnp.abs(jnp.log(pl.view.gain_observed / obs.gain_observed)))) > 0.1
    abl = dataclasses.replace(sched, use_dt=False)
    pa = _pipe(abl, abl.init(jax.random.key(0), S), obs)
    np.testing.assert_array_equal(pa.view.gain_observed, obs.gain_observed)
    assert pa.carry is None
    # Every other module is the same function, now applied to the observation.
    offload, prices = marl_learner.greedy_actions(st.marl, obs, S)
    np.testing.assert_array_equal(pa.prices, prices)
    rows = _rows(abl, pa)
    np.testing.assert_array_equal(rows["marl"], offload)
    np.testing.assert_array_equal(rows["gat"], gat_learner.greedy_actions(st.gat, obs, S))
    np.testing.assert_array_equal(rows["drl"], drl_gat.greedy_offload(st.drl, obs, prices, S))


def test_no_gat_feeds_raw_features_to_drl_and_drops_the_gat_candidate(full, obs):
    sched, st = full
    pl, abl, pa = _ablate(full, obs, use_gat=False)
    assert "gat" in sched.candidate_names() and "gat" not in abl.candidate_names()
    np.testing.assert_array_equal(pa.view.gain_observed, pl.view.gain_observed)
    np.testing.assert_array_equal(pa.prices, pl.prices)
    full_rows, rows = _rows(sched, pl), _rows(abl, pa)
    for name in ("marl", "local"):
        np.testing.assert_array_equal(rows[name], full_rows[name])
    # With GAT the DRL agents see GAT embeddings; without, DRL-FGSO sees the raw state.
    np.testing.assert_array_equal(full_rows["drl"],
                                  drl_gat.greedy_offload(st.drl, pl.view, pl.prices, S))
    raw = abl.init(jax.random.key(0), S).drl
    assert not hasattr(raw, "gat")
    q = qnet.apply_q(raw.q, device_features(pa.view, S, pa.prices))
    np.testing.assert_array_equal(rows["drl"], jnp.argmax(q, -1))


def test_no_marl_fixes_prices_and_drops_the_marl_candidate(full, obs):
    sched, st = full
    pl, abl, pa = _ablate(full, obs, use_marl=False)
    np.testing.assert_array_equal(pa.prices, fixed_prices(S))
    assert not np.allclose(pl.prices, fixed_prices(S))
    assert abl.candidate_names() == ("drl", "gat", "local")
    np.testing.assert_array_equal(pa.view.gain_observed, pl.view.gain_observed)
    rows, full_rows = _rows(abl, pa), _rows(sched, pl)
    np.testing.assert_array_equal(rows["gat"], full_rows["gat"])   # GAT does not see prices
    # The DRL agents respond to the fixed prices instead of the MARL leaders' prices.
    np.testing.assert_array_equal(rows["drl"],
                                  drl_gat.greedy_offload(st.drl, pa.view, fixed_prices(S), S))


def test_no_drl_uses_the_heuristic_candidate(full, obs):
    sched, st = full
    pl, abl, pa = _ablate(full, obs, use_drl=False)
    assert abl.candidate_names()[0] == "nearest" and abl.init(jax.random.key(0), S).drl is None
    np.testing.assert_array_equal(pa.candidates[0], jnp.argmax(pl.view.gain_observed, -1) + 1)
    np.testing.assert_array_equal(pa.candidates[1:], pl.candidates[1:])
    np.testing.assert_array_equal(pa.prices, pl.prices)


def test_no_qio_picks_the_best_candidate(full, obs):
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
    # shipped checkpoints) and its pipeline is checked step by step above.
    for flags in ({"use_dt": False, "use_qio": False}, {"use_drl": False, "use_marl": False,
                                                         "use_gat": False}):
        out = rollout(small_unified(**flags), S, jax.random.key(5), 2, 2)
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

def test_unified_reads_the_checkpoints_its_flags_need_once(full, twin_dir):
    sched, st = full
    assert set(sched.modules) == {"drl", "gat", "marl", "twin"}
    # Only the twin has weights (the other modules are untrained): they are the leaves.
    trained = load_policy_checkpoint(twin_dir)[2]
    for a, b in zip(jax.tree.leaves(sched), jax.tree.leaves(trained)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(st.twin), jax.tree.leaves(trained)):
        np.testing.assert_array_equal(a, b)
    # An ablated module is dropped; one kept by replace is not read again.
    abl = dataclasses.replace(sched, use_dt=False, use_gat=False)
    assert set(abl.modules) == {"drl", "marl"} and jax.tree.leaves(abl) == []
    assert dataclasses.replace(sched, use_qio=False).modules["twin"] is sched.modules["twin"]
    # The twin is checked against the scenario at init, also inside the rollout.
    with pytest.raises(CheckpointMismatchError, match="fading_rho"):
        rollout(sched, S.replace(fading_rho=0.5), jax.random.key(0), 1, 1)


# ------------------------------------------------------------------ DRL agents on GAT embeddings

@pytest.fixture(scope="module")
def gat_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("unified") / "gat"
    save_run(get_learner("gat_mec", n_envs=2), S, d, 2)
    return d


def test_drl_gat_learner_feeds_frozen_gat_embeddings_to_the_dqn(gat_dir, tmp_path):
    learner = get_learner("drl_gat", n_envs=2, buffer_size=64, gat_checkpoint=str(gat_dir))
    gat = load_policy_checkpoint(gat_dir)[2]
    o, _ = env.reset(jax.random.key(0), S)
    emb = gat_learner.device_embeddings(gat, o, S)
    assert learner.feature_dim(S) == device_features(o, S).shape[1] + emb.shape[1]
    feats = learner.bind(gat).features(o, fixed_prices(S), S)
    np.testing.assert_array_equal(feats[:, -emb.shape[1]:], emb)
    np.testing.assert_array_equal(feats[:, :-emb.shape[1]], device_features(o, S, fixed_prices(S)))
    with pytest.raises(TypeError, match="frozen GAT"):
        learner.features(o, fixed_prices(S), S)
    # The GAT is read on the host by init and is data of the train state.
    state = learner.init(jax.random.key(1), S)
    for a, b in zip(jax.tree.leaves(state.gat), jax.tree.leaves(gat)):
        np.testing.assert_array_equal(a, b)
    assert jax.tree.structure(learner.state_shapes(S)) == jax.tree.structure(state)
    state, metrics = train_chunk(learner, state, S, 3)
    assert np.isfinite(np.asarray(metrics["loss"])).all() and int(state.drl.step) == 3
    policy = learner.policy(state)
    # The policy carries the frozen GAT unchanged: executing it needs nothing else.
    for a, b in zip(jax.tree.leaves(policy.gat), jax.tree.leaves(gat)):
        np.testing.assert_array_equal(a, b)
    assert drl_gat.greedy_offload(policy, o, fixed_prices(S), S).shape == (8,)
    # A GAT trained for another N is refused, naming the sizes.
    with pytest.raises(CheckpointMismatchError, match="n_devices=8.*n_devices=9"):
        learner.feature_dim(S.replace(n_devices=9))
    with pytest.raises(CheckpointMismatchError, match="n_devices=8.*n_devices=9"):
        learner.init(jax.random.key(1), S.replace(n_devices=9))
    # A drl_gat run and its exported policy load and run in the unified scheduler.
    run_dir = tmp_path / "drl_gat"
    ckpt.save(run_dir / "ckpt", 3, state, run_config(learner, S, 1, 3))
    export_policy(run_dir, tmp_path / "exported")
    for d in (run_dir, tmp_path / "exported"):
        _, _, loaded, _ = load_policy_checkpoint(d)
        for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(policy)):
            np.testing.assert_array_equal(a, b)
        sched = small_unified(drl_gat_checkpoint=str(d), use_dt=False, use_qio=False)
        st = sched.init(jax.random.key(0), S)
        for a, b in zip(jax.tree.leaves(st.drl), jax.tree.leaves(policy)):
            np.testing.assert_array_equal(a, b)
        out = rollout(sched, S, jax.random.key(5), 2, 2)
        assert float(np.max(out["invalid_decision"])) == 0.0
    with pytest.raises(CheckpointMismatchError, match="method='drl_gat'.*'drl_fgso'"):
        small_unified(drl_checkpoint=str(run_dir), use_gat=False)
