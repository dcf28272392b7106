"""Schedulers: registry, jit/vmap rollouts at the paper's sizes, the exact
yardstick, common random numbers across schedulers, confidence intervals and
TS-Hybrid-SB's online bandit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import mecjax
from mecjax import env, rollout
from mecjax.optim import game
from mecjax.schedulers import available, make

PAPER_SCHEDULERS = ("local", "random", "nearest", "greedy", "best_response", "exact", "qio_mec",
                    "pso", "ts_hybrid_sb")


def test_registry_lists_the_paper_schedulers_and_rejects_unknown_names_and_options():
    names = available()
    assert set(PAPER_SCHEDULERS) <= set(names)
    assert names == sorted(names)
    with pytest.raises(ValueError, match=r"unknown scheduler 'no_such'.*qio_mec"):
        make("no_such")
    with pytest.raises(ValueError, match=r"'qio_mec' has no option\(s\) \['bogus'\]"):
        make("qio_mec", bogus=1)
    with pytest.raises(ValueError, match="colour"):
        make("local", colour="red")
    sched = make("qio_mec", iterations=10)
    assert sched.iterations == 10 and sched.population == 30
    assert make("ts_hybrid_sb").iterations == 100 and make("pso").iterations == 100
    hash(sched)   # static under jit


# Smaller search budgets at N = 150 keep compile and run time low; N = 50 runs the defaults.
BUDGET_150 = {"qio_mec": {"iterations": 10}, "pso": {"iterations": 10},
              "ts_hybrid_sb": {"iterations": 10}, "best_response": {"max_rounds": 5}}
CASES = [(name, n) for n in (50, 150) for name in PAPER_SCHEDULERS if name != "exact"]


@pytest.mark.parametrize("name,n", CASES)
def test_every_scheduler_rolls_out_under_jit_and_vmap(name, n):
    s = mecjax.Scenario(n_devices=n, n_servers=3)
    sched = make(name, **(BUDGET_150.get(name, {}) if n == 150 else {}))
    out = rollout.rollout(sched, s, jax.random.key(0), n_instances=2, n_slots=2)
    assert set(out) == set(rollout.METRICS)
    for k, v in out.items():
        assert v.shape == (2, 2), k
        assert np.isfinite(np.asarray(v)).all(), k
    assert (np.asarray(out["invalid_decision"]) == 0).all()
    frac = np.asarray(out["offload_fraction"])
    if name == "local":
        assert (frac == 0).all()
    if name == "nearest":
        assert (frac == 1).all()
    if n == 50 and name in ("qio_mec", "pso", "ts_hybrid_sb"):
        # With their full budgets the searches save cost against all-local. (Not asserted for
        # greedy / best response: selfish choices on last slot's channel can cost more than
        # all-local on the true channel, a price of anarchy plus CSI delay.)
        assert np.asarray(out["utility"]).mean() > 0.02, out["utility"]


@pytest.mark.parametrize("n", [50, 150])
def test_exact_refuses_large_instances_clearly(n):
    s = mecjax.Scenario(n_devices=n, n_servers=3)
    with pytest.raises(ValueError, match=rf"exact: .*4\^{n}.*exceeds the limit.*N <= 11"):
        rollout.rollout(make("exact"), s, jax.random.key(0), n_instances=2, n_slots=2)


def test_exact_is_never_worse_than_the_heuristics_on_the_same_observation():
    s = mecjax.Scenario(n_devices=6, n_servers=3)
    out = rollout.rollout(make("exact"), s, jax.random.key(1), n_instances=2, n_slots=2)
    assert all(np.isfinite(np.asarray(v)).all() for v in out.values())
    assert (np.asarray(out["invalid_decision"]) == 0).all()

    names = ("exact", "local", "nearest", "greedy", "qio_mec")
    scheds = {nm: make(nm) for nm in names}
    acts = {nm: jax.jit(lambda k, o, sc=sc: sc.act(k, sc.init(k, s), o, s)[0]) for nm, sc in scheds.items()}
    keys = jax.random.split(jax.random.key(2), 6)
    obs_b = jax.jit(jax.vmap(lambda k: env.reset(k, s)[0]))(keys)
    strictly_better = 0
    for b in range(6):
        obs = jax.tree.map(lambda x: x[b], obs_b)
        cost = {nm: float(env.evaluate(obs, acts[nm](keys[b], obs), s).cost.mean()) for nm in names}
        for nm in names[1:]:
            assert cost["exact"] <= cost[nm] * (1 + 1e-6), (b, cost)
        strictly_better += cost["exact"] < min(cost["local"], cost["nearest"]) * (1 - 1e-3)
    assert strictly_better >= 4


def _rollout_keys(key, b, n_instances):
    return jax.random.split(jax.random.split(key, n_instances)[b], 4)


def test_rollout_is_deterministic_and_schedulers_face_the_same_instances():
    s = mecjax.Scenario(n_devices=12, n_servers=3)
    key, B = jax.random.key(3), 3
    run = lambda name: {k: np.asarray(v) for k, v in  # noqa: E731
                        rollout.rollout(make(name), s, key, n_instances=B, n_slots=2).items()}
    local = run("local")
    rand_a, greedy, rand_b = run("random"), run("greedy"), run("random")
    local_again = run("local")
    for k in rollout.METRICS:
        np.testing.assert_array_equal(rand_a[k], rand_b[k])
        np.testing.assert_array_equal(local[k], local_again[k])
    other = {k: np.asarray(v) for k, v in
             rollout.rollout(make("random"), s, jax.random.key(4), n_instances=B, n_slots=2).items()}
    assert not np.array_equal(other["mean_cost"], rand_a["mean_cost"])

    prices = jnp.full((3,), s.price_init)
    zeros = jnp.zeros((12,), jnp.int32)
    for b in range(B):
        k_reset, _, k_env, _ = _rollout_keys(key, b, B)
        obs, state = env.reset(k_reset, s)
        all_local = float(env.evaluate(state, env.Decision(zeros, prices), s).cost.mean())
        assert local["mean_cost"][b, 0] == pytest.approx(all_local, rel=1e-6)
        assert local["latency_ms"][b, 0] == pytest.approx(
            1e3 * float(jnp.mean(state.task_cycles / state.cpu_freq)), rel=1e-6)
        # Slot 1 follows from the rollout's environment key.
        _, state1, *_ = env.step(jax.random.fold_in(k_env, 0), state, env.Decision(zeros, prices), s)
        local1 = float(env.evaluate(state1, env.Decision(zeros, prices), s).cost.mean())
        assert local["mean_cost"][b, 1] == pytest.approx(local1, rel=1e-6)
        # Greedy faced the same instance: its utility is relative to that instance's local cost.
        assert greedy["utility"][b, 0] == pytest.approx(1 - greedy["mean_cost"][b, 0] / all_local,
                                                        abs=1e-5)
        # ... and its slot-0 cost is the greedy decision on the true channel of that instance.
        g = game.greedy(obs, prices, s)
        assert greedy["mean_cost"][b, 0] == pytest.approx(
            float(env.evaluate(state, env.Decision(g, prices), s).cost.mean()), rel=1e-5)


def test_rollout_rejects_bad_sizes(small):
    with pytest.raises(ValueError, match="n_instances"):
        rollout.rollout(make("local"), small, jax.random.key(0), n_instances=0, n_slots=2)
    with pytest.raises(ValueError, match="n_slots"):
        rollout.rollout(make("local"), small, jax.random.key(0), n_instances=1, n_slots=0)


# --------------------------------------------------------------------------
# Confidence intervals.
# --------------------------------------------------------------------------

KNOWN_BAD_DOF = {3}   # see test_t_quantile_at_three_degrees_of_freedom


def test_t_quantile_matches_scipy():
    for dof in range(1, 201):
        if dof in KNOWN_BAD_DOF:
            continue
        assert abs(rollout.t_quantile_975(dof) - stats.t.ppf(0.975, dof)) < 1e-3, dof
    assert rollout.t_quantile_975(0) == np.inf


def test_t_quantile_at_three_degrees_of_freedom():
    assert abs(rollout.t_quantile_975(3) - stats.t.ppf(0.975, 3)) < 1e-3


@pytest.mark.parametrize("n", [2, 10, 30])
def test_mean_ci_matches_scipy_t_interval(n):
    x = np.random.default_rng(n).normal(3.0, 2.0, n)
    ci = rollout.mean_ci(x)
    lo, hi = stats.t.interval(0.95, n - 1, loc=x.mean(), scale=stats.sem(x))
    assert ci["mean"] == pytest.approx(x.mean(), rel=1e-12)
    assert ci["n"] == n
    assert ci["low"] == pytest.approx(lo, rel=1e-3, abs=1e-3)
    assert ci["high"] == pytest.approx(hi, rel=1e-3, abs=1e-3)
    assert ci["ci95"] == pytest.approx((hi - lo) / 2, rel=5e-4)
    single = rollout.mean_ci(x[:1])
    assert single["mean"] == x[0] and single["ci95"] == np.inf


def test_summarize_averages_slots_then_gives_a_ci_over_instances():
    per_slot = {"latency_ms": jnp.asarray([[1.0, 3.0], [2.0, 4.0], [6.0, 6.0], [0.0, 2.0], [5.0, 1.0]])}
    res = rollout.summarize(per_slot)["latency_ms"]
    per_instance = np.array([2.0, 3.0, 6.0, 1.0, 3.0])
    assert res["mean"] == pytest.approx(per_instance.mean())
    lo, hi = stats.t.interval(0.95, 4, loc=per_instance.mean(), scale=stats.sem(per_instance))
    assert res["ci95"] == pytest.approx((hi - lo) / 2, rel=5e-4)
    assert res["low"] == pytest.approx(res["mean"] - res["ci95"])
    assert res["high"] == pytest.approx(res["mean"] + res["ci95"])


# --------------------------------------------------------------------------
# TS-Hybrid-SB's online bandit.
# --------------------------------------------------------------------------

def test_ts_hybrid_sb_bandit_learns_online():
    s = mecjax.Scenario(n_devices=10, n_servers=3)
    sched = make("ts_hybrid_sb", iterations=20)
    slots, levels = 30, sched.n_levels
    act = jax.jit(lambda k, st, o: sched.act(k, st, o, s))
    observe = jax.jit(lambda st, tr: sched.observe(st, tr, s))
    step = jax.jit(lambda k, st, d: env.step(k, st, d, s))
    grid = np.asarray(mecjax.optim.pricing.price_levels(s, levels))
    key = jax.random.key(5)
    obs, state = env.reset(key, s)
    st = sched.init(key, s)
    posted = []
    for t in range(slots):
        dec, st = act(jax.random.fold_in(key, t), st, obs)
        prices = np.asarray(dec.prices)
        np.testing.assert_array_equal(prices, grid[np.asarray(st.arms)])
        posted.append(np.asarray(st.arms))
        nxt, state, reward, _, info = step(jax.random.fold_in(key, 1000 + t), state, dec)
        assert not bool(info["invalid_decision"])
        st = observe(st, mecjax.schedulers.Transition(obs, dec, reward, nxt, info))
        obs = nxt
    posted = np.stack(posted)
    counts = np.asarray(st.bandit.counts)
    np.testing.assert_array_equal(counts.sum(-1), np.full(3, slots))
    assert float(st.bandit.t) == slots
    for j in range(3):
        assert sorted(posted[:levels, j]) == list(range(levels))        # each level once first
        np.testing.assert_array_equal(np.bincount(posted[:, j], minlength=levels), counts[j])
    means = np.asarray(st.bandit.means)
    assert np.isfinite(means).all() and (np.abs(means) <= 1 + 1e-6).all()   # normalised rewards
    assert (np.asarray(st.scale) > 1e-6).all()
    # The bandit exploits: after exploring, some level per server is played more than once.
    assert (counts.max(-1) > 1).all()
